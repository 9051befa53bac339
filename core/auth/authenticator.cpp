// Token verification with libjwt: key choice by algorithm, then exp/nbf/iss/aud, channel, peer
// and permission claims.
#include "auth/authenticator.hpp"

#include <jwt.h>

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace switchboard::core::auth {
namespace {

using Clock = std::chrono::system_clock;

struct JwtDeleter {
  void operator()(jwt_t* jwt) const noexcept { jwt_free(jwt); }
};
using JwtPtr = std::unique_ptr<jwt_t, JwtDeleter>;

JwtPtr decode(const std::string& token, const std::string* key) {
  jwt_t* raw = nullptr;
  const auto* key_bytes = key ? reinterpret_cast<const unsigned char*>(key->data()) : nullptr;
  const int key_size = key ? static_cast<int>(key->size()) : 0;
  if (jwt_decode(&raw, token.c_str(), key_bytes, key_size) != 0) return nullptr;
  return JwtPtr(raw);
}

/// The strings of a JSON array such as `["send","respond"]`; nullopt when it is anything else.
/// Claim values are names and UUIDs, so escapes other than \" and \\ are refused.
std::optional<std::vector<std::string>> parse_string_array(std::string_view json) {
  std::vector<std::string> out;
  std::size_t at = 0;
  auto skip_space = [&] {
    while (at < json.size() &&
           (json[at] == ' ' || json[at] == '\n' || json[at] == '\t' || json[at] == '\r')) {
      ++at;
    }
  };
  skip_space();
  if (at >= json.size() || json[at] != '[') return std::nullopt;
  ++at;
  skip_space();
  if (at < json.size() && json[at] == ']') return out;
  for (;;) {
    skip_space();
    if (at >= json.size() || json[at] != '"') return std::nullopt;
    ++at;
    std::string item;
    for (;;) {
      if (at >= json.size()) return std::nullopt;
      const char c = json[at++];
      if (c == '"') break;
      if (c == '\\') {
        if (at >= json.size() || (json[at] != '"' && json[at] != '\\')) return std::nullopt;
        item.push_back(json[at++]);
        continue;
      }
      item.push_back(c);
    }
    out.push_back(std::move(item));
    skip_space();
    if (at >= json.size()) return std::nullopt;
    if (json[at] == ']') return out;
    if (json[at] != ',') return std::nullopt;
    ++at;
  }
}

/// A claim that may be one string or an array of strings (`aud`, `channel`); nullopt if absent
/// or of another type.
std::optional<std::vector<std::string>> string_or_array(jwt_t* jwt, const char* claim) {
  if (const char* text = jwt_get_grant(jwt, claim)) return std::vector<std::string>{text};
  char* json = jwt_get_grants_json(jwt, claim);
  if (json == nullptr) return std::nullopt;
  auto values = parse_string_array(json);
  std::free(json);
  return values;
}

/// The latest NumericDate the relay accepts: the last second a system_clock time point holds
/// (April 2262 with libstdc++'s nanoseconds), so every accepted time converts without overflow.
constexpr std::int64_t kMaxNumericDate =
    std::chrono::duration_cast<std::chrono::seconds>(Clock::duration::max()).count();

/// A time claim (`exp`, `nbf`): absent, a whole number of seconds in [0, kMaxNumericDate], or
/// malformed. Read from the claim's JSON text: libjwt's jwt_get_grant_int reads a string, a
/// fraction or a real such as 1e300 as 0 without telling, which would make `exp` look expired
/// and `nbf` look satisfied.
struct TimeClaim {
  bool present = false;
  bool valid = false;
  std::int64_t seconds = 0;
};

TimeClaim time_claim(jwt_t* jwt, const char* claim) {
  char* json = jwt_get_grants_json(jwt, claim);
  if (json == nullptr) return {};
  const std::string_view text(json);
  TimeClaim result{true, false, 0};
  // An integer is printed as plain digits (jansson refuses to parse one beyond 64 bits); a real
  // has a '.' or an exponent, a string quotes.
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos) {
    const auto [end, error] =
        std::from_chars(text.data(), text.data() + text.size(), result.seconds);
    result.valid = error == std::errc{} && end == text.data() + text.size() &&
                   result.seconds <= kMaxNumericDate;
  }
  std::free(json);
  return result;
}

Decision refuse(Status status, Failure failure, std::string reason) {
  Decision decision;
  decision.status = status;
  decision.failure = failure;
  decision.reason = std::move(reason);
  return decision;
}

Decision unauthenticated(Failure failure, std::string reason) {
  return refuse(Status::unauthenticated, failure, std::move(reason));
}

}  // namespace

