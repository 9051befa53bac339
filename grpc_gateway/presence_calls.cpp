// Presence RPCs: a snapshot, or a snapshot and every change, for a channel one has not joined.
#include "grpc_gateway/presence_calls.hpp"

#include <deque>

#include "grpc_gateway/auth_checks.hpp"
#include "grpc_gateway/mapping.hpp"
#include "grpc_gateway/serial.hpp"
#include "registry/peer.hpp"

namespace switchboard::gateway {

namespace asio = boost::asio;

namespace {

// The first checks of every call that asks about a channel without joining it: a valid
// channel id, and a token with the presence permission. The refusal to finish with, if any.
std::optional<grpc::Status> check_presence_request(GatewayContext& gateway,
                                                   grpc::CallbackServerContext* context,
                                                   const std::string& channel_text,
                                                   const std::string& token, Uuid& channel,
                                                   core::auth::Grant& grant) {
  const auto parsed = parse_id(channel_text, false);
  if (!parsed || parsed->is_nil()) {
    return invalid_argument(context, channel_text.empty()
                                         ? "channel is required"
                                         : "channel is not a UUID: " + channel_text);
  }
  channel = *parsed;
  return check_token(gateway, context, token, channel, std::nullopt,
                     core::auth::Permission::presence, grant);
}

}  // namespace

grpc::ServerUnaryReactor* list_peers(GatewayContext& gateway, grpc::CallbackServerContext* context,
                                     const pb::ListPeersRequest* request,
                                     pb::ListPeersResponse* response) {
  auto* reactor = context->DefaultReactor();
  Uuid channel_id;
  core::auth::Grant grant;
  if (auto refusal = check_presence_request(gateway, context, request->channel(), request->token(),
                                            channel_id, grant)) {
    reactor->Finish(std::move(*refusal));
    return reactor;
  }
  const auto* channel = &channel_id;
  if (auto where = gateway.core.directory->locate(*channel);
      where.kind != cluster::Verdict::Kind::serve) {
    if (auto address = carry_target(context, where); !address.empty()) {
      carry_list_peers(gateway.owners, address, context, reactor, request, response);
    } else {
      reactor->Finish(to_grpc(context, Status::refused, cluster::served_elsewhere(where)));
    }
    return reactor;
  }
  std::uint64_t version = 0;
  for (const auto& id : gateway.registry.members(*channel, version)) {
    response->add_peers(id.to_string());
  }
  response->set_version(version);
  reactor->Finish(to_grpc(context, Status::ok, ""));
  return reactor;
}

grpc::ServerUnaryReactor* locate(GatewayContext& gateway, grpc::CallbackServerContext* context,
                                 const pb::LocateRequest* request, pb::LocateResponse* response) {
  auto* reactor = context->DefaultReactor();
  Uuid channel_id;
  core::auth::Grant grant;
  if (auto refusal = check_presence_request(gateway, context, request->channel(), request->token(),
                                            channel_id, grant)) {
    reactor->Finish(std::move(*refusal));
    return reactor;
  }
  const auto* channel = &channel_id;
  const auto where = gateway.core.directory->locate(*channel);
  switch (where.kind) {
    case cluster::Verdict::Kind::serve:
      response->set_here(true);
      break;
    case cluster::Verdict::Kind::redirect:
      response->set_node_id(where.owner.node_id);
      response->set_grpc_address(where.owner.grpc);
      response->set_native_address(where.owner.native);
      break;
    case cluster::Verdict::Kind::unavailable:
      reactor->Finish(to_grpc(context, Status::refused, cluster::served_elsewhere(where)));
      return reactor;
  }
  response->set_revision(where.revision);
  reactor->Finish(to_grpc(context, Status::ok, ""));
  return reactor;
}

namespace {

// Streams a channel's presence to a client that is not a member. Every field lives on the
// call's Serial (serial.hpp).
class WatchCall final : public grpc::ServerWriteReactor<pb::WatchPeersResponse>,
                        public core::Peer,
                        public std::enable_shared_from_this<WatchCall> {
public:
  WatchCall(GatewayContext& gateway, grpc::CallbackServerContext* context)
      : gateway_(gateway),
        context_(context),
        serial_(gateway.next_call_executor()),
        token_expiry_(serial_.executor()) {}

  void begin(std::shared_ptr<WatchCall> self, const pb::WatchPeersRequest& request) {
    self_ = std::move(self);
    Uuid channel_id;
    core::auth::Grant grant;
    if (auto refusal = check_presence_request(gateway_, context_, request.channel(),
                                              request.token(), channel_id, grant)) {
      Finish(std::move(*refusal));
      return;
    }
    const auto* channel = &channel_id;
    if (auto where = gateway_.core.directory->locate(*channel);
        where.kind != cluster::Verdict::Kind::serve) {
      if (auto address = carry_target(context_, where); !address.empty()) {
        dispatch([self = shared_from_this(), address, request] {
          if (self->stopped_ || self->done_) return;
          self->carrier_ = std::make_unique<WatchCarrier>(self->gateway_.owners, self->serial_,
                                                          *self, self->context_, self);
          self->carrier_->start(address, request);
        });
      } else {
        Finish(to_grpc(context_, Status::refused, cluster::served_elsewhere(where)));
      }
      return;
    }
    channel_ = *channel;
    dispatch([self = shared_from_this(), grant] {
      self->serial_.assert_here();
      arm_expiry(self->token_expiry_, grant, [self] {
        self->dispatch([self] {
          if (self->stopped_ || self->done_) return;  // after Finish the context may be gone
          self->stop(token_expired(self->gateway_, self->context_, "watch", self->channel_));
        });
      });
      std::vector<Uuid> members;
      std::uint64_t version = 0;
      self->token_ = self->gateway_.registry.watch(self->channel_, self, members, version);
      pb::WatchPeersResponse snapshot;
      auto* update = snapshot.mutable_update();
      update->set_kind(pb::PresenceUpdate::KIND_SNAPSHOT);
      update->set_version(version);
      for (const auto& id : members) update->add_peers(id.to_string());
      // Changes posted during watch() queue behind this handler, so the snapshot goes first.
      self->queue_.push_front(std::move(snapshot));
      self->pump();
    });
  }

  // Called with the registry's lock held: posted, never run here.
  void on_presence(const wire::Presence& event) override {
    serial_.post(
        [self = shared_from_this(), event] {
          self->serial_.assert_here();
          pb::WatchPeersResponse change;
          auto* update = change.mutable_update();
          update->set_kind(event.event == wire::PresenceEvent::joined
                               ? pb::PresenceUpdate::KIND_JOINED
                               : pb::PresenceUpdate::KIND_LEFT);
          update->set_version(event.version);
          for (const auto& id : event.peers) update->add_peers(id.to_string());
          self->queue_.push_back(std::move(change));
          // A watcher that does not read may not hold relay memory without bound.
          if (self->queue_.size() > 100'000) {
            if (self->stopped_ || self->done_) return;  // after Finish the context may be gone
            self->stop(to_grpc(self->context_, Status::slow_consumer, "watcher too slow"));
            return;
          }
          self->pump();
        },
        shared_from_this());
  }
  std::shared_ptr<core::Endpoint> accept_stream(core::StreamOffer) override { return nullptr; }
  bool has_capacity() const override { return false; }
  // A watcher is not a member: the registry never relocates it.
  void relocate(const cluster::Verdict& /*next*/) override {}

  void OnWriteDone(bool ok) override {
    dispatch([self = shared_from_this(), ok] {
      self->serial_.assert_here();
      if (self->carrier_) {
        self->carrier_->downstream_write_done(ok);
        return;
      }
      self->writing_ = false;
      if (!ok) {
        self->stop(grpc::Status::CANCELLED);
        return;
      }
      self->pump();
    });
  }
  void OnCancel() override {
    dispatch([self = shared_from_this()] {
      if (self->carrier_) {
        self->carrier_->downstream_cancelled();
      } else {
        self->stop(grpc::Status::CANCELLED);
      }
    });
  }
  void OnDone() override {
    dispatch([self = shared_from_this()] {
      self->serial_.assert_here();
      if (self->carrier_) self->carrier_->downstream_done();
      self->unwatch();
      self->done_ = true;
      self->self_.reset();
    });
  }

private:
  template <class F>
  void dispatch(F&& handler) {
    serial_.dispatch(std::forward<F>(handler), shared_from_this());
  }
  void pump() {
    if (writing_ || stopped_ || queue_.empty()) return;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    StartWrite(&current_);
  }
  void stop(grpc::Status status) {
    serial_.assert_here();
    if (stopped_ || done_) return;
    stopped_ = true;
    unwatch();
    Finish(status);
  }
  void unwatch() {
    token_expiry_.cancel();
    if (token_ != 0) gateway_.registry.unwatch(channel_, token_);
    token_ = 0;
  }

  GatewayContext& gateway_;
  grpc::CallbackServerContext* context_;
  Serial serial_;
  asio::steady_timer token_expiry_;
  std::shared_ptr<WatchCall> self_;
  Uuid channel_;
  std::uint64_t token_ = 0;
  std::deque<pb::WatchPeersResponse> queue_;
  pb::WatchPeersResponse current_;
  bool writing_ = false;
  bool stopped_ = false;
  bool done_ = false;
  // Set when another relay of the cluster serves the channel: the call is carried there.
  std::unique_ptr<WatchCarrier> carrier_;
};

}  // namespace

grpc::ServerWriteReactor<pb::WatchPeersResponse>* watch_peers(
    GatewayContext& gateway, grpc::CallbackServerContext* context,
    const pb::WatchPeersRequest* request) {
  auto call = std::make_shared<WatchCall>(gateway, context);
  call->begin(call, *request);
  return call.get();
}

}  // namespace switchboard::gateway
