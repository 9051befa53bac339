// Interfaces between the transport-agnostic registry and the front doors that carry peers.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "cluster/directory.hpp"
#include "registry/message.hpp"
#include "registry/presence_log.hpp"
#include "switchboard/wire/buffer.hpp"
#include "switchboard/wire/frame.hpp"

namespace switchboard::core {

/// One side of a relayed stream, implemented by a front door. Every method may be called from
/// any thread; implementations hand the work to their own executor and never block.
class Endpoint {
public:
  virtual ~Endpoint() = default;

  /// Payload from the counterpart for this side's client; `fin` ends that direction (OK).
  virtual void deliver_data(wire::Slice payload, bool fin) = 0;
  /// The counterpart ended its direction with a status (for a broadcast source: the summary).
  virtual void deliver_end(wire::End end) = 0;
  /// The stream is aborted; this side tells its client and forgets the stream.
  virtual void deliver_reset(wire::Reset reset) = 0;
  /// The counterpart (broadcast: receiver number `sink`) wrote `bytes` of ours to its client, so
  /// they no longer occupy relay memory and may be granted again to our client. A side that
  /// never sends (a broadcast receiver) ignores it.
  virtual void deliver_credit(std::uint32_t /*bytes*/, std::uint32_t /*sink*/) {}
  /// Broadcast source only: receiver `sink` has finished (OK: got everything) or was dropped.
  /// Only a broadcast source is told; other sides ignore it.
  virtual void deliver_sink_done(std::uint32_t /*sink*/, Status /*status*/) {}
};

/// What an opener offers a target when it routes a new stream to it.
struct StreamOffer {
  wire::StreamKind kind = wire::StreamKind::to_peer;
  Uuid sender;
  std::uint32_t deadline_ms = 0;
  std::uint32_t idle_ms = 0;
  wire::Metadata metadata;
  wire::Slice first_chunk;
  bool fin = false;
  std::shared_ptr<Endpoint> counterpart;
  std::uint32_t sink_index = 0;  ///< broadcast: this receiver's number at the source
};

/// A member of a channel, as the registry sees it.
class Peer {
public:
  virtual ~Peer() = default;

  /// A presence change on the peer's channel. Called with the registry's lock held, in version
  /// order; implementations only queue it.
  virtual void on_presence(const wire::Presence& event) = 0;
  /// The same for a member, with the chunk of the channel's log that records it: a member that
  /// writes changes later may hold the chunk and read them from there (every change after the
  /// first one it was told of, up to the last, is in that chain). By default, on_presence(event).
  virtual void on_logged_presence(const wire::Presence& event,
                                  const std::shared_ptr<PresenceLogChunk>& /*logged*/) {
    on_presence(event);
  }
  /// Accepts a stream routed to this peer and returns the endpoint the opener talks to, or
  /// nullptr when the peer can no longer take it (closing, or at its stream limit).
  virtual std::shared_ptr<Endpoint> accept_stream(StreamOffer offer) = 0;
  /// A whole message for this peer (protocol MESSAGE). Any thread; never blocks. The peer
  /// settles `message.share` once its client was written the body (delivered) or it cannot be
  /// (dropped). This default hands it over as a broadcast stream with the whole body and its
  /// end (what peers whose client does not speak messages receive); a peer that writes MESSAGE
  /// frames overrides it.
  virtual void deliver_message(MessageDelivery message);
  /// Whether the peer can take another incoming request now (for "any" routing).
  virtual bool has_capacity() const = 0;
  /// The front door that carries this peer, for introspection ("native" or "grpc").
  virtual std::string_view door() const noexcept { return "native"; }
  /// The client connection that carries this peer when other calls may share it (a gRPC
  /// Respond peer: its HTTP/2 connection's address as gRPC names it, "ipv4:10.0.0.7:50312");
  /// empty when the peer is a connection of its own (native). Fixed for the peer's life. See
  /// check_sender.
  virtual std::string_view origin() const noexcept { return {}; }
  /// This relay gives the peer's channel up (cluster placement moved, or the relay is fenced):
  /// the peer takes no new streams, is sent to `next` once its streams end (or closed when
  /// `next` is unavailable), and leaves. Called without the registry's lock.
  virtual void relocate(const cluster::Verdict& next) = 0;
};

}  // namespace switchboard::core
