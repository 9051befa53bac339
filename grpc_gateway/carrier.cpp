// Carried calls: the channels to the other relays, the upstream calls, and the message pumps.
#include "grpc_gateway/carrier.hpp"

#include <chrono>

namespace switchboard::gateway {
namespace {

// Beyond this many relay addresses the cache starts afresh: addresses come from the membership
// view, so only a cluster that keeps changing addresses gets here.
constexpr std::size_t kMaxOwnerChannels = 256;

std::shared_ptr<grpc::ChannelCredentials> make_credentials(const CarryOptions& options) {
  if (!options.tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options.ca_pem;
  ssl.pem_private_key = options.key_pem;
  ssl.pem_cert_chain = options.cert_pem;
  return grpc::SslCredentials(ssl);
}

void start_upstream(pb::SwitchboardService::Stub& stub, grpc::ClientContext* context,
                    grpc::ClientBidiReactor<pb::SendRequest, pb::SendResponse>* reactor) {
  stub.async()->Send(context, reactor);
}
void start_upstream(pb::SwitchboardService::Stub& stub, grpc::ClientContext* context,
                    grpc::ClientBidiReactor<pb::BroadcastRequest, pb::BroadcastResponse>* reactor) {
  stub.async()->Broadcast(context, reactor);
}
void start_upstream(pb::SwitchboardService::Stub& stub, grpc::ClientContext* context,
                    grpc::ClientBidiReactor<pb::RespondRequest, pb::RespondResponse>* reactor) {
  stub.async()->Respond(context, reactor);
}

std::uint64_t message_bytes(const google::protobuf::Message& message) {
  return static_cast<std::uint64_t>(message.ByteSizeLong());
}

}  // namespace

OwnerChannels::OwnerChannels(CarryOptions options, core::Counters& counters)
    : options_(std::move(options)), counters_(counters), credentials_(make_credentials(options_)) {}

std::shared_ptr<pb::SwitchboardService::Stub> OwnerChannels::stub(const std::string& address) {
  const std::lock_guard lock(mutex_);
  if (auto found = stubs_.find(address); found != stubs_.end()) return found->second;
  if (stubs_.size() >= kMaxOwnerChannels) stubs_.clear();
  grpc::ChannelArguments arguments;
  // Room for a full message plus its framing, as the owner's server allows.
  arguments.SetMaxReceiveMessageSize(options_.max_message + 64 * 1024);
  arguments.SetMaxSendMessageSize(options_.max_message + 64 * 1024);
  auto stub = std::shared_ptr<pb::SwitchboardService::Stub>(
      pb::SwitchboardService::NewStub(grpc::CreateCustomChannel(address, credentials_, arguments)));
  stubs_.emplace(address, stub);
  return stub;
}

std::string carry_target(const grpc::CallbackServerContext* context,
                         const cluster::Verdict& where) {
  if (where.kind != cluster::Verdict::Kind::redirect || where.owner.grpc.empty()) return {};
  const auto& metadata = context->client_metadata();
  if (metadata.find(kCarriedByKey) != metadata.end()) return {};
  return where.owner.grpc;
}

void prepare_upstream(grpc::ClientContext& upstream, const grpc::CallbackServerContext& caller,
                      const CarryOptions& options) {
  if (caller.deadline() != std::chrono::system_clock::time_point::max()) {
    upstream.set_deadline(caller.deadline());
  }
  const auto& metadata = caller.client_metadata();
  if (auto token = metadata.find("authorization"); token != metadata.end()) {
    upstream.AddMetadata("authorization", std::string(token->second.data(), token->second.size()));
  }
  upstream.AddMetadata(kCarriedByKey, options.node_id.empty() ? "relay" : options.node_id);
}

grpc::Status carried_status(grpc::CallbackServerContext* caller,
                            const grpc::ClientContext& upstream, const grpc::Status& status,
                            const std::string& address) {
  bool from_owner = false;
  for (const auto& [key, value] : upstream.GetServerTrailingMetadata()) {
    const std::string_view name(key.data(), key.size());
    if (name.starts_with("switchboard-")) {
      caller->AddTrailingMetadata(std::string(name), std::string(value.data(), value.size()));
      from_owner = from_owner || name == "switchboard-status";
    }
  }
  if (status.ok() || from_owner || status.error_code() != grpc::StatusCode::UNAVAILABLE) {
    return status;
  }
  return {grpc::StatusCode::UNAVAILABLE,
          "lost the relay serving the channel (" + address + "): " + status.error_message()};
}

// ---- BidiCarrier ----

template <class Req, class Resp>
BidiCarrier<Req, Resp>::BidiCarrier(OwnerChannels& channels, Serial& serial, Downstream& downstream,
                                    grpc::CallbackServerContext* caller,
                                    std::shared_ptr<void> owner)
    : channels_(channels),
      serial_(serial),
      downstream_(downstream),
      caller_(caller),
      owner_(std::move(owner)) {}

template <class Req, class Resp>
void BidiCarrier<Req, Resp>::start(const std::string& address, Req first) {
  serial_.assert_here();
  auto& counters = channels_.counters();
  counters.carried_calls_total.fetch_add(1, std::memory_order_relaxed);
  counters.carried_calls_open.fetch_add(1, std::memory_order_relaxed);
  counters.carried_bytes_to_owner.fetch_add(message_bytes(first), std::memory_order_relaxed);
  stub_ = channels_.stub(address);
  address_ = address;
  prepare_upstream(upstream_, *caller_, channels_.options());
  up_ = std::move(first);
  start_upstream(*stub_, &upstream_, this);
  // The upstream call ends (OnDone) only once its reads have: its last messages and its status
  // reach the caller in order.
  hold_ = true;
  this->AddHold();
  this->StartWrite(&up_);
  upstream_reading_ = true;
  this->StartRead(&down_);
  this->StartCall();
}

template <class Req, class Resp>
void BidiCarrier<Req, Resp>::OnWriteDone(bool ok) {
  dispatch([this, ok] { upstream_write_done(ok); });
}
template <class Req, class Resp>
void BidiCarrier<Req, Resp>::OnReadDone(bool ok) {
  dispatch([this, ok] { upstream_read_done(ok); });
}
template <class Req, class Resp>
void BidiCarrier<Req, Resp>::OnDone(const grpc::Status& status) {
  dispatch([this, status] { upstream_done(status); });
}

// The owner took the caller's message: read the next one.
template <class Req, class Resp>
void BidiCarrier<Req, Resp>::upstream_write_done(bool ok) {
  serial_.assert_here();
  // A failed write means the upstream call is ending; its OnDone finishes the caller's.
  if (!ok || downstream_gone_ || downstream_finished_) return;
  downstream_.StartRead(&up_);
}

template <class Req, class Resp>
void BidiCarrier<Req, Resp>::downstream_read_done(bool ok) {
  serial_.assert_here();
  if (downstream_gone_ || downstream_finished_ || upstream_done_) return;
  if (!ok) {
    // The caller half-closed, or went away (its cancellation ends the upstream call too).
    if (caller_->IsCancelled()) {
      abandon();
    } else {
      this->StartWritesDone();
    }
    return;
  }
  channels_.counters().carried_bytes_to_owner.fetch_add(message_bytes(up_),
                                                        std::memory_order_relaxed);
  this->StartWrite(&up_);
}

// A message from the owner: pass it on; the next read waits until the caller took it.
template <class Req, class Resp>
void BidiCarrier<Req, Resp>::upstream_read_done(bool ok) {
  serial_.assert_here();
  upstream_reading_ = false;
  if (!ok || downstream_gone_ || downstream_finished_) {
    release_hold();
    return;
  }
  channels_.counters().carried_bytes_from_owner.fetch_add(message_bytes(down_),
                                                          std::memory_order_relaxed);
  downstream_writing_ = true;
  downstream_.StartWrite(&down_);
}

template <class Req, class Resp>
void BidiCarrier<Req, Resp>::downstream_write_done(bool ok) {
  serial_.assert_here();
  downstream_writing_ = false;
  if (!ok) {
    abandon();  // the caller stopped reading
  } else if (!downstream_gone_ && !upstream_done_) {
    upstream_reading_ = true;
    this->StartRead(&down_);
    return;
  }
  if (upstream_done_) finish_downstream();
}

template <class Req, class Resp>
void BidiCarrier<Req, Resp>::downstream_cancelled() {
  serial_.assert_here();
  abandon();
}

// Nothing more goes to the caller: the upstream call is cancelled and let end.
template <class Req, class Resp>
void BidiCarrier<Req, Resp>::abandon() {
  if (downstream_gone_) return;
  downstream_gone_ = true;
  upstream_.TryCancel();
  if (!upstream_reading_) release_hold();
}

template <class Req, class Resp>
void BidiCarrier<Req, Resp>::release_hold() {
  if (!hold_) return;
  hold_ = false;
  this->RemoveHold();
}

template <class Req, class Resp>
void BidiCarrier<Req, Resp>::upstream_done(const grpc::Status& status) {
  serial_.assert_here();
  upstream_done_ = true;
  status_ = status;
  channels_.counters().carried_calls_open.fetch_sub(1, std::memory_order_relaxed);
  if (!downstream_writing_) finish_downstream();
  maybe_release();
}

template <class Req, class Resp>
void BidiCarrier<Req, Resp>::finish_downstream() {
  if (downstream_finished_) return;
  downstream_finished_ = true;
  downstream_.Finish(carried_status(caller_, upstream_, status_, address_));
}

template <class Req, class Resp>
void BidiCarrier<Req, Resp>::downstream_done() {
  serial_.assert_here();
  downstream_done_ = true;
  maybe_release();
}

template <class Req, class Resp>
void BidiCarrier<Req, Resp>::maybe_release() {
  if (downstream_done_ && upstream_done_) owner_.reset();
}

template class BidiCarrier<pb::SendRequest, pb::SendResponse>;
template class BidiCarrier<pb::BroadcastRequest, pb::BroadcastResponse>;
template class BidiCarrier<pb::RespondRequest, pb::RespondResponse>;

// ---- ListPeers ----

void carry_list_peers(OwnerChannels& channels, const std::string& address,
                      grpc::CallbackServerContext* caller, grpc::ServerUnaryReactor* reactor,
                      const pb::ListPeersRequest* request, pb::ListPeersResponse* response) {
  struct Upstream {
    grpc::ClientContext context;
    std::shared_ptr<pb::SwitchboardService::Stub> stub;
    std::string address;
  };
  auto& counters = channels.counters();
  counters.carried_calls_total.fetch_add(1, std::memory_order_relaxed);
  counters.carried_calls_open.fetch_add(1, std::memory_order_relaxed);
  counters.carried_bytes_to_owner.fetch_add(message_bytes(*request), std::memory_order_relaxed);
  auto upstream = std::make_shared<Upstream>();
  upstream->stub = channels.stub(address);
  upstream->address = address;
  prepare_upstream(upstream->context, *caller, channels.options());
  // The request and response belong to the caller's call, which lasts until Finish.
  upstream->stub->async()->ListPeers(
      &upstream->context, request, response,
      [upstream, caller, reactor, response, &counters](grpc::Status status) {
        counters.carried_calls_open.fetch_sub(1, std::memory_order_relaxed);
        counters.carried_bytes_from_owner.fetch_add(message_bytes(*response),
                                                    std::memory_order_relaxed);
        reactor->Finish(carried_status(caller, upstream->context, status, upstream->address));
      });
}

// ---- WatchCarrier ----

WatchCarrier::WatchCarrier(OwnerChannels& channels, Serial& serial, Downstream& downstream,
                           grpc::CallbackServerContext* caller, std::shared_ptr<void> owner)
    : channels_(channels),
      serial_(serial),
      downstream_(downstream),
      caller_(caller),
      owner_(std::move(owner)) {}

void WatchCarrier::start(const std::string& address, const pb::WatchPeersRequest& request) {
  serial_.assert_here();
  auto& counters = channels_.counters();
  counters.carried_calls_total.fetch_add(1, std::memory_order_relaxed);
  counters.carried_calls_open.fetch_add(1, std::memory_order_relaxed);
  counters.carried_bytes_to_owner.fetch_add(message_bytes(request), std::memory_order_relaxed);
  stub_ = channels_.stub(address);
  address_ = address;
  prepare_upstream(upstream_, *caller_, channels_.options());
  request_ = request;
  stub_->async()->WatchPeers(&upstream_, &request_, this);
  hold_ = true;
  AddHold();
  upstream_reading_ = true;
  StartRead(&down_);
  StartCall();
}

void WatchCarrier::OnReadDone(bool ok) {
  dispatch([this, ok] { upstream_read_done(ok); });
}
void WatchCarrier::OnDone(const grpc::Status& status) {
  dispatch([this, status] { upstream_done(status); });
}

void WatchCarrier::upstream_read_done(bool ok) {
  serial_.assert_here();
  upstream_reading_ = false;
  if (!ok || downstream_gone_ || downstream_finished_) {
    if (hold_) {
      hold_ = false;
      RemoveHold();
    }
    return;
  }
  channels_.counters().carried_bytes_from_owner.fetch_add(message_bytes(down_),
                                                          std::memory_order_relaxed);
  downstream_writing_ = true;
  downstream_.StartWrite(&down_);
}

void WatchCarrier::downstream_write_done(bool ok) {
  serial_.assert_here();
  downstream_writing_ = false;
  if (!ok) {
    abandon();
  } else if (!downstream_gone_ && !upstream_done_) {
    upstream_reading_ = true;
    StartRead(&down_);
    return;
  }
  if (upstream_done_) finish_downstream();
}

void WatchCarrier::downstream_cancelled() {
  serial_.assert_here();
  abandon();
}

void WatchCarrier::abandon() {
  if (downstream_gone_) return;
  downstream_gone_ = true;
  upstream_.TryCancel();
  if (!upstream_reading_ && hold_) {
    hold_ = false;
    RemoveHold();
  }
}

void WatchCarrier::upstream_done(const grpc::Status& status) {
  serial_.assert_here();
  upstream_done_ = true;
  status_ = status;
  channels_.counters().carried_calls_open.fetch_sub(1, std::memory_order_relaxed);
  if (!downstream_writing_) finish_downstream();
  if (downstream_done_) owner_.reset();
}

void WatchCarrier::finish_downstream() {
  if (downstream_finished_) return;
  downstream_finished_ = true;
  downstream_.Finish(carried_status(caller_, upstream_, status_, address_));
}

void WatchCarrier::downstream_done() {
  serial_.assert_here();
  downstream_done_ = true;
  if (upstream_done_) owner_.reset();
}

}  // namespace switchboard::gateway
