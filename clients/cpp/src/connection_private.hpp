// Private state of a client Connection: socket, frame reader, outbound bytes, streams.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <optional>
#include <tuple>
#include <unordered_map>

#include "switchboard/client.hpp"

namespace switchboard::client {

struct Connection::Private {
  Private(boost::asio::any_io_executor ex, const ConnectOptions& options)
      : executor(ex),
        socket(ex),
        reader(options.max_frame, std::max<std::size_t>(256 * 1024, options.max_frame + 64)),
        wake(ex),
        keepalive_timer(ex),
        closed_signal(ex, boost::asio::steady_timer::time_point::max()) {}

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

  boost::asio::any_io_executor executor;
  boost::asio::ip::tcp::socket socket;
  std::optional<boost::asio::ssl::context> tls_context;
  std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls;
  wire::FrameReader reader;
  std::vector<std::uint8_t> outbuf;
  std::vector<std::uint8_t> writing;
  boost::asio::steady_timer wake;
  boost::asio::steady_timer keepalive_timer;
  boost::asio::steady_timer closed_signal;
  std::unordered_map<std::uint32_t, std::shared_ptr<Stream>> streams;
  std::uint32_t next_stream_id = 1;
  std::vector<Uuid> peers;
  std::function<void(const PresenceChange&)> on_presence;
  std::function<void(std::shared_ptr<Stream>)> on_request;
  std::function<void(std::shared_ptr<Stream>)> on_broadcast;
  std::function<void(const Outcome&)> on_closed;
  // Streams that arrived before their handler was set (the relay may route to us as soon as we
  // have joined); handed over when the handler is set.
  std::vector<std::shared_ptr<Stream>> pending_requests;
  std::vector<std::shared_ptr<Stream>> pending_broadcasts;
  std::chrono::steady_clock::time_point last_read = std::chrono::steady_clock::now();
  bool ping_outstanding = false;
};

}  // namespace switchboard::client
