// State the gateway's calls share: the relay's core context, executors, the drainable calls.
#pragma once

#include <algorithm>
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <vector>

#include "grpc_gateway/carrier.hpp"
#include "grpc_gateway/drain_registry.hpp"
#include "relay/relay_context.hpp"
#include "relay/streams.hpp"

namespace switchboard::gateway {

struct GatewayContext {
  /// `executors`: the relay's I/O threads (at least one); calls are spread over them.
  /// `carry`: how calls for channels served by other relays of the cluster are carried there.
  GatewayContext(core::RelayContext& c, std::vector<boost::asio::any_io_executor> executors,
                 CarryOptions carry = {})
      : core(c),
        limits(c.limits),
        registry(c.registry),
        timers(executors.at(0)),
        call_executors(std::move(executors)),
        owners(std::move(carry), c.counters) {}

  /// The executor of a new call's strand, round-robin over the I/O threads. Any thread.
  boost::asio::any_io_executor next_call_executor() {
    const auto n = next_executor.fetch_add(1, std::memory_order_relaxed);
    return call_executors[n % call_executors.size()];
  }

  core::RelayContext& core;
  const core::Limits& limits;
  core::Registry& registry;
  boost::asio::any_io_executor timers;  ///< for the gateway's own timers
  const std::vector<boost::asio::any_io_executor> call_executors;
  std::atomic<std::size_t> next_executor{0};

  /// The Requests and Respond calls, so draining can ask each to finish once it is idle.
  DrainRegistry drains;
  /// The other relays' gRPC doors, for calls carried to the relay serving their channel.
  OwnerChannels owners;
};

/// Counts one gRPC call as an open "connection" of the gRPC door for as long as it lives.
class CountedCall {
public:
  explicit CountedCall(core::DoorCounters& counters) noexcept : counters_(counters) {
    counters_.connections_total.fetch_add(1, std::memory_order_relaxed);
    counters_.connections_open.fetch_add(1, std::memory_order_relaxed);
  }
  ~CountedCall() { counters_.connections_open.fetch_sub(1, std::memory_order_relaxed); }
  CountedCall(const CountedCall&) = delete;
  CountedCall& operator=(const CountedCall&) = delete;

private:
  core::DoorCounters& counters_;
};

/// Records that a gRPC-door stream started or ended (with its final status).
inline void count_stream_start(GatewayContext& context) noexcept {
  core::count_stream_start(context.core.counters.grpc);
}
inline void count_stream_end(GatewayContext& context, Status status) noexcept {
  core::count_stream_end(context.core.counters.grpc, status);
}

/// Bytes per stream direction the gateway lets the core buffer before it stops reading from
/// the gRPC client (the same window a native connection gets).
inline std::int64_t gateway_window(const GatewayContext& context) {
  return static_cast<std::int64_t>(context.limits.stream_window);
}

/// The credit for response bytes each request of a Respond call with stream windows starts with:
/// the stream window, or less so that the requests one call may have open together
/// (`max_streams_per_connection`) hold at most `max_connection_buffer` in the relay.
inline std::uint32_t response_window(const GatewayContext& context) {
  const auto share =
      context.limits.max_connection_buffer / context.limits.max_streams_per_connection;
  return static_cast<std::uint32_t>(
      std::clamp<std::size_t>(share, 1, context.limits.stream_window));
}

}  // namespace switchboard::gateway
