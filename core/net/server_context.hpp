// State shared by every session of one relay: limits, the registry, and the relay's counters.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

#include "auth/authenticator.hpp"
#include "registry/limits.hpp"
#include "registry/registry.hpp"

namespace switchboard::core::net {

struct Counters {
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::int64_t> connections_open{0};
  std::atomic<std::uint64_t> handshake_failures{0};
  std::atomic<std::uint64_t> streams_total{0};
  std::atomic<std::int64_t> streams_open{0};
  std::atomic<std::uint64_t> bytes_in{0};
  std::atomic<std::uint64_t> bytes_out{0};
  std::atomic<std::uint64_t> slow_consumer_drops{0};
  std::atomic<std::uint64_t> protocol_errors{0};
  /// Payload bytes held in stream queues across the relay (bounded by the stream windows).
  std::atomic<std::int64_t> queued_bytes{0};
  /// Requests refused by token checks on either door, indexed by auth::Failure.
  std::array<std::atomic<std::uint64_t>, auth::kFailureKinds> auth_failures{};

  std::uint64_t auth_failures_for(auth::Failure failure) const noexcept {
    return auth_failures[static_cast<std::size_t>(failure)].load(std::memory_order_relaxed);
  }
};

struct ServerContext {
  explicit ServerContext(const Limits& l) : limits(l), registry(limits) {}

  Limits limits;
  Registry registry;
  Counters counters;
  /// Open (tokens ignored) unless the server configures otherwise before the doors start.
  auth::Authenticator authenticator;
};

/// Counts a refusal by reason and logs it once: `door` is "native" or "grpc", `action` what was
/// refused (join, send, ...).
void record_auth_refusal(ServerContext& context, const auth::Decision& decision,
                         std::string_view door, std::string_view action, const Uuid& channel,
                         std::uint64_t connection = 0);

}  // namespace switchboard::core::net
