// Shared connections (protocol versions 4 and 5): the group, its TCP (or TLS) connections and
// their lanes.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <boost/unordered/unordered_flat_set.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "switchboard/client.hpp"
#include "switchboard/wire/frame.hpp"

namespace switchboard::client {

/// Outbound bytes queued on a connection (a Connection's own, or a shared one's) above which
/// writers wait for the socket.
inline constexpr std::size_t kOutbufHighWater = 4 * 1024 * 1024;

namespace detail {

class SharedLink;

/// Runs the client side of a TLS handshake over the connected `socket` with the settings of
/// `tls`, checking the relay's certificate for `tls.server_name`, or else `host`. Sets `context`
/// and `stream`; an UNAUTHENTICATED outcome says what failed (a file, or the handshake and why).
boost::asio::awaitable<Outcome> start_client_tls(
    boost::asio::ip::tcp::socket& socket, const TlsOptions& tls, const std::string& host,
    std::uint16_t port, std::optional<boost::asio::ssl::context>& context,
    std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>>& stream);

/// Where a shared connection goes, and how: connections of a group share one only when they
/// would have connected alike (the same relay address and the same TLS settings; another client
/// certificate is another identity at the relay).
struct SharedAddress {
  std::string host;
  std::uint16_t port = 0;
  TlsOptions tls;  // tls.enabled false: plain TCP, the other fields ignored

  /// Orders by host, port, then the TLS settings that matter (every field when enabled).
  bool operator<(const SharedAddress& other) const noexcept;
};

/// One Connection's lane of a shared connection: the byte stream a TCP connection of its own
/// would carry. Owned by the Connection's Link; the shared connection knows it by a plain
/// pointer until the lane is closed or destroyed. One thread (the group's executor).
class Lane {
public:
  using IoResult = std::tuple<boost::system::error_code, std::size_t>;

  explicit Lane(const boost::asio::any_io_executor& executor);
  ~Lane();
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  /// Bytes that arrived for the lane; eof after the relay's FIN, an error once the shared
  /// connection has ended (failure_text() says why), operation_aborted once closed.
  boost::asio::awaitable<IoResult> read_some(boost::asio::mutable_buffer buffer);
  /// Queues all of `buffer`, waiting while the shared connection holds too many bytes.
  boost::asio::awaitable<IoResult> write_all(boost::asio::const_buffer buffer);
  /// Queues what the shared connection has room for now; never waits.
  std::size_t try_send(boost::asio::const_buffer buffer, boost::system::error_code& ec);
  /// Sends FIN (once) and lets the lane go; a read or a wait for the shared connection ends.
  void close();
  bool closed() const noexcept { return closed_; }
  /// Why reads and writes fail: how the shared connection ended.
  std::string failure_text() const;

private:
  friend class SharedLink;

  boost::asio::awaitable<void> wait();
  void wake();
  std::size_t take(boost::asio::mutable_buffer buffer);
  void deliver(const std::uint8_t* data, std::size_t size);
  void end_input();
  void fail(const std::string& text);

  std::shared_ptr<SharedLink> shared_;  // set while attached
  std::uint32_t id_ = 0;                // 0 until its first bytes go out
  // Never expires: cancel() wakes the one waiter (a read, or the wait for the MUX answer).
  boost::asio::steady_timer signal_;
  bool waiting_ = false;
  bool woken_ = false;
  bool awaiting_room_ = false;  // write_all waits for the shared connection's room
  // Arrived and not read yet, from inbound_head_ on.
  std::vector<std::uint8_t> inbound_;
  std::size_t inbound_head_ = 0;
  // A read waiting: the shared connection copies straight into its buffer.
  boost::asio::mutable_buffer reader_;
  std::size_t filled_ = 0;
  bool reading_ = false;
  bool relay_done_ = false;  // the relay's FIN arrived
  bool closed_ = false;
  bool failed_ = false;
  std::string failure_;
};

/// One TCP connection to a relay, over TLS when its address says so, carrying lanes. Kept alive
/// by its coroutines and by its lanes; the group keeps it while new lanes may go on it.
class SharedLink : public std::enable_shared_from_this<SharedLink> {
public:
  using Address = SharedAddress;

  /// `shard`: the relay thread its MUX's placement lands on, when the relay's count is known.
  SharedLink(const boost::asio::any_io_executor& executor, std::weak_ptr<ConnectionSharing> group,
             Address address, const Uuid& placement, std::optional<std::uint32_t> shard,
             std::chrono::milliseconds timeout);

  void start();
  bool pending() const noexcept { return state_ == State::connecting || state_ == State::awaiting; }
  bool ready() const noexcept { return state_ == State::ready; }
  bool failed() const noexcept { return state_ == State::failed; }
  bool has_room() const noexcept { return pending() || (ready() && in_use_ < max_lanes_); }
  bool not_shared() const noexcept { return not_shared_; }
  const Outcome& failure() const noexcept { return failure_; }
  /// The relay thread this connection runs on (wire::placement_shard); unknown until the
  /// relay's answer when the relay's count of threads was not known at the start.
  std::optional<std::uint32_t> shard() const noexcept { return shard_; }

  /// Waits for the MUX answer (or the end) with `lane` counted as a waiter.
  boost::asio::awaitable<void> wait_answer(Lane& lane);
  void attach(Lane& lane);

