// One connection of the gRPC door: the client's bytes relayed to gRPC's end of a socketpair and
// back, each frame header checked by an H2Guard on the way.
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "grpc_gateway/h2_guard.hpp"
#include "relay/relay_context.hpp"
#include "transport/transport.hpp"

namespace switchboard::gateway {

class RelayBuffer;

/// What the gRPC door counts below its calls: its HTTP/2 connections (its DoorCounters count
/// calls) and what the HTTP/2 guard turned away. Relaxed increments: statistics only.
struct TransportCounters {
  std::atomic<std::uint64_t> transports_total{0};
  std::atomic<std::int64_t> transports_open{0};
  std::atomic<std::uint64_t> refused_streams{0};
  std::array<std::atomic<std::uint64_t>, kGuardViolationCount> guard_violations{};
};

/// Threading: every member runs on the client transport's executor (one I/O thread); start()
/// and close() may be called from any thread. Kept alive by its own coroutine.
/// Memory: a read buffer each way (16 to 256 KiB, by what the reads bring), refusals waiting for
/// the client (bounded), the guard's stream map (bounded by the stream limit).
class GuardConnection : public std::enable_shared_from_this<GuardConnection> {
public:
  using GrpcSocket = boost::asio::local::stream_protocol::socket;

  /// `grpc`: this relay's end of the socketpair whose other end gRPC serves, on the client's
  /// executor.
  /// `handshake_timeout`: time allowed for the client's preface and first SETTINGS.
  /// `door`: where the connection's bytes are counted; `transport`: its guard's refusals.
  GuardConnection(std::unique_ptr<core::transport::Transport> client, GrpcSocket grpc,
                  H2GuardLimits limits, std::chrono::milliseconds handshake_timeout,
                  core::DoorCounters& door, TransportCounters& transport, std::uint64_t id);

  /// Starts relaying; `on_closed` runs on the connection's executor once both ways have ended.
  void start(std::function<void()> on_closed);
  /// Closes both sides now (no GOAWAY); the relay coroutines end. Any thread.
  void close();

private:
  boost::asio::awaitable<void> run();
  /// Closes the connection if the client has not sent its preface by then.
  boost::asio::awaitable<void> preface_deadline();
  boost::asio::awaitable<void> client_to_grpc();
  boost::asio::awaitable<void> grpc_to_client();
  boost::asio::awaitable<void> linger(RelayBuffer& buffer);
  boost::asio::awaitable<bool> write_client(std::span<const std::uint8_t> bytes);
  void on_violation(const GuardStep& step);
  /// Lets grpc_to_client write a frame of ours now if it is waiting on gRPC between frames.
  void wake_writer();
  void close_now();

  std::unique_ptr<core::transport::Transport> client_;
  GrpcSocket grpc_;
  H2Guard guard_;
  core::DoorCounters& door_counters_;
  TransportCounters& transport_counters_;
  std::chrono::milliseconds handshake_timeout_;
  std::uint64_t id_;
  std::string remote_;
  std::function<void()> on_closed_;
  std::vector<std::uint8_t> to_client_;  // frames of ours waiting for a server frame boundary
  std::optional<GuardStep> violation_;
  bool writer_reading_ = false;  // grpc_to_client waits in a read from gRPC
  bool grpc_done_ = false;       // gRPC closed its end, or writing to it failed
  bool closed_ = false;
};

}  // namespace switchboard::gateway
