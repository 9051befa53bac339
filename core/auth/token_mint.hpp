// Minting signed tokens for users and tests (the `switchboard token` command).
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace switchboard::core::auth {

struct MintOptions {
  std::string algorithm = "HS256";  ///< HS256, RS256 or ES256
  /// The HS256 secret, or the PEM private key for RS256/ES256.
  std::string key;
  std::string channel;  ///< a UUID, "*", or a prefix ending in "*"
  std::string peer;     ///< optional: the peer id the holder must use
  std::vector<std::string> permissions;
  std::chrono::seconds ttl{3600};  ///< exp = now + ttl (tests mint expired tokens with ttl < 0)
  std::string issuer;
  std::string audience;
  std::string subject;
};

/// A compact JWT; throws std::invalid_argument on a bad option or key.
std::string mint_token(const MintOptions& options);

}  // namespace switchboard::core::auth
