// Token minting with libjwt: claims in, compact signed JWT out.
#include "auth/token_mint.hpp"

#include <jwt.h>

#include <cstdlib>
#include <memory>
#include <stdexcept>

#include "auth/authenticator.hpp"
#include "switchboard/wire/uuid.hpp"

namespace switchboard::core::auth {
namespace {

struct JwtDeleter {
  void operator()(jwt_t* jwt) const noexcept { jwt_free(jwt); }
};

void check(int result, const std::string& what) {
  if (result != 0) throw std::invalid_argument("cannot set " + what);
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

std::string mint_token(const MintOptions& options) {
  const auto alg = jwt_str_alg(options.algorithm.c_str());
  if (alg != JWT_ALG_HS256 && alg != JWT_ALG_RS256 && alg != JWT_ALG_ES256) {
    throw std::invalid_argument("algorithm must be HS256, RS256 or ES256");
  }
  if (options.key.empty()) throw std::invalid_argument("a signing key is required");
  if (options.channel.empty()) throw std::invalid_argument("a channel is required");
  if (options.channel != "*" && options.channel.back() != '*' && !Uuid::parse(options.channel)) {
    throw std::invalid_argument("channel must be a UUID, \"*\" or a prefix ending in \"*\"");
  }
  if (!options.peer.empty() && !Uuid::parse(options.peer)) {
    throw std::invalid_argument("peer must be a UUID");
  }

  jwt_t* raw = nullptr;
  if (jwt_new(&raw) != 0) throw std::runtime_error("cannot allocate a token");
  std::unique_ptr<jwt_t, JwtDeleter> jwt(raw);
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  check(jwt_add_grant(jwt.get(), "channel", options.channel.c_str()), "channel");
  if (!options.peer.empty()) check(jwt_add_grant(jwt.get(), "peer", options.peer.c_str()), "peer");
  std::string perms = "{\"perms\":[";
  for (std::size_t i = 0; i < options.permissions.size(); ++i) {
    if (!permission_from_name(options.permissions[i])) {
      throw std::invalid_argument("unknown permission \"" + options.permissions[i] +
                                  "\" (send, respond, broadcast, presence)");
    }
    if (i != 0) perms += ',';
    perms += json_string(options.permissions[i]);
  }
  perms += "]}";
  check(jwt_add_grants_json(jwt.get(), perms.c_str()), "perms");
  check(jwt_add_grant_int(jwt.get(), "iat", now), "iat");
  check(jwt_add_grant_int(jwt.get(), "exp", now + options.ttl.count()), "exp");
  if (!options.issuer.empty())
    check(jwt_add_grant(jwt.get(), "iss", options.issuer.c_str()), "iss");
  if (!options.audience.empty()) {
    check(jwt_add_grant(jwt.get(), "aud", options.audience.c_str()), "aud");
  }
  if (!options.subject.empty()) {
    check(jwt_add_grant(jwt.get(), "sub", options.subject.c_str()), "sub");
  }
  if (jwt_set_alg(jwt.get(), alg, reinterpret_cast<const unsigned char*>(options.key.data()),
                  static_cast<int>(options.key.size())) != 0) {
    throw std::invalid_argument("cannot use this key for " + options.algorithm);
  }
  char* encoded = jwt_encode_str(jwt.get());
  if (encoded == nullptr) {
    throw std::invalid_argument("cannot sign with this key (" + options.algorithm + " needs " +
                                (alg == JWT_ALG_HS256 ? "a secret" : "a PEM private key") + ")");
  }
  std::string token(encoded);
  std::free(encoded);
  return token;
}

}  // namespace switchboard::core::auth
