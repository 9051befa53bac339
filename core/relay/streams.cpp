// The rules of a new stream, shared by every door.
#include "relay/streams.hpp"

#include <spdlog/spdlog.h>

#include "registry/sender.hpp"

namespace switchboard::core {
namespace {

auth::Decision refusal(Status status, std::string reason) {
  auth::Decision decision;
  decision.status = status;
  decision.reason = std::move(reason);
  return decision;
}

}  // namespace

auth::Decision admit_stream(RelayContext& relay, const StreamRequest& request,
                            const auth::Grant& grant, bool check_sender,
                            std::string_view caller_origin) {
  if (relay.registry.draining()) return refusal(Status::refused, "relay is draining");
  const auto needed = request.kind == wire::StreamKind::broadcast ? auth::Permission::broadcast
                                                                  : auth::Permission::send;
  const auto action = auth::permission_name(needed);
  if (auto allowed = auth::require(grant, needed); !allowed.ok()) {
    record_auth_refusal(relay, allowed, request.door, action, request.channel, request.connection);
    return allowed;
  }
  if (!check_sender) return {};
  // A stream from outside the channel (the gRPC door) may reach a relay that does not serve
  // it; a native peer's channel is always served where it joined.
  if (auto where = relay.directory->locate(request.channel);
      where.kind != cluster::Verdict::Kind::serve) {
    return refusal(Status::refused, cluster::served_elsewhere(where));
  }
  const bool required = relay.authenticator.required();
  auto decision = core::check_sender(relay.registry, required, grant, request.channel,
                                     request.sender, caller_origin);
  if (decision.ok()) return decision;
  if (required) {
    record_auth_refusal(relay, decision, request.door, action, request.channel, request.connection);
  } else {
    spdlog::warn("sender refused door={} action={} channel={} client={} detail=\"{}\"",
                 request.door, action, request.channel.to_string(), caller_origin, decision.reason);
  }
  return decision;
}

Routed route_request(RelayContext& relay, const StreamRequest& request, const StreamOffer& offer) {
  const bool to_any = request.kind == wire::StreamKind::to_any;
  constexpr int kAttempts = 3;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto route =
        to_any ? relay.registry.route_to_any(request.channel, request.sender)
               : relay.registry.route_to_peer(request.channel, request.sender, request.target);
    if (route.status != Status::ok) {
      // On a cluster relay that does not serve the channel, say which one does.
      if (auto where = relay.directory->locate(request.channel);
          where.kind != cluster::Verdict::Kind::serve) {
        return Routed{Status::refused, cluster::served_elsewhere(where), nullptr};
      }
      return Routed{route.status, std::move(route.message), nullptr};
    }
    if (auto target = route.peer->accept_stream(offer)) {
      return Routed{Status::ok, {}, std::move(target)};
    }
    if (!to_any) {
      return Routed{Status::no_responders,
                    "peer " + request.target.to_string() + " cannot take a request now", nullptr};
    }
  }
  return Routed{Status::no_responders, "no peer on this channel can take a request", nullptr};
}

void fan_out(RelayContext& relay, const StreamRequest& request, const StreamOffer& offer,
             Fanout& fanout, BroadcastTargets& scratch) {
  relay.registry.broadcast_targets(request.channel, request.sender, scratch);
  if (!scratch.empty()) offer_broadcast(scratch, offer, fanout);
  scratch.clear();  // holds no peer past this call
}

void offer_broadcast(const BroadcastTargets& targets, StreamOffer offer, Fanout& fanout) {
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const auto& target = targets[i].second;
    offer.sink_index = fanout.size();
    if (i + 1 == targets.size()) {
      fanout.add(target->accept_stream(std::move(offer)));
    } else {
      fanout.add(target->accept_stream(offer));
    }
  }
}

Milliseconds stream_idle_timeout(const Limits& limits, std::uint32_t idle_ms) noexcept {
  return idle_ms != 0 ? Milliseconds(idle_ms) : limits.default_idle_timeout;
}

void count_stream_start(DoorCounters& door) noexcept {
  door.streams_total.fetch_add(1, std::memory_order_relaxed);
  door.streams_open.fetch_add(1, std::memory_order_relaxed);
}

void count_stream_end(DoorCounters& door, Status status) noexcept {
  door.streams_open.fetch_sub(1, std::memory_order_relaxed);
  door.count_stream_end(status);
}

}  // namespace switchboard::core