struct Authenticator::Keys {
  std::string hs256_secret;
  std::vector<std::string> public_keys;  // PEM text
  std::string issuer;
  std::string audience;
};

std::optional<Permission> permission_from_name(std::string_view name) {
  if (name == "send") return Permission::send;
  if (name == "respond") return Permission::respond;
  if (name == "broadcast") return Permission::broadcast;
  if (name == "presence") return Permission::presence;
  return std::nullopt;
}

const char* permission_name(Permission permission) {
  switch (permission) {
    case Permission::send:
      return "send";
    case Permission::respond:
      return "respond";
    case Permission::broadcast:
      return "broadcast";
    case Permission::presence:
      return "presence";
  }
  return "unknown";
}

const char* failure_name(Failure failure) {
  switch (failure) {
    case Failure::missing_token:
      return "missing_token";
    case Failure::invalid_token:
      return "invalid_token";
    case Failure::expired_token:
      return "expired_token";
    case Failure::wrong_channel:
      return "wrong_channel";
    case Failure::wrong_peer:
      return "wrong_peer";
    case Failure::missing_permission:
      return "missing_permission";
  }
  return "unknown";
}

std::string read_key_file(const std::string& path, bool trim_newline) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot read key file " + path);
  std::ostringstream text;
  text << file.rdbuf();
  std::string content = text.str();
  if (trim_newline && !content.empty() && content.back() == '\n') {
    content.pop_back();
    if (!content.empty() && content.back() == '\r') content.pop_back();
  }
  if (content.empty()) throw std::runtime_error("key file " + path + " is empty");
  return content;
}

bool channel_matches(std::string_view pattern, const Uuid& channel) {
  if (pattern == "*") return true;
  const std::string text = channel.to_string();
  if (!pattern.empty() && pattern.back() == '*') {
    pattern.remove_suffix(1);
    if (pattern.size() > text.size()) return false;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
      const char c = pattern[i];
      const char lower = (c >= 'A' && c <= 'F') ? static_cast<char>(c - 'A' + 'a') : c;
      if (lower != text[i]) return false;
    }
    return true;
  }
  const auto exact = Uuid::parse(pattern);
  return exact && *exact == channel;
}

Decision require(const Grant& grant, Permission permission) {
  if (grant.allows(permission)) {
    Decision decision;
    decision.grant = grant;
    return decision;
  }
  return refuse(Status::permission_denied, Failure::missing_permission,
                std::string("token does not grant \"") + permission_name(permission) + "\"");
}

Authenticator::Authenticator() = default;
Authenticator::~Authenticator() = default;
Authenticator::Authenticator(Authenticator&&) noexcept = default;
Authenticator& Authenticator::operator=(Authenticator&&) noexcept = default;

Authenticator::Authenticator(const AuthConfig& config)
    : mode_(config.mode), keys_(std::make_unique<Keys>()) {
  keys_->hs256_secret = config.hs256_secret;
  if (!config.hs256_secret_file.empty()) {
    keys_->hs256_secret = read_key_file(config.hs256_secret_file, true);
  }
  for (const auto& path : config.public_key_files) {
    auto pem = read_key_file(path, false);
    if (pem.find("-----BEGIN PUBLIC KEY-----") == std::string::npos) {
      throw std::runtime_error("key file " + path + " holds no PEM public key");
    }
    keys_->public_keys.push_back(std::move(pem));
  }
  keys_->issuer = config.issuer;
  keys_->audience = config.audience;
  if (mode_ == Mode::required && keys_->hs256_secret.empty() && keys_->public_keys.empty()) {
    throw std::runtime_error(
        "auth mode \"required\" needs an HS256 secret or at least one public key file");
  }
}

