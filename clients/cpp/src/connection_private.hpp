// Private state of a client Connection: socket, frame reader, outbound bytes, streams.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
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

  boost::asio::any_io_executor executor;
  boost::asio::ip::tcp::socket socket;
  wire::FrameReader reader;
  std::vector<std::uint8_t> outbuf;
  std::vector<std::uint8_t> writing;
  boost::asio::steady_timer wake;
  boost::asio::steady_timer keepalive_timer;
  boost::asio::steady_timer closed_signal;
  std::unordered_map<std::uint32_t, std::shared_ptr<Stream>> streams;
  // Outgoing streams whose OPEN has not been sent yet (it goes with their first write): they
  // are not in `streams`, but a close must end them too, or their readers wait forever.
  std::vector<std::weak_ptr<Stream>> unopened;
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
