// Status codes shared by both front doors and both directions of every stream.
#pragma once

#include <cstdint>
#include <string_view>

namespace switchboard {

/// The outcome of a stream, a handshake or a connection. The numeric values are part of the wire
/// protocol (docs/PROTOCOL.md) and never change meaning.
enum class Status : std::uint16_t {
  ok = 0,
  no_responders = 1,
  peer_gone = 2,
  deadline_exceeded = 3,
  idle_timeout = 4,
  cancelled = 5,
  refused = 6,
  unauthenticated = 7,
  permission_denied = 8,
  resource_exhausted = 9,
  slow_consumer = 10,
  protocol_error = 11,
  internal = 12,
  /// An error raised by the responding application; its code and message pass through unchanged.
  application = 13,
};

inline constexpr std::uint16_t kMaxStatusValue = 13;

/// Upper-case wire name, e.g. "NO_RESPONDERS"; "UNKNOWN" for values outside the enum.
std::string_view status_name(Status status) noexcept;

/// True when `value` names a defined status.
constexpr bool is_valid_status(std::uint16_t value) noexcept { return value <= kMaxStatusValue; }

}  // namespace switchboard
