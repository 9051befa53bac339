// Signed-token (JWT) verification shared by both doors: claims to a Grant, or a refusal.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "switchboard/wire/status.hpp"
#include "switchboard/wire/uuid.hpp"

namespace switchboard::core::auth {

/// What a token allows beyond joining its channel; a bit set.
enum class Permission : std::uint8_t {
  send = 1,       ///< open request streams (Send)
  respond = 2,    ///< accept requests (a responder: native HELLO flag, gRPC Respond)
  broadcast = 4,  ///< open broadcasts
  presence = 8,   ///< ListPeers / WatchPeers without joining
};
inline constexpr std::uint8_t kAllPermissions = 0x0F;

/// "send,respond" style names; nullopt for an unknown name.
std::optional<Permission> permission_from_name(std::string_view name);
const char* permission_name(Permission permission);

/// Why a request was refused; one counter per reason.
enum class Failure : std::uint8_t {
  missing_token,
  invalid_token,  ///< malformed, bad signature, unaccepted algorithm, issuer or audience
  expired_token,
  wrong_channel,
  wrong_peer,
  missing_permission,
};
inline constexpr std::size_t kFailureKinds = 6;
const char* failure_name(Failure failure);

/// What a verified token allows.
struct Grant {
  std::uint8_t permissions = kAllPermissions;
  /// When the token stops being valid; max() when the relay runs open.
  std::chrono::system_clock::time_point expiry = std::chrono::system_clock::time_point::max();
  std::string subject;  ///< `sub`, for logs
  /// The `peer` claim: the one identity the holder may use or speak for. Nil when the token
  /// names none, and when the relay runs open.
  Uuid peer;

  bool allows(Permission permission) const noexcept {
    return (permissions & static_cast<std::uint8_t>(permission)) != 0;
  }
  bool expires() const noexcept { return expiry != std::chrono::system_clock::time_point::max(); }
};

/// The outcome of a check: `status` is OK, UNAUTHENTICATED or PERMISSION_DENIED.
struct Decision {
  Status status = Status::ok;
  Failure failure = Failure::missing_token;  ///< meaningful when status is not OK
  std::string reason;
  Grant grant;
  bool ok() const noexcept { return status == Status::ok; }
};

enum class Mode : std::uint8_t { open, required };

/// The relay's auth settings (start-up configuration).
struct AuthConfig {
  Mode mode = Mode::open;
  /// HS256 shared secret from a file (one trailing newline is ignored) ...
  std::string hs256_secret_file;
  /// ... or given directly (e.g. from the environment). Never logged.
  std::string hs256_secret;
  /// PEM public keys (RSA for RS256, EC P-256 for ES256); a token may match any of them.
  std::vector<std::string> public_key_files;
  /// When set, the token's `iss` must equal it / its `aud` must contain it.
  std::string issuer;
  std::string audience;
};

/// Reads a secret or key file; throws std::runtime_error when it cannot be read or is empty.
/// With `trim_newline`, one trailing "\n" or "\r\n" is dropped (files written by `echo`).
std::string read_key_file(const std::string& path, bool trim_newline);

/// Verifies tokens against the configured keys. Immutable after construction, so one instance is
/// shared by every thread of both doors.
class Authenticator {
public:
  /// An open relay: every check succeeds with every permission.
  Authenticator();
  /// Loads the keys; throws std::runtime_error on an unreadable key or a required mode without
  /// any key.
  explicit Authenticator(const AuthConfig& config);
  ~Authenticator();
  Authenticator(Authenticator&&) noexcept;
  Authenticator& operator=(Authenticator&&) noexcept;

  bool required() const noexcept { return mode_ == Mode::required; }

  /// Verifies `token` for `channel`. `peer`: the identity the caller speaks for (nil: an
  /// anonymous gRPC sender; nullopt: no identity involved, as for presence calls). A token bound
  /// to a peer (`peer` claim) is refused for any other identity.
  Decision authenticate(std::string_view token, const Uuid& channel,
                        std::optional<Uuid> peer) const;
  /// `authenticate`, then `permission` required.
  Decision authorize(std::string_view token, const Uuid& channel, std::optional<Uuid> peer,
                     Permission permission) const;

private:
  struct Keys;
  Mode mode_ = Mode::open;
  std::unique_ptr<Keys> keys_;
};

/// A refusal for a missing permission on an otherwise valid grant, or OK.
Decision require(const Grant& grant, Permission permission);

/// Whether `pattern` (a channel claim: a UUID, "*", or a prefix ending in "*") covers `channel`.
bool channel_matches(std::string_view pattern, const Uuid& channel);

}  // namespace switchboard::core::auth
