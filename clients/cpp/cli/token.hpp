// The `switchboard token` subcommand: mints a signed token for a relay that requires one.
#pragma once

#include <string>

namespace switchboard::cli {

struct TokenOptions {
  std::string algorithm = "HS256";
  std::string hs256_secret_file;
  std::string private_key_file;
  std::string channel;
  std::string peer;
  std::string perms;  ///< comma-separated
  std::string ttl = "1h";
  std::string issuer;
  std::string audience;
  std::string subject;
};

/// Empty when `text` is a duration such as 90, 90s, 15m, 2h or 7d, else the reason.
std::string check_duration(const std::string& text);

int run_token(const TokenOptions& options);

}  // namespace switchboard::cli