  // For lanes.
  std::size_t room() const noexcept {
    return outbuf_.size() < kOutbufHighWater ? kOutbufHighWater - outbuf_.size() : 0;
  }
  boost::asio::awaitable<void> wait_for_room();
  void append(Lane& lane, const std::uint8_t* data, std::size_t size);
  /// The lane is let go: FIN unless `quietly` (teardown, nothing more is written).
  void release(Lane& lane, bool quietly);

private:
  enum class State : std::uint8_t { connecting, awaiting, ready, closing, closed, failed };
  static constexpr std::size_t kNoFrame = static_cast<std::size_t>(-1);

  boost::asio::awaitable<void> run();
  boost::asio::awaitable<void> write_loop();
  void kick();
  void append_frames(std::uint32_t lane, const std::uint8_t* data, std::size_t size);
  void append_fin(std::uint32_t lane);
  bool parse(const std::uint8_t* data, std::size_t size);
  bool begin_frame();
  bool end_frame();
  bool control_frame();
  void answered(const wire::MuxWelcome& welcome);
  void fail_handshake(Outcome outcome, bool not_shared);
  void fail_lanes(const std::string& text);
  void maybe_close_idle();
  void wake_waiters();
  void forget();
  void close_socket();

  boost::asio::any_io_executor executor_;
  std::weak_ptr<ConnectionSharing> group_;
  Address address_;
  Uuid placement_;
  std::optional<std::uint32_t> shard_;
  State state_ = State::connecting;
  boost::asio::ip::tcp::socket socket_;
  std::optional<boost::asio::ssl::context> tls_context_;
  std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls_;  // set: over TLS
  std::optional<boost::asio::ip::tcp::resolver> resolver_;
  boost::asio::steady_timer deadline_;  // the MUX answer's, then the linger of a close
  std::chrono::milliseconds timeout_;
  Outcome failure_;  // how it ended, for lanes still waiting to attach
  bool not_shared_ = false;

  // Lanes: those on the wire by id (nullptr once the client closed it and until the relay's
  // FIN), those attached (some not yet on the wire), those waiting for the MUX answer.
  boost::unordered_flat_map<std::uint32_t, Lane*> lanes_;
  boost::unordered_flat_set<Lane*> members_;
  std::vector<Lane*> waiters_;
  std::uint32_t last_lane_ = 0;
  std::uint32_t in_use_ = 0;  // attached, or closed by us and awaiting the relay's FIN
  std::uint32_t max_lanes_ = 0;

  // Writing: bytes queued (outbuf_) and in flight (writing_). The last LANE frame in outbuf_
  // grows while the same lane keeps writing.
  std::vector<std::uint8_t> outbuf_;
  std::vector<std::uint8_t> writing_;
  std::size_t last_frame_at_ = kNoFrame;
  std::uint32_t last_frame_lane_ = 0;
  boost::asio::steady_timer wake_;  // the parked writer; never expires
  bool writer_parked_ = false;
  boost::asio::steady_timer room_;  // writers waiting for room; never expires
  std::size_t room_waiters_ = 0;

  // Reading: the frame being read may span reads.
  std::vector<std::uint8_t> inbuf_;
  std::uint8_t header_[wire::kHeaderSize] = {};
  std::size_t header_have_ = 0;
  wire::FrameHeader frame_{};
  std::size_t payload_left_ = 0;
  bool in_control_ = false;
  std::vector<std::uint8_t> control_;
};

}  // namespace detail

/// See share_connections() in switchboard/client.hpp.
class ConnectionSharing : public std::enable_shared_from_this<ConnectionSharing> {
public:
  explicit ConnectionSharing(boost::asio::any_io_executor executor)
      : executor_(std::move(executor)) {}

  enum class Attached : std::uint8_t { yes, not_shared, failed };
  /// Puts `lane`, a membership of channel `placement`, on a shared connection to host:port
  /// that runs on the relay thread of that channel, making one (whose MUX names `placement` and
  /// whose answer is awaited at most `timeout`) when none has room. not_shared: the relay there
  /// does not share, connect on its own. failed: `failure` is what a connect of its own would
  /// have reported.
  /// Over TLS when `tls.enabled`: a TLS handshake as a Connection's own, whose failure is
  /// `failure`.
  boost::asio::awaitable<Attached> attach(detail::Lane& lane, const std::string& host,
                                          std::uint16_t port, const TlsOptions& tls,
                                          const Uuid& placement, std::chrono::milliseconds timeout,
                                          Outcome& failure);

  enum class Known : std::uint8_t { unknown, shares, does_not_share };
  /// What has been learnt of the relay at host:port, reached with `tls`.
  Known known(const std::string& host, std::uint16_t port, const TlsOptions& tls) const;

private:
  friend class detail::SharedLink;
  using Address = detail::SharedLink::Address;

  boost::asio::any_io_executor executor_;
  std::map<Address, std::vector<std::shared_ptr<detail::SharedLink>>> links_;
  std::set<Address> shares_;
  // Each relay's threads placed by channel, from its latest MUX answer (1: one shard).
  std::map<Address, std::uint32_t> shard_counts_;
  std::set<Address> does_not_share_;
};

}  // namespace switchboard::client
