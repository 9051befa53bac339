// The sender-identity rule, shared by every call that names the peer it speaks for.
#include "registry/sender.hpp"

#include <string>

namespace switchboard::core {
namespace {

auth::Decision refuse(std::string reason) {
  auth::Decision decision;
  decision.status = Status::permission_denied;
  decision.failure = auth::Failure::wrong_peer;
  decision.reason = std::move(reason);
  return decision;
}

}  // namespace

auth::Decision check_sender(const Registry& registry, bool auth_required, const auth::Grant& grant,
                            const Uuid& channel, const Uuid& sender,
                            std::string_view caller_origin) {
  if (sender.is_nil()) return {};
  const auto named = "sender_peer_id " + sender.to_string();
  // The proof first: whether a peer is on the channel is not told to a caller who may not
  // speak for it.
  if (auth_required && grant.peer != sender) {
    return refuse(grant.peer.is_nil()
                      ? "token names no peer: " + named + " needs a token whose peer claim is it"
                      : named + " is not the token's peer " + grant.peer.to_string());
  }
  const auto peer = registry.member(channel, sender);
  if (!peer) return refuse(named + " is not on the channel");
  if (!auth_required && (caller_origin.empty() || peer->origin() != caller_origin)) {
    return refuse(named + " is not a Respond peer of this call's connection");
  }
  return {};
}

}  // namespace switchboard::core
