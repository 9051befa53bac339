// The gRPC server: service registration, health and reflection, the guarded connections handed
// over by the relay, draining and shutdown.
#include "grpc_gateway/gateway.hpp"

#include <fcntl.h>
#include <grpc/health/v1/health.pb.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_posix.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "grpc_gateway/broadcast_call.hpp"
#include "grpc_gateway/guard_connection.hpp"
#include "grpc_gateway/heap_trim.hpp"
#include "grpc_gateway/presence_calls.hpp"
#include "grpc_gateway/requests_call.hpp"
#include "grpc_gateway/respond_call.hpp"
#include "grpc_gateway/send_call.hpp"

namespace switchboard::gateway {
namespace {

class Service final : public pb::SwitchboardService::CallbackService {
public:
  explicit Service(GatewayContext& gateway) : gateway_(gateway) {}

  grpc::ServerBidiReactor<pb::RespondRequest, pb::RespondResponse>* Respond(
      grpc::CallbackServerContext* context) override {
    return RespondCall::start(gateway_, context);
  }
  grpc::ServerBidiReactor<pb::SendRequest, pb::SendResponse>* Send(
      grpc::CallbackServerContext* context) override {
    return SendCall::start(gateway_, context);
  }
  grpc::ServerBidiReactor<pb::RequestsRequest, pb::RequestsResponse>* Requests(
      grpc::CallbackServerContext* context) override {
    return RequestsCall::start(gateway_, context);
  }
  grpc::ServerBidiReactor<pb::BroadcastRequest, pb::BroadcastResponse>* Broadcast(
      grpc::CallbackServerContext* context) override {
    return BroadcastCall::start(gateway_, context);
  }
  grpc::ServerUnaryReactor* ListPeers(grpc::CallbackServerContext* context,
                                      const pb::ListPeersRequest* request,
                                      pb::ListPeersResponse* response) override {
    return list_peers(gateway_, context, request, response);
  }
  grpc::ServerWriteReactor<pb::WatchPeersResponse>* WatchPeers(
      grpc::CallbackServerContext* context, const pb::WatchPeersRequest* request) override {
    return watch_peers(gateway_, context, request);
  }
  grpc::ServerUnaryReactor* Locate(grpc::CallbackServerContext* context,
                                   const pb::LocateRequest* request,
                                   pb::LocateResponse* response) override {
    return locate(gateway_, context, request, response);
  }

private:
  GatewayContext& gateway_;
};

}  // namespace

struct Gateway::Impl {
  Impl(core::RelayContext& core, TransportCounters& counters,
       std::vector<boost::asio::any_io_executor> executors, CarryOptions carry)
      : context(core, std::move(executors), std::move(carry)),
        service(context),
        transports(counters) {}
  GatewayContext context;
  Service service;
  TransportCounters& transports;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<HeapTrimmer> trimmer;
  H2GuardLimits guard_limits;

