// The gRPC door's listener, its hand-over of connections to the gateway, its drain and stop, and
// its HTTP/2 transport metrics.
#include "grpc_gateway/grpc_door.hpp"

#include <fmt/format.h>

#include <stdexcept>

#include "grpc_gateway/gateway.hpp"
#include "grpc_gateway/h2_guard.hpp"

namespace switchboard::gateway {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

GrpcDoor::GrpcDoor(core::RelayContext& context, core::transport::IoContexts& io,
                   core::transport::Admission& admission, GrpcDoorConfig config)
    : context_(context), io_(io), config_(std::move(config)) {
  if (config_.listen.empty()) return;
  const auto endpoint = core::transport::parse_endpoint(config_.listen);
  std::unique_ptr<core::transport::TlsContextHolder> tls;
  if (config_.tls.grpc) {
    tls = std::make_unique<core::transport::TlsContextHolder>(config_.tls, /*alpn_h2=*/true);
  }
  try {
    listener_ = std::make_unique<core::transport::Listener>(
        io, admission, context.limits, "grpc", context.counters.grpc, endpoint, std::move(tls));
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot listen for gRPC on " + config_.listen + ": " +
                             e.code().message());
  }
  gateway_ = std::make_unique<Gateway>(context, transports_, io.executors(), config_.carry);
}

GrpcDoor::~GrpcDoor() { stop(std::chrono::system_clock::now()); }

void GrpcDoor::start() {
  if (!listener_) return;
  core::transport::Listener::Handlers handlers;
  // A gRPC client speaks first and reads nothing before: a refusal simply closes.
  handlers.refuse = [](tcp::socket& refused, std::string_view /*why*/) {
    boost::system::error_code ignored;
    refused.close(ignored);
  };
  handlers.accepted = [this](tcp::socket socket, const tcp::endpoint& remote) {
    adopt(core::transport::make_tcp_transport(
        core::transport::move_to(std::move(socket), io_.next(), remote.protocol()), remote));
  };
  handlers.secured = [this](std::unique_ptr<core::transport::Transport> transport,
                            std::chrono::steady_clock::time_point /*accepted_at*/) {
    adopt(std::move(transport));
  };
  listener_->start(std::move(handlers));
  watch_tls();
}

void GrpcDoor::adopt(std::unique_ptr<core::transport::Transport> transport) {
  if (gateway_ && !draining_.load()) {
    gateway_->adopt(std::move(transport));
    return;
  }
  transport->close();
}

void GrpcDoor::watch_tls() {
  auto* tls = listener_ ? listener_->tls() : nullptr;
  if (!tls) return;
  if (!tls_watch_) tls_watch_ = std::make_unique<asio::steady_timer>(io_.main());
  tls_watch_->expires_after(std::chrono::seconds(config_.tls.grpc_refresh_seconds));
  tls_watch_->async_wait([this, tls](const boost::system::error_code& ec) {
    if (ec || draining_.load()) return;
    tls->reload_if_changed();
    watch_tls();
  });
}

void GrpcDoor::drain() {
  draining_.store(true);
  if (listener_) listener_->close();
  if (tls_watch_) tls_watch_->cancel();
  if (gateway_) gateway_->drain();
}

// gRPC's own shutdown (in stop()) waits for the calls, so the relay's drain waits for nothing.
core::DrainProgress GrpcDoor::drain_progress() const { return {}; }

// Calls still open at the drain deadline end in stop(), which is given that deadline.
void GrpcDoor::terminate() {}

void GrpcDoor::stop(std::chrono::system_clock::time_point deadline) {
  if (gateway_) gateway_->shutdown(deadline);
}

std::int64_t GrpcDoor::open_connections() const {
  return transports_.transports_open.load(std::memory_order_relaxed);
}

bool GrpcDoor::reload_tls() {
  auto* tls = listener_ ? listener_->tls() : nullptr;
  return tls != nullptr && tls->reload();
}

core::DoorDescription GrpcDoor::describe() const {
  const auto& counters = context_.counters.grpc;
  core::DoorDescription description;
  description.name = "grpc";
  if (listener_) description.endpoint = listener_->endpoint();
  description.tls = listener_ && listener_->tls() != nullptr;
  description.counters = &counters;
  description.open_key = "grpc_calls";
  description.total_key = "grpc_calls";
  description.bytes_in = counters.payload_bytes_in.load();
  description.bytes_out = counters.payload_bytes_out.load();
  return description;
}

void GrpcDoor::write_metrics(core::MetricsWriter& out) const {
  using core::MetricsWriter;
  out.family("switchboard_grpc_transports_open", "gauge",
             "HTTP/2 connections open on the gRPC door.");
  out.sample("switchboard_grpc_transports_open", "",
             MetricsWriter::load(transports_.transports_open));
  out.family("switchboard_grpc_transports_total", "counter",
             "HTTP/2 connections accepted on the gRPC door.");
  out.sample("switchboard_grpc_transports_total", "",
             MetricsWriter::load(transports_.transports_total));
  out.family("switchboard_grpc_refused_streams_total", "counter",
             "gRPC calls refused (REFUSED_STREAM) at the per-connection stream limit.");
  out.sample("switchboard_grpc_refused_streams_total", "",
             MetricsWriter::load(transports_.refused_streams));
  out.family("switchboard_grpc_guard_violations_total", "counter",
             "gRPC-door connections closed by the HTTP/2 guard, by reason.");
  for (std::size_t i = 0; i < kGuardViolationCount; ++i) {
    out.sample("switchboard_grpc_guard_violations_total",
               fmt::format("reason=\"{}\"", violation_name(static_cast<GuardViolation>(i))),
               MetricsWriter::load(transports_.guard_violations[i]));
  }
  if (context_.directory == &core::RelayContext::alone) return;
  const auto& counters = context_.counters;
  out.family("switchboard_cluster_carried_calls_total", "counter",
             "gRPC calls carried to the relay that serves their channel.");
  out.sample("switchboard_cluster_carried_calls_total", "",
             MetricsWriter::load(counters.carried_calls_total));
  out.family("switchboard_cluster_carried_calls_open", "gauge",
             "gRPC calls being carried to the relay that serves their channel.");
  out.sample("switchboard_cluster_carried_calls_open", "",
             MetricsWriter::load(counters.carried_calls_open));
  out.family("switchboard_cluster_carried_bytes_total", "counter",
             "Message bytes of carried gRPC calls, by direction.");
  out.sample("switchboard_cluster_carried_bytes_total", "direction=\"to_owner\"",
             MetricsWriter::load(counters.carried_bytes_to_owner));
  out.sample("switchboard_cluster_carried_bytes_total", "direction=\"from_owner\"",
             MetricsWriter::load(counters.carried_bytes_from_owner));
}

}  // namespace switchboard::gateway
