// The byte stream under a native session: each Transport owns its connection (a TCP socket, or
// one end of an in-memory pipe) and nothing else; framing and streams stay in the session.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <utility>

namespace switchboard::core::net {

namespace asio = boost::asio;

/// An ordered, reliable byte stream. Not thread-safe: every call is made on the executor it
/// returns (the session's strand). At most one read and one write are outstanding at a time.
class Transport {
public:
  using IoHandler = asio::any_completion_handler<void(boost::system::error_code, std::size_t)>;

  virtual ~Transport() = default;

  virtual asio::any_io_executor get_executor() = 0;

  /// Reads at least one byte into `buffer`; eof is reported as asio::error::eof.
  template <typename Token>
  auto async_read_some(asio::mutable_buffer buffer, Token&& token) {
    return asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, asio::mutable_buffer target) {
          start_read_some(target, IoHandler(std::move(handler)));
        },
        token, buffer);
  }

  /// Writes every byte of `buffers`, which must stay valid until completion.
  template <typename Token>
  auto async_write(std::span<const asio::const_buffer> buffers, Token&& token) {
    return asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, std::span<const asio::const_buffer> source) {
          start_write(source, IoHandler(std::move(handler)));
        },
        token, buffers);
  }

  /// Ends the sending direction after the last write (the peer reads eof).
  virtual void shutdown_send() noexcept = 0;
  /// Closes both directions now; outstanding operations complete with an error.
  virtual void close() noexcept = 0;
  /// "address:port" of the far end, for logs; may be empty.
  virtual std::string remote() const = 0;

protected:
  virtual void start_read_some(asio::mutable_buffer buffer, IoHandler handler) = 0;
  virtual void start_write(std::span<const asio::const_buffer> buffers, IoHandler handler) = 0;
};

/// Plain TCP. Disables Nagle's algorithm: the session already gathers its writes.
std::unique_ptr<Transport> make_tcp_transport(asio::ip::tcp::socket socket);

/// Both ends of an in-memory pipe on one executor: what one end writes, the other reads. For
/// driving sessions without sockets (fuzzing, deterministic tests).
std::pair<std::unique_ptr<Transport>, std::unique_ptr<Transport>> make_memory_pipe(
    asio::any_io_executor executor);

}  // namespace switchboard::core::net
