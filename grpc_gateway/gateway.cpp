// The gRPC server: service registration, health and reflection, draining and shutdown.
#include "grpc_gateway/gateway.hpp"

#include <grpc/health/v1/health.pb.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <spdlog/spdlog.h>

#include <stdexcept>

#include "grpc_gateway/broadcast_call.hpp"
#include "grpc_gateway/heap_trim.hpp"
#include "grpc_gateway/presence_calls.hpp"
#include "grpc_gateway/requests_call.hpp"
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
  grpc::ServerBidiReactor<pb::RequestsClientMessage, pb::RequestsServerMessage>* Requests(
      grpc::CallbackServerContext* context) override {
    return RequestsCall::start(gateway_, context);
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

// TLS credentials that follow the files: gRPC's file watcher re-reads them on an interval and
// keeps the previous pair when the new files do not load or do not match.
std::shared_ptr<grpc::ServerCredentials> tls_credentials(const core::net::TlsConfig& tls) {
  namespace tls_api = grpc::experimental;
  // Fail at start-up with a clear message rather than serving with no certificate.
  core::net::make_server_tls_context(tls);
  auto provider = std::make_shared<tls_api::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, tls.mutual() ? tls.client_ca_file : std::string(),
      tls.grpc_refresh_seconds);
  tls_api::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (tls.mutual()) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return tls_api::TlsServerCredentials(options);
}

}  // namespace

struct Gateway::Impl {
  Impl(core::net::ServerContext& core, std::vector<boost::asio::any_io_executor> executors)
      : context(core, std::move(executors)), service(context) {}
  GatewayContext context;
  Service service;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<HeapTrimmer> trimmer;
};

Gateway::Gateway(core::net::ServerContext& context,
                 std::vector<boost::asio::any_io_executor> executors, const std::string& listen,
                 const core::net::TlsConfig& tls)
    : impl_(std::make_unique<Impl>(context, std::move(executors))) {
  tune_heap();
  // gRPC serves grpc.health.v1.Health from its own upb code, which leaves nothing in protobuf's
  // generated pool, where reflection resolves the services it lists: this reference links the
  // health proto's descriptor into the relay, so reflection clients can describe every service.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      listen, tls.grpc ? tls_credentials(tls) : grpc::InsecureServerCredentials(), &port_);
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
  impl_->trimmer =
      HeapTrimmer::start(impl_->context.timers, context.counters, std::chrono::seconds(1));
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
  if (impl_->trimmer) impl_->trimmer->stop();
  if (!impl_->server) return;
  impl_->server->Shutdown(deadline);
  impl_->server->Wait();
  impl_->server.reset();
}

}  // namespace switchboard::gateway
