// The `switchboard token` subcommand: options to claims, the signed token on stdout.
#include "token.hpp"

#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "auth/authenticator.hpp"
#include "auth/token_mint.hpp"
#include "common.hpp"
#include "io.hpp"

namespace switchboard::cli {
namespace {

std::chrono::seconds parse_duration(const std::string& text) {
  std::size_t used = 0;
  const long long value = std::stoll(text, &used);
  const std::string unit = text.substr(used);
  long long scale = 1;
  if (unit.empty() || unit == "s") {
    scale = 1;
  } else if (unit == "m") {
    scale = 60;
  } else if (unit == "h") {
    scale = 3600;
  } else if (unit == "d") {
    scale = 86400;
  } else {
    throw std::invalid_argument("unknown unit");
  }
  return std::chrono::seconds(value * scale);
}

}  // namespace

std::string check_duration(const std::string& text) {
  try {
    if (text.empty() || text[0] < '0' || text[0] > '9' || parse_duration(text).count() <= 0) {
      return "not a positive duration: '" + text + "' (e.g. 90s, 15m, 2h, 7d)";
    }
  } catch (const std::exception&) {
    return "not a duration: '" + text + "' (e.g. 90s, 15m, 2h, 7d)";
  }
  return {};
}

int run_token(const TokenOptions& options) {
  core::auth::MintOptions mint;
  mint.algorithm = options.algorithm;
  mint.channel = options.channel;
  mint.peer = options.peer;
  mint.issuer = options.issuer;
  mint.audience = options.audience;
  mint.subject = options.subject;
  for (std::size_t at = 0; at <= options.perms.size() && !options.perms.empty();) {
    const auto comma = options.perms.find(',', at);
    const auto end = comma == std::string::npos ? options.perms.size() : comma;
    if (end > at) mint.permissions.push_back(options.perms.substr(at, end - at));
    at = end + 1;
  }
  try {
    mint.ttl = parse_duration(options.ttl);
    if (mint.algorithm == "HS256") {
      if (!options.hs256_secret_file.empty()) {
        mint.key = core::auth::read_key_file(options.hs256_secret_file, true);
      } else if (const char* secret = std::getenv("SWITCHBOARD_AUTH_HS256_SECRET")) {
        mint.key = secret;
      } else {
        throw std::invalid_argument(
            "HS256 needs --hs256-secret-file or SWITCHBOARD_AUTH_HS256_SECRET");
      }
    } else {
      if (options.private_key_file.empty()) {
        throw std::invalid_argument(mint.algorithm + " needs --private-key-file (PEM)");
      }
      mint.key = core::auth::read_key_file(options.private_key_file, false);
    }
    const auto token = core::auth::mint_token(mint);
    return write_line(STDOUT_FILENO, token) ? kExitOk : kExitIoError;
  } catch (const std::exception& e) {
    write_line(STDERR_FILENO, std::string("switchboard token: ") + e.what());
    return kExitUsage;
  }
}

}  // namespace switchboard::cli
