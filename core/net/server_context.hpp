// State shared by every session of one relay: limits, the registry, and the relay's counters.
#pragma once

#include <atomic>
#include <cstdint>

#include "registry/limits.hpp"
#include "registry/registry.hpp"

namespace switchboard::core::net {

struct Counters {
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::int64_t> connections_open{0};
  std::atomic<std::uint64_t> handshake_failures{0};
  /// TLS handshakes on the native door that failed or timed out (no session was started).
  std::atomic<std::uint64_t> tls_handshake_failures{0};
  std::atomic<std::uint64_t> streams_total{0};
  std::atomic<std::int64_t> streams_open{0};
  std::atomic<std::uint64_t> bytes_in{0};
  std::atomic<std::uint64_t> bytes_out{0};
  std::atomic<std::uint64_t> slow_consumer_drops{0};
  std::atomic<std::uint64_t> protocol_errors{0};
  /// Payload bytes held in stream queues across the relay (bounded by the stream windows).
  std::atomic<std::int64_t> queued_bytes{0};
};

struct ServerContext {
  explicit ServerContext(const Limits& l) : limits(l), registry(limits) {}

  Limits limits;
  Registry registry;
  Counters counters;
};

}  // namespace switchboard::core::net