  std::mutex connections_mutex;
  std::unordered_map<std::uint64_t, std::weak_ptr<GuardConnection>> connections;
  std::uint64_t next_connection = 1;
  bool closed = false;  // shut down: adopt() closes what it is given
};

Gateway::Gateway(core::RelayContext& context, TransportCounters& transports,
                 std::vector<boost::asio::any_io_executor> executors, CarryOptions carry)
    : impl_(std::make_unique<Impl>(context, transports, std::move(executors), std::move(carry))) {
  // gRPC serves grpc.health.v1.Health from its own upb code, which leaves nothing in protobuf's
  // generated pool, where reflection resolves the services it lists: this reference links the
  // health proto's descriptor into the relay, so reflection clients can describe every service.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.RegisterService(&impl_->service);
  builder.SetMaxReceiveMessageSize(impl_->context.owners.options().max_message);
  // gRPC treats streams beyond its own limit as a connection error; the guard refuses them one
  // by one instead. gRPC announces this value, which the guard rewrites to its own limit.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             std::numeric_limits<std::int32_t>::max());
  impl_->server = builder.BuildAndStart();
  if (!impl_->server) throw std::runtime_error("cannot start the gRPC server");
  if (auto* health = impl_->server->GetHealthCheckService()) {
    health->SetServingStatus("switchboard.v1.SwitchboardService", true);
  }
  const auto& limits = context.limits;
  impl_->guard_limits.max_header_block = limits.grpc_max_header_block;
  impl_->guard_limits.max_streams = limits.grpc_streams_per_connection();
  impl_->guard_limits.control_frames_per_second = limits.grpc_control_frames_per_second;
  impl_->guard_limits.resets_per_second = limits.grpc_resets_per_second;
  impl_->trimmer =
      HeapTrimmer::start(impl_->context.timers, context.counters, std::chrono::seconds(1));
}

Gateway::~Gateway() { shutdown(std::chrono::system_clock::now()); }

void Gateway::adopt(std::unique_ptr<core::transport::Transport> client) {
  auto& counters = impl_->transports;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    spdlog::warn("grpc connection refused reason=socketpair error=\"{}\"", std::strerror(errno));
    client->close();
    return;
  }
  // gRPC's endpoint expects a non-blocking descriptor; it owns fds[1] from here on.
  ::fcntl(fds[1], F_SETFL, ::fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  GuardConnection::GrpcSocket relay_end(client->get_executor());
  boost::system::error_code ec;
  relay_end.assign(boost::asio::local::stream_protocol(), fds[0], ec);
  if (ec) {
    ::close(fds[0]);
    ::close(fds[1]);
    client->close();
    return;
  }
  std::uint64_t id = 0;
  std::shared_ptr<GuardConnection> connection;
  {
    std::lock_guard lock(impl_->connections_mutex);
    if (impl_->closed || !impl_->server) {
      ::close(fds[1]);
      client->close();
      return;
    }
    id = impl_->next_connection++;
    connection = std::make_shared<GuardConnection>(
        std::move(client), std::move(relay_end), impl_->guard_limits,
        impl_->context.limits.handshake_timeout, impl_->context.core.counters.grpc, counters, id);
    impl_->connections.emplace(id, connection);
    grpc::AddInsecureChannelFromFd(impl_->server.get(), fds[1]);
  }
  counters.transports_total.fetch_add(1, std::memory_order_relaxed);
  counters.transports_open.fetch_add(1, std::memory_order_relaxed);
  connection->start([impl = impl_.get(), id, &counters] {
    counters.transports_open.fetch_sub(1, std::memory_order_relaxed);
    std::lock_guard lock(impl->connections_mutex);
    impl->connections.erase(id);
  });
}

void Gateway::close_connections() {
  std::vector<std::shared_ptr<GuardConnection>> live;
  {
    std::lock_guard lock(impl_->connections_mutex);
    impl_->closed = true;
    for (auto& [id, weak] : impl_->connections) {
      if (auto connection = weak.lock()) live.push_back(std::move(connection));
    }
  }
  for (auto& connection : live) connection->close();
}

void Gateway::drain() {
  const auto drainers = impl_->context.drains.drains();
  if (auto* health = impl_->server ? impl_->server->GetHealthCheckService() : nullptr) {
    health->SetServingStatus(false);
  }
  for (auto& drainer : drainers) drainer();
}

void Gateway::shutdown(std::chrono::system_clock::time_point deadline) {
  if (impl_->trimmer) impl_->trimmer->stop();
  if (!impl_->server) return;
  // gRPC ends the calls still open at the deadline; then every connection closes, so that no
  // connection, whatever its state, can hold the server's shutdown.
  boost::asio::steady_timer closer(impl_->context.timers);
  closer.expires_after(std::max(deadline - std::chrono::system_clock::now(),
                                std::chrono::system_clock::duration::zero()));
  closer.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) close_connections();
  });
  impl_->server->Shutdown(deadline);
  close_connections();
  closer.cancel();
  impl_->server->Wait();
  impl_->server.reset();
}

}  // namespace switchboard::gateway
