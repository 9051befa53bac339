// The client's state behind its public handles: ConnectionImpl (the current network link with
// its socket or lane, frame reader and outbound bytes; streams, presence view, handlers,
// reconnect timers) and StreamImpl (credit, queued chunks, signals of one stream).
#pragma once

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/container/small_vector.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <tuple>
#include <vector>

#include "mux.hpp"
#include "switchboard/client.hpp"
#include "switchboard/wire/flow.hpp"

namespace switchboard::client {

namespace detail {

/// One TCP connection to the relay, or one lane of a shared connection (ConnectOptions::sharing).
/// A reconnect makes a new Link; coroutines of the old one hold it until they notice `dead` and
/// end, so they never touch the new socket or lane.
/// The process's free full-size read blocks of `block_size` bytes, shared by every connection:
/// a block a program still holds a slice of when its connection reads on is replaced from here
/// rather than by malloc, and a released one comes back here rather than to malloc. Without it,
/// connections receiving at once allocated and freed a 256 KiB block every few reads, and glibc
/// handed the freed heap top back to the kernel, to fault it in again 4 KiB at a time (200,000
/// page faults for 8 connections receiving 1 GiB each). One pool per block size.
std::shared_ptr<wire::BlockPool> shared_read_blocks(std::size_t block_size);

struct Link {
  static constexpr std::size_t kFirstReadBlock = 4096;
  static std::size_t read_block_size(const ConnectOptions& options) {
    return std::max<std::size_t>(256 * 1024, options.max_frame + 64);
  }

  Link(boost::asio::any_io_executor ex, const ConnectOptions& options)
      : socket(ex),
        // The first block is small: the handshake and presence fit in it, and a connection
        // that never receives much (most of a program's many) never maps a full-size one.
        reader(options.max_frame, read_block_size(options), kFirstReadBlock,
               shared_read_blocks(read_block_size(options))),
        wake(ex),
        keepalive_timer(ex),
        keepalive(std::chrono::steady_clock::now()) {}

  using IoResult = std::tuple<boost::system::error_code, std::size_t>;
  static constexpr auto kUseTuple = boost::asio::as_tuple(boost::asio::use_awaitable);

  // Every read and write goes through these two: the lane when there is one, over TLS when it
  // is on, else the socket.
  boost::asio::awaitable<IoResult> read_some(boost::asio::mutable_buffer buffer) {
    if (lane) return lane->read_some(buffer);
    return tls ? tls->async_read_some(buffer, kUseTuple)
               : socket.async_read_some(buffer, kUseTuple);
  }
  boost::asio::awaitable<IoResult> write_all(boost::asio::const_buffer buffer) {
    if (lane) return lane->write_all(buffer);
    return tls ? boost::asio::async_write(*tls, buffer, kUseTuple)
               : boost::asio::async_write(socket, buffer, kUseTuple);
  }
  /// Sends what the socket takes at once, without waiting (plain TCP only: 0 over TLS). Saves
  /// the event loop pass an asynchronous write spends on its completion. A lane queues what the
  /// shared connection has room for, to go with the other lanes' bytes.
  std::size_t try_send(boost::asio::const_buffer buffer, boost::system::error_code& ec) {
    if (lane) return lane->try_send(buffer, ec);
    if (tls) return 0;
    const auto n =
        ::send(socket.native_handle(), buffer.data(), buffer.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      ec.assign(errno, boost::asio::error::get_system_category());
    }
    return 0;
  }
  /// Ends the transport: the lane (FIN) or the socket. What waits on it ends with an error.
  void close() {
    if (lane) lane->close();
    boost::system::error_code ignored;
    socket.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }

