// The gRPC door: its listener (TLS terminated here, ALPN h2, files watched for changes), the
// gateway it hands each connection to, and the HTTP/2 transport counters it exports.
#pragma once

#include <atomic>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "grpc_gateway/carrier.hpp"
#include "grpc_gateway/guard_connection.hpp"
#include "relay/door.hpp"
#include "relay/relay_context.hpp"
#include "transport/io_contexts.hpp"
#include "transport/listener.hpp"
#include "transport/tls.hpp"

namespace switchboard::gateway {

class Gateway;

struct GrpcDoorConfig {
  /// "HOST:PORT"; empty turns the door off (it then only reports zero counters).
  std::string listen = "127.0.0.1:7401";
  /// TLS on this door when `tls.grpc` is set; the files are re-read every
  /// `tls.grpc_refresh_seconds`.
  core::transport::TlsConfig tls;
  /// How calls for channels served by other relays of the cluster are carried there.
  CarryOptions carry;
};

/// Threading: as core::Door says; calls run on strands over the relay's I/O contexts.
class GrpcDoor final : public core::Door {
public:
  /// Binds the listener and starts the gRPC server; throws when the address cannot be bound.
  GrpcDoor(core::RelayContext& context, core::transport::IoContexts& io,
           core::transport::Admission& admission, GrpcDoorConfig config);
  ~GrpcDoor() override;
  GrpcDoor(const GrpcDoor&) = delete;
  GrpcDoor& operator=(const GrpcDoor&) = delete;

  void start() override;
  void drain() override;
  core::DrainProgress drain_progress() const override;
  void terminate() override;
  void stop(std::chrono::system_clock::time_point deadline) override;
  std::int64_t open_connections() const override;
  bool reload_tls() override;
  core::DoorDescription describe() const override;
  void write_metrics(core::MetricsWriter& out) const override;

private:
  /// Hands a connection (after its TLS handshake, if any) to the gateway.
  void adopt(std::unique_ptr<core::transport::Transport> transport);
  /// Reloads the TLS files when they change (gRPC clients expect the server to pick up renewed
  /// certificates by itself).
  void watch_tls();

  core::RelayContext& context_;
  core::transport::IoContexts& io_;
  GrpcDoorConfig config_;
  TransportCounters transports_;  // outlives the gateway, which counts into it
  std::unique_ptr<core::transport::Listener> listener_;  // null: the door is off
  std::unique_ptr<Gateway> gateway_;
  std::unique_ptr<boost::asio::steady_timer> tls_watch_;
  std::atomic<bool> draining_{false};
};

}  // namespace switchboard::gateway
