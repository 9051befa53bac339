// A shared native connection (protocol versions 4 and 5): owns its transport, the table of lanes it
// carries and their bytes in both directions. Each lane's Session owns everything else about
// that lane's membership.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "relay/relay_context.hpp"
#include "transport/transport.hpp"

namespace switchboard::core::net {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

/// Carries many lanes over one connection; each lane is the byte stream of one version-1-3
/// connection and gets its own Session, which reads and writes it through a Transport the
/// shared connection hands out. Lanes share one read and one write: the bytes every lane's
/// session writes in one turn of the event loop leave in one system call, which is what makes a
/// program with many memberships as cheap per request as one with a single connection.
///
/// Threading: everything runs on the transport's executor (one I/O thread); drain() and
/// terminate() may be called from any thread. Kept alive by its coroutines and by its lanes'
/// transports.
class MuxConnection final : public std::enable_shared_from_this<MuxConnection> {
public:
  /// Starts a lane's session (on this connection's executor) over `transport`.
  using StartLane = std::function<void(std::unique_ptr<Transport>)>;
  /// Whether the relay is at its connection limit (each lane counts as a connection).
  using AtLimit = std::function<bool()>;

  /// `placement_shards`: the relay's I/O threads that connections are placed on by channel (0
  /// or 1 when placement is not by channel), told to version-5 clients in the MUX answer.
  MuxConnection(std::unique_ptr<Transport> transport, RelayContext& context, StartLane start_lane,
                AtLimit at_limit, Clock::time_point accepted_at, std::uint16_t placement_shards);
  ~MuxConnection();
  MuxConnection(const MuxConnection&) = delete;
  MuxConnection& operator=(const MuxConnection&) = delete;

  void start();
  /// No new lanes; closes once the last lane has ended (the lanes' sessions drain themselves).
  void drain();
  /// Closes now; every lane ends.
  void terminate();

  struct Lane;
  using IoHandler = asio::any_completion_handler<void(boost::system::error_code, std::size_t)>;

  // ---- For the lanes' transports (this connection's executor only). ----
  /// Copies `size` bytes of the lane's reads into `buffer` from what has arrived for it.
  std::size_t take_inbound(Lane& lane, asio::mutable_buffer buffer);
  /// Queues bytes of `buffers` from `offset` on, as many as the outbound room takes.
  std::size_t append(Lane& lane, std::span<const asio::const_buffer> buffers, std::size_t offset);
  void wait_for_room(Lane& lane, IoHandler handler);
  void finish_lane(Lane& lane);  // the lane's FIN
  void close_lane(Lane& lane);   // the lane's session let it go
  std::string lane_remote(const Lane& lane) const;

private:
  asio::awaitable<void> read_loop();
  // Handles the bytes in in_[0, in_end_); false once the connection stops reading.
  bool parse();
  bool handle_mux(std::span<const std::uint8_t> payload);
  void open_lane(std::uint32_t id);
  void refuse_lane(std::uint32_t id, Status status, std::string message);
  void deliver(Lane& lane, const std::uint8_t* data, std::size_t size);
  void end_input(Lane& lane);
  void end_all(boost::system::error_code reason);
  void fail(Status status, std::string message);
  void schedule_flush();
  void flush();
  asio::awaitable<void> write_rest(std::size_t offset);
  void wake_room_waiters();
  void arm_watchdog();
  void on_watchdog();
  void close_now();
  std::size_t room() const noexcept;

  std::unique_ptr<Transport> transport_;
  asio::any_io_executor executor_;
  RelayContext& context_;
  StartLane start_lane_;
  AtLimit at_limit_;
  std::string remote_;
  Clock::time_point accepted_at_;
  std::uint16_t placement_shards_;
  asio::steady_timer watchdog_;
  asio::steady_timer resume_;  // the reader waits here while a lane holds too many bytes

  // Reading.
  std::vector<std::uint8_t> in_;
  std::size_t in_end_ = 0;
  bool welcomed_ = false;
  std::uint32_t chunk_left_ = 0;  // payload bytes of the LANE frame being read
  bool chunk_fin_ = false;
  std::shared_ptr<Lane> chunk_lane_;  // nullptr: its bytes are dropped (a closed lane)
  std::uint32_t last_lane_ = 0;       // lane ids only grow
  Lane* paused_for_ = nullptr;        // the lane whose unread bytes stopped the reader

  // Writing: bytes queued (out_) and in flight (writing_).
  std::vector<std::uint8_t> out_;
  std::vector<std::uint8_t> writing_;
  bool flush_posted_ = false;
  bool write_in_flight_ = false;
  Clock::time_point write_started_{};
  std::vector<std::shared_ptr<Lane>> room_waiters_;
  bool close_after_flush_ = false;

  boost::unordered_flat_map<std::uint32_t, std::shared_ptr<Lane>> lanes_;
  Clock::time_point idle_since_;  // when the last lane ended (or the connection began)
  bool draining_ = false;
  bool closed_ = false;
};

}  // namespace switchboard::core::net