  boost::asio::ip::tcp::socket socket;
  std::shared_ptr<Lane> lane;  // set: the link is this lane of a shared connection
  std::optional<boost::asio::ssl::context> tls_context;
  std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls;
  wire::FrameReader reader;
  std::vector<std::uint8_t> outbuf;
  std::vector<std::uint8_t> writing;
  boost::asio::steady_timer wake;
  bool writer_parked = false;  // write_loop waits on wake
  // When bytes last went out. Bytes queued on a link idle for a while are sent at once (an
  // isolated request should not wait for the writer's turn); on a busy link they wait for the
  // writer, which gathers everything queued meanwhile into one write.
  std::chrono::steady_clock::time_point last_send{};
  boost::asio::steady_timer keepalive_timer;
  std::uint32_t next_stream_id = 1;
  wire::Keepalive keepalive;  // what the read loop saw of the relay, judged by keepalive()
  bool going_away = false;    // GOAWAY received: no new stream on this link
  bool dead = false;
  // The handshake: the name lookup in flight (cancelled with the attempt), whether the attempt's
  // timeout closed the link, and whether the handshake is over (the timeout then does nothing).
  std::optional<boost::asio::ip::tcp::resolver> resolver;
  bool handshake_timed_out = false;
  bool handshake_over = false;
};

/// What a successful handshake learnt; adopted by the connection only once it is complete.
struct Joined {
  Uuid peer_id;
  std::uint32_t max_frame = 0;
  std::uint32_t stream_window = 0;
  std::uint32_t keepalive_ms = 0;
  std::uint32_t message_window = 0;
  std::vector<Uuid> peers;
  std::uint64_t version = 0;
};

/// Everything a Connection is; the public handle owns one and forwards its calls here. Runs on
/// the connection's executor only, as the handle's contract says. Members are public to the
/// library's stream and connection code, which is all that sees this type.
class ConnectionImpl {
public:
  ConnectionImpl(Connection& owner, boost::asio::any_io_executor executor, ConnectOptions options);

  /// The owning handle: coroutines and streams hold it to keep the connection alive.
  std::shared_ptr<Connection> shared_from_this() { return owner_.shared_from_this(); }

  // The public API, forwarded by Connection.
  std::vector<Uuid> peers() const { return peers_; }
  void on_presence(std::function<void(const PresenceChange&)> handler);
  void on_request(std::function<void(std::shared_ptr<Stream>)> handler);
  void on_broadcast(std::function<void(std::shared_ptr<Stream>)> handler);
  void on_closed(std::function<void(const Outcome&)> handler);
  void on_connection_event(std::function<void(const ConnectionEvent&)> handler);
  std::shared_ptr<StreamImpl> open_request(Target target, const StreamOptions& options);
  std::shared_ptr<StreamImpl> open_broadcast(const StreamOptions& options);
  void close();
  boost::asio::awaitable<Outcome> wait_closed();

  // Whole messages (messages.cpp).
  void on_message(std::function<void(const Message&)> handler);
  boost::asio::awaitable<Outcome> post_message(wire::StreamKind kind, Uuid peer,
                                               std::span<const std::uint8_t> bytes);
  bool try_post_message(wire::StreamKind kind, const Uuid& peer,
                        std::span<const std::uint8_t> bytes);
  boost::asio::awaitable<MessageTally> flush_messages();
  /// Why a message of `size` bytes cannot be sent at all now; nullopt when it can (at once or
  /// once credit allows).
  std::optional<Outcome> message_refusal(std::size_t size) const;
  /// A message fits in one of the relay's frames and in its message window.
  std::uint32_t max_message_size() const noexcept {
    return std::min<std::uint32_t>(
        relay_max_frame_ - static_cast<std::uint32_t>(wire::kMessageHeadSize), message_window_);
  }
  void write_message(wire::StreamKind kind, const Uuid& peer, std::span<const std::uint8_t> bytes);
  void receive_message(const wire::Frame& frame);
  void receive_message_report(const wire::Frame& frame);
  /// A link ended: its unreported messages' fate is unknown, and waiters look again.
  void messages_link_lost();
  void notify_message_waiters();

