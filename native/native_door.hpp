// The native door: its listener, the placement of each plaintext connection on the I/O thread
// its channel hashes to, and the sessions it serves until the relay has drained them.
#pragma once

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>

#include "relay/door.hpp"
#include "relay/relay_context.hpp"
#include "switchboard/wire/uuid.hpp"
#include "transport/io_contexts.hpp"
#include "transport/listener.hpp"
#include "transport/tls.hpp"

namespace switchboard::core::net {

class MuxConnection;
class Session;

struct NativeDoorConfig {
  std::string listen = "127.0.0.1:7400";
  /// Which I/O thread runs a plaintext connection: "channel" (the thread its HELLO's channel
  /// hashes to, so one channel's hand-offs stay on one thread) or "round_robin".
  std::string placement = "channel";
  /// TLS on this door when `tls.native` is set.
  transport::TlsConfig tls;
};

/// Threading: as Door says; sessions run on the I/O contexts, placement on the accept context.
class NativeDoor final : public Door {
public:
  /// Binds the listener; throws when the address is malformed or cannot be bound.
  NativeDoor(RelayContext& context, transport::IoContexts& io, transport::Admission& admission,
             NativeDoorConfig config);
  ~NativeDoor() override;
  NativeDoor(const NativeDoor&) = delete;
  NativeDoor& operator=(const NativeDoor&) = delete;

  boost::asio::ip::tcp::endpoint endpoint() const { return listener_.endpoint(); }

  void start() override;
  void drain() override;
  DrainProgress drain_progress() const override;
  void terminate() override;
  void stop(std::chrono::system_clock::time_point deadline) override;
  std::int64_t open_connections() const override;
  bool reload_tls() override;
  DoorDescription describe() const override;
  void write_metrics(MetricsWriter& out) const override;

private:
  struct PendingPlacement;

  /// The context every plaintext session of `channel` runs on (placement "channel").
  boost::asio::io_context& channel_context(const Uuid& channel);
  /// I/O threads placed by channel, as told to shared connections (1: no placement).
  std::uint16_t placement_shards() const;
  /// Peeks (on the accept context) at a plaintext connection's first bytes, waiting for them
  /// only when none have come yet, then starts its session on the context its HELLO's channel
  /// names.
  void place_session(boost::asio::ip::tcp::socket socket,
                     const boost::asio::ip::tcp::endpoint& remote);
  /// Starts the session on the thread of the channel `head` (the HELLO's first bytes) names.
  void place_by_hello(boost::asio::ip::tcp::socket socket,
                      const boost::asio::ip::tcp::endpoint& remote,
                      std::span<const std::uint8_t> head,
                      std::chrono::steady_clock::time_point accepted_at);
  void start_session(std::unique_ptr<transport::Transport> transport,
                     std::chrono::steady_clock::time_point accepted_at);
  /// A connection whose first frame is MUX: its lanes' sessions run on its thread. `shards` is
  /// what its MUX answer tells (placement_shards(), or 1 for a connection not placed).
  void start_shared(std::unique_ptr<transport::Transport> transport,
                    std::chrono::steady_clock::time_point accepted_at, std::uint16_t shards);
  void track(const std::shared_ptr<Session>& session, std::uint64_t id);

  RelayContext& context_;
  transport::IoContexts& io_;
  transport::Admission& admission_;
  NativeDoorConfig config_;
  transport::Listener listener_;
  // Plaintext connections waiting for their first bytes before placement; touched only on the
  // accept context.
  std::unordered_map<std::uint64_t, std::shared_ptr<PendingPlacement>> placements_;
  std::uint64_t next_placement_ = 0;
  std::mutex sessions_mutex_;
  std::unordered_map<std::uint64_t, std::weak_ptr<Session>> sessions_;
  std::unordered_map<std::uint64_t, std::weak_ptr<MuxConnection>> shared_;  // sessions_mutex_
  std::atomic<std::uint64_t> next_connection_id_{1};
};

}  // namespace switchboard::core::net
