// The gRPC door: owns the grpc::Server, the service adapting each RPC onto the registry, and the
// guarded connections it serves (each accepted by the relay and handed over with adopt()).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "grpc_gateway/carrier.hpp"
#include "relay/relay_context.hpp"
#include "transport/transport.hpp"

namespace switchboard::gateway {

struct TransportCounters;

class Gateway {
public:
  /// Starts the gRPC server with no listening port of its own: the relay accepts the door's
  /// connections (TCP, TLS) and hands each over with adopt().
  /// Calls run on strands spread over `executors` (the relay's I/O threads; at least one).
  /// `transports` (owned by the door, outliving the gateway) counts the connections adopted.
  /// `carry` says how calls are carried to the other relays of a cluster.
  Gateway(core::RelayContext& context, TransportCounters& transports,
          std::vector<boost::asio::any_io_executor> executors, CarryOptions carry = {});
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  /// Serves one accepted client connection: its bytes reach gRPC through the HTTP/2 guard over a
  /// socketpair. Any thread; the connection runs on the transport's executor.
  void adopt(std::unique_ptr<core::transport::Transport> client);
  /// Stops admitting streams; Respond peers leave as soon as they have no stream in flight.
  void drain();
  /// Ends every call still open at `deadline`, closes every connection and stops the server.
  void shutdown(std::chrono::system_clock::time_point deadline);

private:
  void close_connections();

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace switchboard::gateway