  boost::asio::awaitable<Outcome> handshake(Link& link, Joined& joined);
  /// The link's own TCP connection (and TLS): resolve, connect, no delay.
  boost::asio::awaitable<Outcome> connect_socket(Link& link);
  boost::asio::awaitable<Outcome> attempt(Joined& joined);
  boost::asio::awaitable<Outcome> attempt_once(Joined& joined);
  void adopt(const Joined& joined);
  void start_loops();
  boost::asio::awaitable<void> read_loop(std::shared_ptr<Link> link);
  boost::asio::awaitable<void> write_loop(std::shared_ptr<Link> link);
  boost::asio::awaitable<void> keepalive(std::shared_ptr<Link> link);
  boost::asio::awaitable<void> reconnect_loop(Outcome reason);
  /// Waits until a new stream may be opened on a live link; fails with the reason it cannot.
  boost::asio::awaitable<Outcome> wait_linked(StreamImpl& stream);
  bool linked() const noexcept;
  boost::asio::awaitable<Outcome> start_tls(Link& link);
  void dispatch(const wire::Frame& frame);
  void link_lost(const std::shared_ptr<Link>& link, const Outcome& reason);
  void fail_all(const Outcome& outcome);
  void emit(const ConnectionEvent& event);
  void queue_bytes();
  std::vector<std::uint8_t>& outbuf() { return link_->outbuf; }
  std::shared_ptr<StreamImpl> make_stream(Stream::Kind kind, std::uint32_t id);
  std::shared_ptr<StreamImpl> find(std::uint32_t id);
  void forget(std::uint32_t id) { streams_.erase(id); }
  void grant(StreamImpl& stream, std::uint32_t consumed);

  /// A relay's native door as the client dials it.
  struct RelayAddress {
    std::string host;
    std::uint16_t port = 0;
    friend bool operator==(const RelayAddress&, const RelayAddress&) = default;
  };
  /// "HOST:PORT" or "[V6]:PORT" from a REDIRECT; nothing when it is not one.
  static std::optional<RelayAddress> parse_address(std::string_view text);

  Connection& owner_;
  ConnectOptions options_;
  // Where the next attempt dials: the configured relay, or the one a REDIRECT named.
  RelayAddress target_;
  // Set by a handshake answered with REDIRECT: where to go, at which membership revision.
  std::optional<std::pair<RelayAddress, std::uint64_t>> redirected_to_;
  boost::asio::any_io_executor executor_;
  std::shared_ptr<Link> link_;  // the current one (during an attempt: the one being tried)
  boost::asio::steady_timer closed_signal_;
  boost::asio::steady_timer linked_signal_;  // cancelled when a new link is joined, or on close
  boost::asio::steady_timer backoff_timer_;
  boost::asio::steady_timer attempt_timer_;  // connect_timeout of the attempt in progress
  std::minstd_rand random_;                  // jitter
  boost::unordered_flat_map<std::uint32_t, std::shared_ptr<StreamImpl>> streams_;
  // Outgoing streams whose OPEN has not been sent yet (it goes with their first write): they
  // are not in `streams_`, but a close must end them too, or their readers wait forever.
  std::vector<std::weak_ptr<StreamImpl>> unopened_;
  std::vector<Uuid> peers_;
  std::function<void(const PresenceChange&)> on_presence_;
  std::function<void(std::shared_ptr<Stream>)> on_request_;
  std::function<void(std::shared_ptr<Stream>)> on_broadcast_;
  std::function<void(const Outcome&)> on_closed_;
  std::function<void(const ConnectionEvent&)> on_event_;
  // Streams that arrived before their handler was set (the relay may route to us as soon as we
  // have joined); handed over when the handler is set.
  std::vector<std::shared_ptr<StreamImpl>> pending_requests_;
  std::vector<std::shared_ptr<StreamImpl>> pending_broadcasts_;
  // Whole messages: handler, those that came before it, the tally, and the window of message
  // bytes the relay granted on the current link; senders and flushers wait on the signal.
  std::function<void(const Message&)> on_message_;
  std::vector<Message> pending_messages_;
  MessageTally tally_;
  std::int64_t message_credit_ = 0;
  std::uint32_t message_window_ = 0;  // the relay's, from the last WELCOME
  std::uint32_t message_waiters_ = 0;
  boost::asio::steady_timer message_signal_;
  // Unchanged by a reconnect once set, as BlockingClient reads it from other threads.
  Uuid peer_id_;

