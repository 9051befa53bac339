// A door's listening socket: the accept loop with its back-off, the relay-wide admission checks
// every door shares (per-address throttle, connection limit) and TLS termination.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "registry/limits.hpp"
#include "relay/relay_context.hpp"
#include "transport/connect_throttle.hpp"
#include "transport/io_contexts.hpp"
#include "transport/tls.hpp"

namespace switchboard::core::transport {

/// Splits "HOST:PORT" or "[V6]:PORT"; throws std::invalid_argument on a malformed address.
boost::asio::ip::tcp::endpoint parse_endpoint(const std::string& text);

/// The completion of a relay task spawned with co_spawn: logs the exception it ended with, if
/// any, instead of letting it escape the I/O thread.
void log_task_failure(std::exception_ptr error);

/// What every listener of one relay checks before a connection reaches its door: the
/// per-address connect throttle and the connection limit over all doors.
/// Threading: used only by accept loops, which all run on the accept context (one thread), so it
/// needs no lock.
class Admission {
public:
  enum class Verdict : std::uint8_t { admitted, throttled, at_limit };

  explicit Admission(const Limits& limits);
  /// How many connections the relay has open (the doors' sum); set before any listener starts.
  void count_open_with(std::function<std::int64_t()> open) { open_ = std::move(open); }
  /// Takes a throttle token for the connection's address and checks the connection limit;
  /// logs refusals (at most one line a second for each reason).
  Verdict check(const boost::asio::ip::tcp::endpoint& remote);
  /// Whether the relay has max_connections open; any thread.
  bool at_connection_limit() const {
    return open_ && open_() >= static_cast<std::int64_t>(limits_.max_connections);
  }

private:
  void log_refusal();
  void log_throttled();

  const Limits& limits_;
  std::function<std::int64_t()> open_;
  ConnectThrottle throttle_;
  std::chrono::steady_clock::time_point last_refusal_log_{};
  std::uint64_t refusals_since_log_ = 0;
  std::chrono::steady_clock::time_point last_throttle_log_{};
  std::uint64_t throttled_since_log_ = 0;
};

/// Threading: start() and close() on the accept context; the handlers' threads are given below.
/// Outlives the I/O threads' run (its handshakes capture it).
class Listener {
public:
  struct Handlers {
    /// Turns away a connection the admission refused: best effort and never blocking, so a
    /// client that does not read cannot hold up the accept loop.
    std::function<void(boost::asio::ip::tcp::socket&, std::string_view why)> refuse;
    /// A plaintext connection, still on the accept context (the door places it), and its far
    /// end as accept() gave it.
    std::function<void(boost::asio::ip::tcp::socket, const boost::asio::ip::tcp::endpoint&)>
        accepted;
    /// A connection after its TLS handshake, on the connection's own context; only while the
    /// listener is open.
    std::function<void(std::unique_ptr<Transport>, std::chrono::steady_clock::time_point)> secured;
  };

  /// Binds and listens on `endpoint` (throws boost::system::system_error when it cannot).
  /// `tls`: null for plaintext. `door` names the door in logs; `counters` is where its
  /// refusals and failed handshakes are counted.
  Listener(IoContexts& io, Admission& admission, const Limits& limits, std::string_view door,
           DoorCounters& counters, const boost::asio::ip::tcp::endpoint& endpoint,
           std::unique_ptr<TlsContextHolder> tls);

  boost::asio::ip::tcp::endpoint endpoint() const { return bound_; }
  TlsContextHolder* tls() const noexcept { return tls_.get(); }
  bool closed() const noexcept { return closed_.load(); }

  void start(Handlers handlers);
  /// Stops accepting and cancels the TLS handshakes in progress (else a silent client would
  /// hold the shutdown for the whole handshake timeout).
  void close();

private:
  void handshake(boost::asio::ip::tcp::socket socket, const boost::asio::ip::tcp::endpoint& remote);
  void cancel_handshakes();

  IoContexts& io_;
  Admission& admission_;
  const Limits& limits_;
  std::string_view door_;
  DoorCounters& counters_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ip::tcp::endpoint bound_;
  std::unique_ptr<TlsContextHolder> tls_;
  Handlers handlers_;
  std::atomic<bool> closed_{false};
  // TLS handshakes in progress; entries leave on the handshake's strand.
  struct PendingHandshake {
    boost::asio::any_io_executor executor;
    std::shared_ptr<boost::asio::cancellation_signal> cancel;
  };
  std::mutex handshakes_mutex_;
  std::unordered_map<std::uint64_t, PendingHandshake> handshakes_;
  std::uint64_t next_handshake_ = 0;  // guarded by handshakes_mutex_
};

}  // namespace switchboard::core::transport
