// The gRPC server: service registration, health and reflection, draining and shutdown.
#include "grpc_gateway/gateway.hpp"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <stdexcept>

#include "grpc_gateway/broadcast_call.hpp"
#include "grpc_gateway/presence_calls.hpp"
#include "grpc_gateway/respond_call.hpp"
#include "grpc_gateway/send_call.hpp"

namespace switchboard::gateway {
namespace {

class Service final : public pb::Switchboard::CallbackService {
public:
  explicit Service(GatewayContext& gateway) : gateway_(gateway) {}

  grpc::ServerBidiReactor<pb::RespondClientMessage, pb::RespondServerMessage>* Respond(
      grpc::CallbackServerContext* context) override {
    return RespondCall::start(gateway_, context);
  }
  grpc::ServerBidiReactor<pb::SendClientMessage, pb::SendServerMessage>* Send(
      grpc::CallbackServerContext* context) override {
    return SendCall::start(gateway_, context);
  }
  grpc::ServerBidiReactor<pb::BroadcastClientMessage, pb::BroadcastServerMessage>* Broadcast(
      grpc::CallbackServerContext* context) override {
    return BroadcastCall::start(gateway_, context);
  }
  grpc::ServerUnaryReactor* ListPeers(grpc::CallbackServerContext* context,
                                      const pb::ListPeersRequest* request,
                                      pb::ListPeersResponse* response) override {
    return list_peers(gateway_, context, request, response);
  }
  grpc::ServerWriteReactor<pb::PresenceUpdate>* WatchPeers(
      grpc::CallbackServerContext* context, const pb::WatchPeersRequest* request) override {
    return watch_peers(gateway_, context, request);
  }

private:
  GatewayContext& gateway_;
};

}  // namespace

struct Gateway::Impl {
  Impl(core::net::ServerContext& core, boost::asio::any_io_executor timers)
      : context(core, std::move(timers)), service(context) {}
  GatewayContext context;
  Service service;
  std::unique_ptr<grpc::Server> server;
};

Gateway::Gateway(core::net::ServerContext& context, boost::asio::any_io_executor timers,
                 const std::string& listen)
    : impl_(std::make_unique<Impl>(context, std::move(timers))) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(&impl_->service);
  builder.SetMaxReceiveMessageSize(4 * 1024 * 1024);
  impl_->server = builder.BuildAndStart();
  if (!impl_->server || port_ == 0) {
    throw std::runtime_error("cannot listen for gRPC on " + listen);
  }
  const auto colon = listen.rfind(':');
  address_ = listen.substr(0, colon) + ":" + std::to_string(port_);
  if (auto* health = impl_->server->GetHealthCheckService()) {
    health->SetServingStatus("switchboard.v1.Switchboard", true);
  }
}

Gateway::~Gateway() { shutdown(std::chrono::system_clock::now()); }

void Gateway::drain() {
  std::vector<std::function<void()>> drainers;
  {
    std::lock_guard lock(impl_->context.peers_mutex);
    impl_->context.draining = true;
    for (auto& [id, drainer] : impl_->context.drainers) drainers.push_back(drainer);
  }
  if (auto* health = impl_->server ? impl_->server->GetHealthCheckService() : nullptr) {
    health->SetServingStatus(false);
  }
  for (auto& drainer : drainers) drainer();
}

void Gateway::shutdown(std::chrono::system_clock::time_point deadline) {
  if (!impl_->server) return;
  impl_->server->Shutdown(deadline);
  impl_->server->Wait();
  impl_->server.reset();
}

}  // namespace switchboard::gateway
