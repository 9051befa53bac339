// The sender-identity rule: whom a stream may show its receivers as its sender.
#pragma once

#include <string_view>

#include "auth/authenticator.hpp"
#include "registry/registry.hpp"

namespace switchboard::core {

/// Whether a stream opened on `channel` by a caller that names `sender` as the peer it speaks for
/// may do so: receivers see `sender` as the stream's sender, and a broadcast leaves it out. The
/// identity must be proven (docs/SECURITY.md, "Sender identity"):
/// - a nil `sender` is anonymous: always allowed;
/// - otherwise `sender` must be a member of `channel` now, and
///   - with auth required: the caller's token names it (`grant.peer`, the `peer` claim);
///   - on an open relay: it is carried by the caller's own client connection (its
///     Peer::origin() equals `caller_origin`, both non-empty), i.e. a Respond peer the same
///     client joined over the same connection.
/// A native peer never names a sender: its streams carry its handshake identity.
/// Returns OK, or PERMISSION_DENIED (failure wrong_peer) with the reason. Any thread.
auth::Decision check_sender(const Registry& registry, bool auth_required, const auth::Grant& grant,
                            const Uuid& channel, const Uuid& sender,
                            std::string_view caller_origin);

}  // namespace switchboard::core