Decision Authenticator::authenticate(std::string_view token_text, const Uuid& channel,
                                     std::optional<Uuid> peer) const {
  if (mode_ == Mode::open) return Decision{};
  if (token_text.empty()) return unauthenticated(Failure::missing_token, "token required");
  const std::string token(token_text);
  const auto header = decode(token, nullptr);
  if (!header) return unauthenticated(Failure::invalid_token, "malformed token");

  JwtPtr jwt;
  // Without a key libjwt reports alg "none"; the header still names the signer's algorithm.
  const char* alg_name = jwt_get_header(header.get(), "alg");
  const auto alg = alg_name ? jwt_str_alg(alg_name) : JWT_ALG_INVAL;
  // The key is chosen by the algorithm so that a public key can never serve as an HMAC secret.
  if (alg == JWT_ALG_HS256) {
    if (keys_->hs256_secret.empty()) {
      return unauthenticated(Failure::invalid_token, "HS256 tokens are not accepted");
    }
    jwt = decode(token, &keys_->hs256_secret);
  } else if (alg == JWT_ALG_RS256 || alg == JWT_ALG_ES256) {
    if (keys_->public_keys.empty()) {
      return unauthenticated(Failure::invalid_token,
                             std::string(jwt_alg_str(alg)) + " tokens are not accepted");
    }
    for (const auto& key : keys_->public_keys) {
      jwt = decode(token, &key);
      if (jwt) break;
    }
  } else {
    return unauthenticated(
        Failure::invalid_token,
        std::string("algorithm ") + (alg_name ? alg_name : "(none)") + " is not accepted");
  }
  if (!jwt || jwt_get_alg(jwt.get()) != alg) {
    return unauthenticated(Failure::invalid_token, "bad token signature");
  }

  const auto now =
      std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
  // Both time claims are checked for form before either for time: a malformed token is never
  // reported as expired.
  const auto exp = time_claim(jwt.get(), "exp");
  if (!exp.present) return unauthenticated(Failure::invalid_token, "token has no exp claim");
  if (!exp.valid) {
    return unauthenticated(Failure::invalid_token,
                           "malformed token: exp is not a whole number of seconds in range");
  }
  const auto nbf = time_claim(jwt.get(), "nbf");
  if (nbf.present && !nbf.valid) {
    return unauthenticated(Failure::invalid_token,
                           "malformed token: nbf is not a whole number of seconds in range");
  }
  if (now >= exp.seconds) return unauthenticated(Failure::expired_token, "token expired");
  if (nbf.present && now < nbf.seconds) {
    return unauthenticated(Failure::invalid_token, "token not valid yet (nbf)");
  }
  if (!keys_->issuer.empty()) {
    const char* iss = jwt_get_grant(jwt.get(), "iss");
    if (iss == nullptr || keys_->issuer != iss) {
      return unauthenticated(Failure::invalid_token, "token issuer not accepted");
    }
  }
  if (!keys_->audience.empty()) {
    const auto aud = string_or_array(jwt.get(), "aud");
    bool found = false;
    if (aud) {
      for (const auto& entry : *aud) found = found || entry == keys_->audience;
    }
    if (!found) return unauthenticated(Failure::invalid_token, "token audience not accepted");
  }

  const auto channels = string_or_array(jwt.get(), "channel");
  if (!channels || channels->empty()) {
    return unauthenticated(Failure::invalid_token, "token has no channel claim");
  }
  bool channel_ok = false;
  for (const auto& pattern : *channels)
    channel_ok = channel_ok || channel_matches(pattern, channel);
  if (!channel_ok) {
    return refuse(Status::permission_denied, Failure::wrong_channel,
                  "token is not valid for channel " + channel.to_string());
  }

  Decision decision;
  if (const char* bound = jwt_get_grant(jwt.get(), "peer")) {
    const auto bound_peer = Uuid::parse(bound);
    if (!bound_peer) return unauthenticated(Failure::invalid_token, "token peer is not a UUID");
    if (peer && *peer != *bound_peer) {
      return refuse(Status::permission_denied, Failure::wrong_peer,
                    "token is bound to peer " + bound_peer->to_string() +
                        (peer->is_nil() ? "; name it as the peer id" : ""));
    }
    decision.grant.peer = *bound_peer;
  }

  decision.grant.permissions = 0;
  if (char* json = jwt_get_grants_json(jwt.get(), "perms")) {
    const auto names = parse_string_array(json);
    std::free(json);
    if (!names) return unauthenticated(Failure::invalid_token, "perms is not a list of names");
    for (const auto& name : *names) {
      // Unknown names are ignored, so tokens minted for a newer relay still work here.
      if (const auto permission = permission_from_name(name)) {
        decision.grant.permissions |= static_cast<std::uint8_t>(*permission);
      }
    }
  }
  decision.grant.expiry = Clock::time_point(std::chrono::seconds(exp.seconds));
  if (const char* sub = jwt_get_grant(jwt.get(), "sub")) decision.grant.subject = sub;
  return decision;
}

Decision Authenticator::authorize(std::string_view token, const Uuid& channel,
                                  std::optional<Uuid> peer, Permission permission) const {
  auto decision = authenticate(token, channel, peer);
  if (!decision.ok()) return decision;
  auto allowed = require(decision.grant, permission);
  if (!allowed.ok()) return allowed;
  return decision;
}

}  // namespace switchboard::core::auth