  std::uint64_t version_ = 0;
  std::uint32_t relay_max_frame_ = wire::kMinMaxFrame;
  std::uint32_t relay_window_ = 0;
  std::uint32_t keepalive_ms_ = 0;
  bool closed_ = false;
  ConnectionState state_ = ConnectionState::connected;
  Outcome close_outcome_;
};

/// Everything a Stream is. Made with make_shared, so the public Stream and its state are one
/// allocation; Stream's calls reach it by a static_cast, with no pointer to follow. Runs on the
/// connection's executor only.
class StreamImpl final : public Stream {
public:
  StreamImpl(std::shared_ptr<Connection> owner, ConnectionImpl& connection, Kind kind,
             std::uint32_t id);

  std::shared_ptr<StreamImpl> self() {
    return std::static_pointer_cast<StreamImpl>(shared_from_this());
  }

  // The public API, forwarded by Stream.
  boost::asio::awaitable<Outcome> write(std::span<const std::uint8_t> bytes, bool last);
  bool try_write(std::span<const std::uint8_t> bytes, bool last);
  boost::asio::awaitable<Outcome> finish();
  boost::asio::awaitable<Outcome> fail(Status status, std::uint32_t app_code, std::string message);
  boost::asio::awaitable<wire::Slice> read();
  std::optional<wire::Slice> try_read();
  boost::asio::awaitable<Outcome> result();
  void on_end(std::function<void(const Outcome&)> handler);
  void reset(Status status, std::string message);

  // Driven by the connection.
  void push(wire::Slice chunk, bool fin);
  void finish_inbound(const Outcome& outcome);
  void terminate(const Outcome& outcome);
  void notify_readers();
  static void notify(std::unique_ptr<boost::asio::steady_timer>& signal);
  void notify_writers();
  boost::asio::awaitable<void> wait_on(std::unique_ptr<boost::asio::steady_timer>& signal);
  std::size_t send_frame(std::span<const std::uint8_t> bytes, std::size_t credit, bool last);

  std::shared_ptr<Connection> owner_;  // a stream keeps its connection alive
  ConnectionImpl* connection_;         // owner_'s state
  Kind kind_;
  std::uint32_t id_;
  Uuid peer_;
  wire::Metadata metadata_;
  std::chrono::milliseconds deadline_{0};

  // Outbound.
  bool open_sent_ = true;  // false for outgoing streams until the first write
  wire::Open open_;
  std::chrono::steady_clock::time_point opened_at_{};  // open_request(): the deadline's start
  std::int64_t send_credit_ = 0;
  bool send_done_ = false;

  // Inbound.
  boost::container::small_vector<wire::Slice, 1> chunks_;  // most messages are one chunk
  std::size_t chunk_head_ = 0;
  bool recv_done_ = false;
  std::uint32_t grant_pending_ = 0;
  std::int64_t recv_allowed_ = 0;

  bool terminal_ = false;
  Outcome outcome_;
  std::unique_ptr<boost::asio::steady_timer> read_signal_;
  std::unique_ptr<boost::asio::steady_timer> write_signal_;
  std::unique_ptr<boost::asio::steady_timer> end_signal_;
  std::function<void(const Outcome&)> end_handler_;
};

inline StreamImpl& impl_of(Stream& stream) noexcept { return static_cast<StreamImpl&>(stream); }
inline const StreamImpl& impl_of(const Stream& stream) noexcept {
  return static_cast<const StreamImpl&>(stream);
}

}  // namespace detail
}  // namespace switchboard::client
