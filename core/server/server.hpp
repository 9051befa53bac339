// The relay process: owns the io_context, its threads, the acceptor and the shared context.
#pragma once

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "auth/authenticator.hpp"
#include "relay/relay_context.hpp"
#include "net/tls.hpp"
#include "registry/limits.hpp"
#include "server/connect_throttle.hpp"
#include "switchboard/wire/uuid.hpp"

namespace switchboard::core::net {
class Session;
}
namespace switchboard::gateway {
class Gateway;
}

namespace switchboard::core {

class AdminServer;

struct ServerConfig {
  std::string listen = "127.0.0.1:7400";
  /// The gRPC gateway's address; empty disables it (as does a build without gRPC).
  std::string grpc_listen = "127.0.0.1:7401";
  unsigned threads = 0;  ///< 0: one per core
  /// Which I/O thread runs a plaintext native connection: "channel" (the thread its HELLO's
  /// channel hashes to, so one channel's hand-offs stay on one thread) or "round_robin".
  std::string placement = "channel";
  /// Microseconds an I/O thread keeps polling for work after its last event before it sleeps.
  /// Waking a sleeping core costs far more than a round trip on loopback or a LAN (tens of
  /// microseconds on virtual machines), so a thread that polls a little answers the next message
  /// of a conversation at once; an idle relay sleeps. 0 sleeps at once.
  unsigned idle_spin_us = 100;
  /// The HTTP admin endpoint (metrics, health, introspection); empty disables it.
  std::string admin_listen = "127.0.0.1:7402";
  /// Whether the admin endpoint serves /channels (channel and peer ids: off unless asked).
  bool admin_introspection = false;
  std::string log_level = "info";   ///< read by the program, not by Server
  std::string log_format = "text";  ///< text or json; read by the program, not by Server
  Limits limits;
  /// Token checks on both doors (open by default: tokens are ignored).
  auth::AuthConfig auth;
  net::TlsConfig tls;
};

/// Splits "HOST:PORT" or "[V6]:PORT"; throws std::invalid_argument on a malformed address.
boost::asio::ip::tcp::endpoint parse_endpoint(const std::string& text);

class Server {
public:
  /// Binds the listener; throws on an invalid configuration or an address that cannot be bound.
  explicit Server(ServerConfig config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// The bound core address (with the port chosen by the system when 0 was asked for).
  boost::asio::ip::tcp::endpoint core_endpoint() const { return bound_; }
  /// The gateway's "HOST:PORT", or empty when it is off.
  std::string grpc_address() const;
  int grpc_port() const;
  /// The bound admin endpoint, or nothing when it is off.
  std::optional<boost::asio::ip::tcp::endpoint> admin_endpoint() const;
  /// True from the moment shutdown() is called.
  bool draining() const noexcept { return shutting_down_.load(); }

  /// Starts accepting on the I/O threads and returns.
  void start();
  /// Stops admitting, drains every session (bounded by the drain timeout) and lets run() return.
  /// Safe to call from any thread, more than once.
  void shutdown();
  /// Blocks until the server has shut down and every thread has ended.
  void wait();
  /// Installs SIGINT/SIGTERM handlers that call shutdown(), and a SIGHUP handler that calls
  /// reload_tls().
  void handle_signals();
  /// Re-reads the TLS doors' certificate files: new connections use them, live ones keep
  /// theirs. A file that fails to load is logged and the previous certificates stay. Returns
  /// whether the new files are in use (false also when no door has TLS).
  bool reload_tls();

  RelayContext& context() noexcept { return *context_; }

private:
  /// The front doors share the accept loop, the connection limit and the per-address throttle.
  enum class Door : std::uint8_t { native, grpc };

  /// Runs `io` on this thread until it stops, polling for `spin` before each sleep.
  static void run_io(boost::asio::io_context& io, std::chrono::microseconds spin);
  void accept_loop_start(boost::asio::ip::tcp::acceptor& acceptor, Door door);
  /// Binds the gRPC door's listener and starts the gateway (grpc_door.cpp).
  void open_grpc_door();
  /// Hands an accepted gRPC-door connection (after its TLS handshake) to the gateway.
  void adopt_grpc(std::unique_ptr<net::Transport> transport);
  /// Reloads the gRPC door's TLS files when they change (every tls.grpc_refresh_seconds).
  void watch_grpc_tls();
  /// The context of the next session, round-robin over the I/O threads.
  boost::asio::io_context& next_context();
  /// The context every plaintext session of `channel` runs on (placement "channel").
  boost::asio::io_context& channel_context(const Uuid& channel);
  /// Waits (on io_) for a plaintext connection's first bytes, then starts its session on the
  /// context its HELLO's channel names.
  void place_session(boost::asio::ip::tcp::socket socket);
  /// The same connection, served by `target` from now on (no operation may be outstanding).
  static boost::asio::ip::tcp::socket move_to(boost::asio::ip::tcp::socket socket,
                                              boost::asio::io_context& target);
  void start_session(std::unique_ptr<net::Transport> transport,
                     std::chrono::steady_clock::time_point accepted_at);
  void start_tls_session(boost::asio::ip::tcp::socket socket, Door door);
  void cancel_handshakes();
  void wait_for_signal();
  void begin_drain();
  void stop_gateway();
  void track(const std::shared_ptr<net::Session>& session, std::uint64_t id);
  void log_refusal();
  void log_throttled();
  void log_summary();

  ServerConfig config_;
  std::unique_ptr<RelayContext> context_;
  std::unique_ptr<net::TlsContextHolder> native_tls_;  // null: the native door is plaintext
  std::unique_ptr<net::TlsContextHolder> grpc_tls_;    // null: the gRPC door is plaintext
  // TLS handshakes in progress, cancelled when the relay drains (else a silent client would hold
  // the shutdown for the whole handshake timeout). Entries leave on the handshake's strand.
  struct PendingHandshake {
    boost::asio::any_io_executor executor;
    std::shared_ptr<boost::asio::cancellation_signal> cancel;
  };
  std::mutex handshakes_mutex_;
  std::unordered_map<std::uint64_t, PendingHandshake> handshakes_;
  std::uint64_t next_handshake_ = 0;  // guarded by handshakes_mutex_
  // Plaintext connections waiting for their first bytes before placement; touched only on io_.
  struct PendingPlacement;
  std::unordered_map<std::uint64_t, std::shared_ptr<PendingPlacement>> placements_;
  std::uint64_t next_placement_ = 0;
  // I/O thread 0 runs io_ (acceptor, admin, signals, gateway calls, its share of sessions);
  // thread i runs workers_[i - 1]. Each context has one thread, so a hand-off between two
  // sessions of one thread is a queue push, never a wake-up of another thread.
  // Not built with concurrency hint 1: that hint queues a post made on the context's own thread
  // privately until the running handler returns, so a post from another thread made later
  // could run first. Sessions run on these contexts without a strand and need posts in order.
  boost::asio::io_context io_;
  std::vector<std::unique_ptr<boost::asio::io_context>> workers_;
  std::atomic<std::size_t> next_worker_{0};
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ip::tcp::endpoint bound_;
  // The gRPC door's listener (closed when the gateway is off) and its TLS file watcher.
  boost::asio::ip::tcp::acceptor grpc_acceptor_;
  boost::asio::ip::tcp::endpoint grpc_bound_;
  std::unique_ptr<boost::asio::steady_timer> grpc_tls_watch_;
  std::unique_ptr<boost::asio::signal_set> signals_;
  std::unique_ptr<gateway::Gateway> gateway_;
  std::unique_ptr<AdminServer> admin_;
  std::chrono::system_clock::time_point started_ = std::chrono::system_clock::now();
  std::chrono::steady_clock::time_point last_refusal_log_{};
  std::uint64_t refusals_since_log_ = 0;
  // Touched only by the accept coroutines (both on io_, which one thread runs), so these
  // need no lock.
  ConnectThrottle connect_throttle_;
  std::chrono::steady_clock::time_point last_throttle_log_{};
  std::uint64_t throttled_since_log_ = 0;
  bool summary_logged_ = false;
  // Keeps the I/O threads running until the gateway has shut down (its calls end on them).
  std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guards_;
  std::thread gateway_stopper_;
  std::vector<std::thread> threads_;
  std::mutex sessions_mutex_;
  std::unordered_map<std::uint64_t, std::weak_ptr<net::Session>> sessions_;
  std::atomic<std::uint64_t> next_connection_id_{1};
  std::atomic<bool> shutting_down_{false};
  std::atomic<int> signals_seen_{0};
};

}  // namespace switchboard::core
