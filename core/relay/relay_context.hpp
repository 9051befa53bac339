// What every door of one relay shares: limits, the registry, the read block pool, the token
// authenticator and the relay's counters (one DoorCounters per door, the same for each).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>

#include "auth/authenticator.hpp"
#include "cluster/directory.hpp"
#include "registry/limits.hpp"
#include "registry/registry.hpp"
#include "relay/sharded_counter.hpp"
#include "switchboard/wire/block.hpp"

namespace switchboard::core {

/// Why a connection (native) or a Respond call (gRPC) never became a peer.
enum class HandshakeFailure : std::uint8_t {
  timeout,           ///< no HELLO within the handshake timeout
  bad_hello,         ///< malformed HELLO or open message
  bad_version,       ///< unsupported protocol version
  unexpected_frame,  ///< something other than HELLO came first
  refused,           ///< the registry refused the join (duplicate id, a limit)
  draining,          ///< the relay was draining
  unauthorized,      ///< the token was refused (see Counters::auth_failures for why)
  unavailable,       ///< no relay of the cluster can serve the channel now (fenced, no view)
  count_,
};

constexpr std::string_view handshake_failure_name(HandshakeFailure reason) noexcept {
  switch (reason) {
    case HandshakeFailure::timeout:
      return "timeout";
    case HandshakeFailure::bad_hello:
      return "bad_hello";
    case HandshakeFailure::bad_version:
      return "bad_version";
    case HandshakeFailure::unexpected_frame:
      return "unexpected_frame";
    case HandshakeFailure::refused:
      return "refused";
    case HandshakeFailure::draining:
      return "draining";
    case HandshakeFailure::unauthorized:
      return "unauthorized";
    case HandshakeFailure::unavailable:
      return "unavailable";
    case HandshakeFailure::count_:
      break;
  }
  return "unknown";
}

inline constexpr std::size_t kHandshakeFailureCount =
    static_cast<std::size_t>(HandshakeFailure::count_);
inline constexpr std::size_t kStatusCount = kMaxStatusValue + 1;

/// What one front door counts. All increments are relaxed: these are statistics, not
/// synchronisation; what the hot path counts is sharded per I/O thread (ShardedCounter), the
/// rare events are plain atomics. For the gRPC door a "connection" is a call (gRPC multiplexes
/// calls over HTTP/2 connections the gateway never sees).
struct DoorCounters {
  ShardedCounter<std::uint64_t> connections_total;
  ShardedCounter<std::int64_t> connections_open;
  std::atomic<std::uint64_t> connections_refused{0};  ///< turned away at the connection limit
  std::array<std::atomic<std::uint64_t>, kHandshakeFailureCount> handshake_failures{};
  ShardedCounter<std::uint64_t> streams_total;
  ShardedCounter<std::int64_t> streams_open;
  /// Ends of streams by final status; a stream between two peers ends once at each end.
  std::array<ShardedCounter<std::uint64_t>, kStatusCount> stream_outcomes;
  /// Bytes read from and written to the door's sockets (native: framing included).
  ShardedCounter<std::uint64_t> bytes_in;
  ShardedCounter<std::uint64_t> bytes_out;
  /// Stream payload bytes only: what applications sent and received through this door.
  ShardedCounter<std::uint64_t> payload_bytes_in;
  ShardedCounter<std::uint64_t> payload_bytes_out;
  /// Times a stream had bytes for a client but no credit from it (the client reads slower).
  ShardedCounter<std::uint64_t> credit_stalls;
  std::atomic<std::uint64_t> slow_consumer_drops{0};
  /// Whole messages (MESSAGE): received from clients, written to receivers, and receivers a
  /// message did not reach (gone, absent, too slow, or a frame too large for them).
  ShardedCounter<std::uint64_t> messages_received;
  ShardedCounter<std::uint64_t> messages_delivered;
  ShardedCounter<std::uint64_t> messages_dropped;
  std::atomic<std::uint64_t> protocol_errors{0};
  /// TLS handshakes on the door's listener that failed or timed out.
  std::atomic<std::uint64_t> tls_handshake_failures{0};
  /// Connections turned away because their source address opened too many too fast.
  std::atomic<std::uint64_t> connections_throttled{0};
  /// Joins sent to the relay of the cluster that serves the channel, and peers moved there.
  std::atomic<std::uint64_t> redirects_sent{0};

  void count_handshake_failure(HandshakeFailure reason) noexcept {
    handshake_failures[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
  }
  void count_stream_end(Status status) noexcept {
    const auto index = static_cast<std::size_t>(status);
    if (index < kStatusCount) stream_outcomes[index].fetch_add(1, std::memory_order_relaxed);
  }
};

/// The relay's counters: the same set for each door, then what belongs to the relay as a whole.
/// What only one door has (the gRPC door's HTTP/2 transports) that door owns and exports.
struct Counters {
  DoorCounters native;
  DoorCounters grpc;
  /// Payload bytes held in stream queues across the relay (bounded by the stream windows).
  ShardedCounter<std::int64_t> queued_bytes;
  /// Requests refused by token checks on either door, indexed by auth::Failure.
  std::array<std::atomic<std::uint64_t>, auth::kFailureKinds> auth_failures{};
  /// gRPC calls this relay carried to the cluster relay that serves their channel, and the
  /// message bytes it passed each way for them.
  std::atomic<std::uint64_t> carried_calls_total{0};
  std::atomic<std::int64_t> carried_calls_open{0};
  std::atomic<std::uint64_t> carried_bytes_to_owner{0};
  std::atomic<std::uint64_t> carried_bytes_from_owner{0};

  std::uint64_t auth_failures_for(auth::Failure failure) const noexcept {
    return auth_failures[static_cast<std::size_t>(failure)].load(std::memory_order_relaxed);
  }
};

struct RelayContext {
  explicit RelayContext(const Limits& l)
      : limits(l),
        registry(limits),
        read_blocks(wire::BlockPool::create(limits.read_block_size, limits.read_block_pool)) {}

  Limits limits;
  Registry registry;
  /// Full-size read blocks shared by every connection's frame reader.
  std::shared_ptr<wire::BlockPool> read_blocks;
  Counters counters;
  /// Open (tokens ignored) unless the server configures otherwise before the doors start.
  auth::Authenticator authenticator;
  /// Who serves each channel: this relay alone serves them all unless the server points this
  /// at the cluster's directory before the doors start.
  cluster::Directory* directory = &alone;
  inline static cluster::LocalDirectory alone;
};

/// Counts a refusal by reason and logs it once: `door` is "native" or "grpc", `action` what was
/// refused (join, send, ...).
void record_auth_refusal(RelayContext& context, const auth::Decision& decision,
                         std::string_view door, std::string_view action, const Uuid& channel,
                         std::uint64_t connection = 0);

}  // namespace switchboard::core
