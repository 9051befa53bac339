// The rules of a new stream, the same at every door: who may open it, where it goes (routing
// with retries, NO_RESPONDERS, broadcast fan-out) and the limits it gets. Owns no state: each
// function works on the relay's shared context.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/authenticator.hpp"
#include "registry/fanout.hpp"
#include "registry/peer.hpp"
#include "relay/relay_context.hpp"

namespace switchboard::core {

/// A client's request to open a stream, as any door sees it once decoded.
struct StreamRequest {
  std::string_view door;         ///< "native" or "grpc": names the door in refusal logs
  std::uint64_t connection = 0;  ///< the door's connection number for logs (0: none)
  Uuid channel;
  Uuid sender;  ///< whom the receivers see as the sender (nil: anonymous)
  wire::StreamKind kind = wire::StreamKind::to_peer;
  Uuid target;  ///< kind to_peer: the peer addressed
};

/// Whether a caller holding `grant` may open `request` now, in this order: the relay is not
/// draining (REFUSED), the grant allows sending or broadcasting (counted and logged as an auth
/// refusal), and, when `check_sender` is set, the sender rule (registry/sender.hpp) for the
/// sender the caller names from `caller_origin`. A door whose streams carry the connection's own
/// proven identity (native) passes `check_sender` false. Any thread.
auth::Decision admit_stream(RelayContext& relay, const StreamRequest& request,
                            const auth::Grant& grant, bool check_sender,
                            std::string_view caller_origin = {});

/// Where a request stream went: the target's endpoint, or why there is none.
struct Routed {
  Status status = Status::ok;
  std::string message;
  std::shared_ptr<Endpoint> target;
};

/// Routes a request stream (kind to_peer or to_any) and hands `offer` to the peer chosen. A
/// peer chosen for "any" may be closing at that instant: the next one is tried, a few times.
/// NO_RESPONDERS when nobody can take it; the registry's status (NOT_FOUND, ...) otherwise.
/// Any thread; the opener's endpoint (offer.counterpart) may get deliveries before this returns.
Routed route_request(RelayContext& relay, const StreamRequest& request, const StreamOffer& offer);

/// The receivers of a broadcast, reused by a caller that broadcasts often.
using BroadcastTargets = std::vector<std::pair<Uuid, std::shared_ptr<Peer>>>;

/// Offers a broadcast to every other member of the channel at this moment, each with a copy of
/// `offer` numbered by its place in `fanout` (a member that cannot take it counts as dropped).
/// `scratch` lends its memory and is left empty.
void fan_out(RelayContext& relay, const StreamRequest& request, const StreamOffer& offer,
             Fanout& fanout, BroadcastTargets& scratch);

/// Offers a broadcast to `targets` (other members of its channel, as the registry listed them),
/// each with a copy of `offer` (the last one takes it) numbered by its place in `fanout`; a
/// target that cannot take it counts as dropped. For a door that keeps its channel's list.
void offer_broadcast(const BroadcastTargets& targets, StreamOffer offer, Fanout& fanout);

/// The idle timeout of a stream whose opener asked for `idle_ms` (0: the relay's default; a
/// zero result means none).
Milliseconds stream_idle_timeout(const Limits& limits, std::uint32_t idle_ms) noexcept;

/// Records that a stream end started, or ended with `status`, on a door.
void count_stream_start(DoorCounters& door) noexcept;
void count_stream_end(DoorCounters& door, Status status) noexcept;

}  // namespace switchboard::core
