// The byte stream under a door's connection: each Transport owns its connection (a TCP socket, a
// TLS stream, or one end of an in-memory pipe) and nothing else; framing stays in the door.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <utility>

namespace switchboard::core::transport {

namespace asio = boost::asio;

/// An ordered, reliable byte stream. Not thread-safe: every call is made on the executor it
/// returns (the session's I/O thread). At most one read and one write are outstanding at a
/// time.
/// Operations are coroutines so that a TCP transport completes straight into the session's
/// awaitable, with no type-erased handler (which would allocate per operation).
class Transport {
public:
  using IoResult = std::tuple<boost::system::error_code, std::size_t>;

  virtual ~Transport() = default;

  virtual asio::any_io_executor get_executor() = 0;
  /// Reads at least one byte into `buffer`; eof is reported as asio::error::eof.
  virtual asio::awaitable<IoResult> read_some(asio::mutable_buffer buffer) = 0;
  /// Writes every byte of `buffers`, which must stay valid until completion.
  virtual asio::awaitable<IoResult> write(std::span<const asio::const_buffer> buffers) = 0;
  /// Writes what the connection takes at once, without waiting, when no write is outstanding.
  /// Returns the bytes written; 0 with `would_block` when it takes nothing now or when this
  /// transport cannot write synchronously (the caller then uses write()).
  virtual std::size_t try_write(std::span<const asio::const_buffer> buffers,
                                boost::system::error_code& ec) noexcept {
    (void)buffers;
    ec = asio::error::would_block;
    return 0;
  }
  /// Bytes already read from the connection that the next read_some returns first. A door
  /// that must see a connection's first byte before it picks the handler (a TLS connection's
  /// MUX or HELLO) reads it here rather than peeking, which TLS cannot do.
  virtual std::span<const std::uint8_t> read_ahead() const noexcept { return {}; }
  /// Ends the sending direction after the last write (the peer reads eof).
  virtual void shutdown_send() noexcept = 0;
  /// Closes both directions now; outstanding operations complete with an error.
  virtual void close() noexcept = 0;
  /// "address:port" of the far end, for logs; may be empty.
  virtual std::string remote() const = 0;
};

/// Plain TCP. Disables Nagle's algorithm: the session already gathers its writes. `remote` is
/// the far end as accept() gave it (no system call to ask again).
std::unique_ptr<Transport> make_tcp_transport(asio::ip::tcp::socket socket,
                                              const asio::ip::tcp::endpoint& remote);

/// Both ends of an in-memory pipe on one executor: what one end writes, the other reads. For
/// driving sessions without sockets (fuzzing, deterministic tests).
std::pair<std::unique_ptr<Transport>, std::unique_ptr<Transport>> make_memory_pipe(
    asio::any_io_executor executor);

}  // namespace switchboard::core::transport

namespace switchboard::core::net {
// The native session reads and writes through this interface under its own namespace's name.
using transport::Transport;
}  // namespace switchboard::core::net
