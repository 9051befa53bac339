// The relay process: owns the I/O contexts and their threads, the shared context, the doors,
// the admin endpoint and signals, and sequences start-up and the drain.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "auth/authenticator.hpp"
#include "registry/limits.hpp"
#include "relay/door.hpp"
#include "relay/relay_context.hpp"
#include "transport/io_contexts.hpp"
#include "transport/listener.hpp"
#include "transport/tls.hpp"

namespace switchboard::core {

class AdminServer;
class ClusterNode;

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
  /// Whether the program restarts itself with malloc's heap on transparent huge pages
  /// (server/heap_tuning.hpp); read by the program, not by Server.
  bool heap_huge_pages = true;
  Limits limits;
  /// Token checks on both doors (open by default: tokens are ignored).
  auth::AuthConfig auth;
  transport::TlsConfig tls;
  /// Cluster membership (docs/CLUSTER.md); off while `etcd` is empty.
  struct Cluster {
    std::string etcd;            ///< etcd endpoints, http[s]://HOST:PORT[,...]
    std::string etcd_ca_file;    ///< PEM roots for etcd's certificate; empty: the system's
    std::string etcd_cert_file;  ///< PEM client certificate for etcd, with etcd_key_file
    std::string etcd_key_file;
    unsigned etcd_tls_refresh_seconds = 60;  ///< how often those files are read again
    std::string etcd_user;                   ///< etcd user; empty: no etcd authentication
    std::string etcd_password_file;          ///< its password, the file's first line
    std::string node_id;                     ///< empty: HOSTNAME-XXXXXX, random per process
    std::string advertise;       ///< native HOST:PORT others send peers to; empty: bound address
    std::string advertise_grpc;  ///< gRPC HOST:PORT; empty: the bound gRPC address
    std::string prefix = "/switchboard";
    Milliseconds lease_ttl{3000};  ///< whole seconds
    /// PEM roots the gRPC door verifies the other relays' gRPC doors with when it carries calls
    /// to them (with tls.grpc on); empty: the system's roots.
    std::string ca_file;
  } cluster;
};

using transport::parse_endpoint;

class Server {
public:
  /// Binds the listeners; throws on an invalid configuration or an address that cannot be bound.
  explicit Server(ServerConfig config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// The bound core address (with the port chosen by the system when 0 was asked for).
  boost::asio::ip::tcp::endpoint core_endpoint() const;
  /// The gateway's "HOST:PORT", or empty when it is off.
  std::string grpc_address() const;
  int grpc_port() const;
  /// The bound admin endpoint, or nothing when it is off.
  std::optional<boost::asio::ip::tcp::endpoint> admin_endpoint() const;
  /// True from the moment shutdown() is called.
  bool draining() const noexcept { return shutting_down_.load(); }

  /// Starts accepting on the I/O threads and returns.
  void start();
  /// Stops admitting, drains every door (bounded by the drain timeout) and lets run() return.
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
  /// Runs `io` on this thread until it stops, polling for `spin` before each sleep.
  static void run_io(boost::asio::io_context& io, std::chrono::microseconds spin);
  /// The door named `name` ("native", "grpc"), or null when this relay has none.
  const Door* door(std::string_view name) const;
  void wait_for_signal();
  void begin_drain();
  /// Stops every door by `deadline` (blocks: not on an I/O thread).
  void stop_doors(std::chrono::system_clock::time_point deadline);
  DrainProgress drain_progress() const;
  void log_summary();

  ServerConfig config_;
  std::unique_ptr<RelayContext> context_;
  // Outlives the doors, which reach it through the context.
  std::unique_ptr<ClusterNode> cluster_;
  // I/O thread i runs io_->at(i); thread 0 also runs the listeners, admin and signals.
  std::unique_ptr<transport::IoContexts> io_;
  std::unique_ptr<transport::Admission> admission_;
  // In the order logs and metrics list them: native, then gRPC.
  std::vector<std::unique_ptr<Door>> doors_;
  std::unique_ptr<boost::asio::signal_set> signals_;
  std::unique_ptr<AdminServer> admin_;
  std::chrono::system_clock::time_point started_ = std::chrono::system_clock::now();
  bool summary_logged_ = false;
  // Keeps the I/O threads running until the doors have stopped (gRPC calls end on them).
  std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guards_;
  std::thread door_stopper_;
  std::vector<std::thread> threads_;
  std::atomic<bool> shutting_down_{false};
};

}  // namespace switchboard::core
