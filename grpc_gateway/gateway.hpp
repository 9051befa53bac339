// The gRPC door: owns the grpc::Server and the service adapting each RPC onto the registry.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "net/server_context.hpp"
#include "net/tls.hpp"

namespace switchboard::gateway {

class Gateway {
public:
  /// Starts serving on `listen` (HOST:PORT, port 0 picks one), over TLS when `tls.grpc` is on
  /// (gRPC re-reads the certificate files every `tls.grpc_refresh_seconds`). Throws
  /// std::runtime_error when the address cannot be bound.
  /// Calls run on strands spread over `executors` (the relay's I/O threads; at least one).
  Gateway(core::net::ServerContext& context, std::vector<boost::asio::any_io_executor> executors,
          const std::string& listen, const core::net::TlsConfig& tls = {});
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  std::string address() const { return address_; }
  int port() const { return port_; }

  /// Stops admitting streams; Respond peers leave as soon as they have no stream in flight.
  void drain();
  /// Ends every call still open at `deadline` and stops the server.
  void shutdown(std::chrono::system_clock::time_point deadline);

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string address_;
  int port_ = 0;
};

}  // namespace switchboard::gateway
