// Private state of a client Connection: the current network link (socket, frame reader,
// outbound bytes), streams, presence view, handlers and reconnect timers.
#pragma once

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cerrno>
#include <optional>
#include <random>
#include <tuple>

#include "switchboard/client.hpp"
#include "switchboard/wire/flow.hpp"

namespace switchboard::client {

/// Outbound bytes queued on the connection above which writers wait for the socket.
inline constexpr std::size_t kOutbufHighWater = 4 * 1024 * 1024;

/// One TCP connection to the relay. A reconnect makes a new Link; coroutines of the old one
/// hold it until they notice `dead` and end, so they never touch the new socket.
struct Connection::Link {
  Link(boost::asio::any_io_executor ex, const ConnectOptions& options)
      : socket(ex),
        reader(options.max_frame, std::max<std::size_t>(256 * 1024, options.max_frame + 64)),
        wake(ex),
        keepalive_timer(ex),
        keepalive(std::chrono::steady_clock::now()) {}

  using IoResult = std::tuple<boost::system::error_code, std::size_t>;
  static constexpr auto kUseTuple = boost::asio::as_tuple(boost::asio::use_awaitable);

  // Every read and write goes through these two: over TLS when it is on, else the socket.
  boost::asio::awaitable<IoResult> read_some(boost::asio::mutable_buffer buffer) {
    return tls ? tls->async_read_some(buffer, kUseTuple)
               : socket.async_read_some(buffer, kUseTuple);
  }
  boost::asio::awaitable<IoResult> write_all(boost::asio::const_buffer buffer) {
    return tls ? boost::asio::async_write(*tls, buffer, kUseTuple)
               : boost::asio::async_write(socket, buffer, kUseTuple);
  }
  /// Sends what the socket takes at once, without waiting (plain TCP only: 0 over TLS). Saves
  /// the event loop pass an asynchronous write spends on its completion.
  std::size_t try_send(boost::asio::const_buffer buffer, boost::system::error_code& ec) {
    if (tls) return 0;
    const auto n =
        ::send(socket.native_handle(), buffer.data(), buffer.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      ec.assign(errno, boost::asio::error::get_system_category());
    }
    return 0;
  }

  boost::asio::ip::tcp::socket socket;
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
};

/// What a successful handshake learnt; adopted by the connection only once it is complete.
struct Connection::Joined {
  Uuid peer_id;
  std::uint32_t max_frame = 0;
  std::uint32_t stream_window = 0;
  std::uint32_t keepalive_ms = 0;
  std::vector<Uuid> peers;
  std::uint64_t version = 0;
};

struct Connection::Private {
  Private(boost::asio::any_io_executor ex, const ConnectOptions& options)
      : executor(ex),
        link(std::make_shared<Link>(ex, options)),
        closed_signal(ex, boost::asio::steady_timer::time_point::max()),
        linked_signal(ex, boost::asio::steady_timer::time_point::max()),
        backoff_timer(ex),
        attempt_timer(ex),
        random(std::random_device{}()) {}

  boost::asio::any_io_executor executor;
  std::shared_ptr<Link> link;  // the current one (during an attempt: the one being tried)
  boost::asio::steady_timer closed_signal;
  boost::asio::steady_timer linked_signal;  // cancelled when a new link is joined, or on close
  boost::asio::steady_timer backoff_timer;
  boost::asio::steady_timer attempt_timer;  // connect_timeout of the attempt in progress
  std::minstd_rand random;                  // jitter
  boost::unordered_flat_map<std::uint32_t, std::shared_ptr<Stream>> streams;
  // Outgoing streams whose OPEN has not been sent yet (it goes with their first write): they
  // are not in `streams`, but a close must end them too, or their readers wait forever.
  std::vector<std::weak_ptr<Stream>> unopened;
  std::vector<Uuid> peers;
  std::function<void(const PresenceChange&)> on_presence;
  std::function<void(std::shared_ptr<Stream>)> on_request;
  std::function<void(std::shared_ptr<Stream>)> on_broadcast;
  std::function<void(const Outcome&)> on_closed;
  std::function<void(const ConnectionEvent&)> on_event;
  // Streams that arrived before their handler was set (the relay may route to us as soon as we
  // have joined); handed over when the handler is set.
  std::vector<std::shared_ptr<Stream>> pending_requests;
  std::vector<std::shared_ptr<Stream>> pending_broadcasts;
};

}  // namespace switchboard::client
