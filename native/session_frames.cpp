// Frames from a session's client: the handshake, stream frames, PING and ERROR.
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "native/session.hpp"
#include "relay/streams.hpp"

namespace switchboard::core::net {
namespace {

wire::Reset make_reset(Status status, std::string message) {
  return wire::Reset{status, 0, std::move(message)};
}

bool is_client_id(std::uint32_t id) noexcept { return (id & 1U) == 1U; }

}  // namespace

bool Session::handle_frame(const wire::Frame& frame) {
  using wire::FrameType;
  const auto type = frame.header.type;
  if (!in_channel()) {
    if (type != FrameType::hello) {
      context_.counters.native.count_handshake_failure(HandshakeFailure::unexpected_frame);
      fail_connection(Status::protocol_error,
                      "expected HELLO, got " + std::string(wire::frame_type_name(type)));
      return false;
    }
    return handle_hello(frame);
  }
  switch (type) {
    case FrameType::open:
      return handle_open(frame);
    case FrameType::data:
      return handle_data(frame);
    case FrameType::end:
      return handle_end(frame);
    case FrameType::reset:
      return handle_reset(frame);
    case FrameType::window:
      return handle_window(frame);
    case FrameType::ping:
      return handle_ping(frame);
    case FrameType::error:
      return handle_error(frame);
    case FrameType::message:
      return handle_message(frame);
    case FrameType::hello:
      fail_connection(Status::protocol_error, "HELLO after the handshake");
      return false;
    case FrameType::welcome:
    case FrameType::presence:
    case FrameType::go_away:
    case FrameType::redirect:
    case FrameType::message_report:
      break;  // the relay's frames, never a client's
  }
  // Also any value outside the enum (the frame reader refuses those before they get here).
  fail_connection(Status::protocol_error,
                  "unexpected " + std::string(wire::frame_type_name(type)) + " from a client");
  return false;
}

bool Session::handle_ping(const wire::Frame& frame) {
  std::uint64_t opaque = 0;
  if (wire::parse_ping(frame.payload, opaque) != wire::DecodeError::none) {
    fail_connection(Status::protocol_error, "malformed PING");
    return false;
  }
  if ((frame.header.flags & wire::flags::kAck) == 0) {
    wire::append_ping(outbox_.control(), opaque, true);
    queue_control_done();
  }
  return true;
}

bool Session::handle_error(const wire::Frame& frame) {
  wire::Error error;
  (void)wire::parse_error(frame.payload, error);
  spdlog::debug("client error conn={} status={} message=\"{}\"", connection_id_,
                status_name(error.status), error.message);
  close_reason_ = "client error";
  begin_close();
  return false;
}

bool Session::handle_hello(const wire::Frame& frame) {
  wire::Hello hello;
  const auto error = wire::parse_hello(frame.payload, hello);
  if (error != wire::DecodeError::none) {
    context_.counters.native.count_handshake_failure(error == wire::DecodeError::unsupported_version
                                                         ? HandshakeFailure::bad_version
                                                         : HandshakeFailure::bad_hello);
    std::string message = "bad HELLO: " + std::string(wire::decode_error_name(error));
    if (error == wire::DecodeError::unsupported_version) {
      message = "unsupported protocol version " + std::to_string(hello.version) +
                "; this relay speaks versions " + wire::supported_versions_text();
    }
    fail_connection(Status::protocol_error, std::move(message));
    return false;
  }
  if (drain_asked()) {
    context_.counters.native.count_handshake_failure(HandshakeFailure::draining);
    fail_connection(Status::refused, "relay is draining");
    return false;
  }
  const bool accepts = hello.accepts_requests();
  const bool observes = hello.observes();
  // An observer speaks for no peer id and needs what the gRPC presence calls need.
  auto decision =
      observes ? context_.authenticator.authorize(hello.token, hello.channel, std::nullopt,
                                                  auth::Permission::presence)
               : context_.authenticator.authenticate(hello.token, hello.channel, hello.peer_id);
  if (decision.ok() && accepts) {
    if (auto allowed = auth::require(decision.grant, auth::Permission::respond); !allowed.ok()) {
      decision = std::move(allowed);
    }
  }
  if (!decision.ok()) {
    context_.counters.native.count_handshake_failure(HandshakeFailure::unauthorized);
    record_auth_refusal(context_, decision, "native",
                        observes ? "observe" : (accepts ? "join-responder" : "join"), hello.channel,
                        connection_id_);
    fail_connection(decision.status, std::move(decision.reason));
    return false;
  }
  grant_ = std::move(decision.grant);
  pending_hello_ = std::make_unique<wire::Hello>(std::move(hello));
  return resolve_hello();
}

bool Session::resolve_hello() {
  // An observer adds no peer, so it claims nothing: it is told where the channel lives.
  if (pending_hello_->observes()) {
    return finish_hello(context_.directory->locate(pending_hello_->channel));
  }
  // Most answers are known at once (a relay alone, or a channel this relay serves already);
  // the rest wait for the cluster directory, with the read loop paused until they come.
  auto verdict = cluster::resolve_or_defer(*context_.directory, pending_hello_->channel,
                                           [self = shared_from_this()](cluster::Verdict later) {
                                             asio::post(self->executor_,
                                                        [self, later = std::move(later)]() mutable {
                                                          self->verdict_ = std::move(later);
                                                          self->resolved_.cancel();
                                                        });
                                           });
  if (verdict) return finish_hello(*verdict);
  phase_ = Phase::resolving;
  return true;
}

bool Session::finish_hello(const cluster::Verdict& verdict) {
  auto hello = std::move(*pending_hello_);
  pending_hello_.reset();
  if (phase_ == Phase::resolving) phase_ = Phase::handshake;
  if (verdict.kind != cluster::Verdict::Kind::serve) return redirect_hello(hello, verdict);
  const bool accepts = hello.accepts_requests();
  const bool observes = hello.observes();
  // Before the join: senders on other threads read it once the registry holds this peer.
  client_reads_messages_ = hello.version >= wire::kMessageVersion;
  JoinResult joined;
  if (observes) {
    // Presence only: no membership, so no id to occupy, no place in the channel's limit, and
    // never a target of a request or a broadcast.
    if (context_.registry.draining()) {
      context_.counters.native.count_handshake_failure(HandshakeFailure::draining);
      fail_connection(Status::refused, "relay is draining");
      return false;
    }
    joined.peer_id = hello.peer_id.is_nil() ? Uuid::random() : hello.peer_id;
    watch_token_ =
        context_.registry.watch(hello.channel, shared_from_this(), joined.others, joined.version);
  } else {
    joined = context_.registry.join(hello.channel, hello.peer_id, accepts, shared_from_this());
    if (joined.moved) return redirect_hello(hello, *joined.moved);
    if (joined.resolve_again && resolve_rounds_ < kMaxResolveRounds) {
      // The channel emptied and its claim went between the directory's answer and the join.
      ++resolve_rounds_;
      pending_hello_ = std::make_unique<wire::Hello>(std::move(hello));
      return resolve_hello();
    }
  }
  if (joined.status != Status::ok) {
    context_.counters.native.count_handshake_failure(HandshakeFailure::refused);
    spdlog::debug("handshake refused conn={} status={} reason=\"{}\"", connection_id_,
                  status_name(joined.status), joined.message);
    fail_connection(joined.status, std::move(joined.message));
    return false;
  }
  // A HELLO still read after the handshake timed out joins as it did; closing goes on.
  if (!closing()) phase_ = Phase::joined;
  reader_.set_max_frame(limits_.max_frame);
  channel_ = hello.channel;
  peer_id_ = joined.peer_id;
  protocol_version_ = hello.version;
  client_max_frame_ = hello.max_frame;
  client_window_ = hello.stream_window;

  wire::Welcome welcome;
  welcome.version = protocol_version_;  // the client's own version, whichever we speak
  welcome.peer_id = peer_id_;
  welcome.max_frame = limits_.max_frame;
  welcome.stream_window = limits_.stream_window;
  welcome.max_streams = limits_.max_streams_per_connection;
  welcome.keepalive_ms = static_cast<std::uint32_t>(limits_.keepalive_interval.count());
  welcome.message_window = limits_.message_window;
  message_credit_ = limits_.message_window;
  auto& control = outbox_.control();
  wire::append_welcome(control, welcome);
  presence_sent_ = Clock::now();  // the snapshot below is the view a storm's hold counts from
  // The snapshot may exceed one frame: split it so each frame fits the client's max frame.
  const std::size_t per_frame = std::min<std::size_t>(0xFFFF, (client_max_frame_ - 12) / 16);
  std::size_t offset = 0;
  do {
    const std::size_t count = std::min(per_frame, joined.others.size() - offset);
    wire::Presence snapshot{wire::PresenceEvent::snapshot, joined.version, {}};
    snapshot.peers.assign(joined.others.begin() + static_cast<std::ptrdiff_t>(offset),
                          joined.others.begin() + static_cast<std::ptrdiff_t>(offset + count));
    offset += count;
    wire::append_presence(control, snapshot, offset < joined.others.size());
  } while (offset < joined.others.size());
  // The welcome and snapshot are a burst too: once written, a peer with no stream keeps no
  // buffer, rather than until the watchdog's next tick. In a join storm whose presence is held,
  // that is thousands of peers' grown buffers in the heap at once.
  presence_burst_ = true;
  queue_control_done();
  if (grant_.expires()) arm_token_expiry();
  spdlog::debug("peer joined conn={} channel={} peer={} accepts_requests={} observer={} version={}",
                connection_id_, channel_.to_string(), peer_id_.to_string(), accepts, observes,
                protocol_version_);
  return true;
}

bool Session::redirect_hello(const wire::Hello& hello, const cluster::Verdict& verdict) {
  if (verdict.kind == cluster::Verdict::Kind::unavailable) {
    context_.counters.native.count_handshake_failure(HandshakeFailure::unavailable);
    fail_connection(Status::refused, "channel unavailable: " + verdict.reason);
    return false;
  }
  context_.counters.native.redirects_sent.fetch_add(1, std::memory_order_relaxed);
  if (hello.version < wire::kRedirectVersion) {
    // The client cannot follow a REDIRECT: say plainly where the channel is instead.
    fail_connection(Status::refused, cluster::served_elsewhere(verdict) + "; protocol version " +
                                         std::to_string(hello.version) +
                                         " clients cannot follow redirects: connect there or "
                                         "upgrade the client");
    return false;
  }
  close_reason_ = "redirected to " + verdict.owner.native;
  auto& control = outbox_.control();
  wire::append_redirect(control,
                        wire::Redirect{0, verdict.revision, verdict.owner.native,
                                       "channel is served by relay " + verdict.owner.node_id});
  queue_control_done();
  begin_close();
  return false;
}

StreamPtr Session::find_stream(std::uint32_t id, wire::FrameType type) {
  if (auto it = streams_.find(id); it != streams_.end()) return it->second;
  const bool seen = is_client_id(id) ? id <= last_client_stream_ : id < next_relay_stream_;
  if (!seen) {
    // Never opened: a stream-level error, the connection stays up.
    wire::append_reset(
        outbox_.control(), id,
        make_reset(Status::protocol_error, std::string(wire::frame_type_name(type)) +
                                               " for unknown stream " + std::to_string(id)));
    queue_control_done();
  }
  // Recently closed streams are ignored: the frame may have crossed our RESET.
  return nullptr;
}

bool Session::handle_open(const wire::Frame& frame) {
  const std::uint32_t id = frame.header.stream;
  // Client ids are 1, 3, 5, ... with none skipped, so every id up to the last one was opened: a
  // frame for one that is not open belongs to a closed stream, never to a skipped one.
  const std::uint64_t expected = last_client_stream_ == 0 ? 1 : last_client_stream_ + 2ULL;
  if (id != expected) {
    fail_connection(Status::protocol_error, "OPEN with stream id " + std::to_string(id) +
                                                " (client ids are odd and consecutive; expected " +
                                                std::to_string(expected) + ")");
    return false;
  }
  last_client_stream_ = id;
  auto refuse = [&](Status status, std::string message) {
    wire::append_reset(outbox_.control(), id, make_reset(status, std::move(message)));
    queue_control_done();
    return true;
  };
  if (drain_asked()) return refuse(Status::refused, "relay is draining");
  // As for a token without the permission: this stream is refused, the connection stays.
  if (observer()) return refuse(Status::permission_denied, "an observer cannot open streams");
  if (client_streams_open_ >= limits_.max_streams_per_connection) {
    return refuse(
        Status::resource_exhausted,
        "too many open streams (limit " + std::to_string(limits_.max_streams_per_connection) + ")");
  }
  wire::Open open;
  wire::Bytes body;
  if (wire::parse_open(frame.payload, open, body) != wire::DecodeError::none) {
    return refuse(Status::protocol_error, "malformed OPEN");
  }
  // A client's OPEN names a peer exactly when it is addressed to one (section 3.7).
  if (open.kind == wire::StreamKind::to_peer && open.peer.is_nil()) {
    return refuse(Status::protocol_error, "malformed OPEN: kind 0 (to peer) names no peer");
  }
  if (open.kind != wire::StreamKind::to_peer && !open.peer.is_nil()) {
    return refuse(Status::protocol_error, "malformed OPEN: only kind 0 (to peer) names a peer");
  }
  const StreamRequest request{"native", connection_id_, channel_, peer_id_, open.kind, open.peer};
  if (auto allowed = admit_stream(context_, request, grant_, false); !allowed.ok()) {
    return refuse(allowed.status, std::move(allowed.reason));
  }
  if (wire::open_prefix_size(open) > wire::kMaxOpenPrefix) {
    return refuse(Status::protocol_error, "OPEN metadata too large");
  }
  if (body.size() > limits_.stream_window) {
    return refuse(Status::protocol_error, "flow control window exceeded");
  }
  const bool fin = (frame.header.flags & wire::flags::kFin) != 0;
  context_.counters.native.payload_bytes_in.fetch_add(body.size(), std::memory_order_relaxed);
  wire::Slice slice = reader_.share(body);
  if (open.kind == wire::StreamKind::broadcast) {
    open_broadcast(id, std::move(open), std::move(slice), fin);
  } else {
    open_request(id, request, std::move(open), std::move(slice), fin);
  }
  return true;
}

StreamPtr Session::new_client_stream(std::uint32_t id, StreamRole role, const wire::Slice& body,
                                     bool fin) {
  auto stream = std::make_shared<SessionStream>(shared_from_this(), role);
  stream->id_ = id;
  stream->open_inbound(static_cast<std::int64_t>(limits_.stream_window) - body.size, fin);
  stream->open_outbound(client_window_);
  return stream;
}

// The stream was offered: its time limits start and it counts against the client's limit.
// Returns when its timer is first due.
Clock::time_point Session::start_client_stream(const StreamPtr& stream, const wire::Open& open) {
  const auto now = TurnClock::now();
  const auto deadline = open.deadline_ms != 0 ? now + std::chrono::milliseconds(open.deadline_ms)
                                              : Clock::time_point::max();
  const auto idle_timeout = stream_idle_timeout(limits_, open.idle_ms);
  stream->set_time_limits(deadline, idle_timeout);
  register_stream(stream);
  ++client_streams_open_;
  stream->touch();
  return std::min(deadline,
                  idle_timeout.count() > 0 ? now + idle_timeout : Clock::time_point::max());
}

void Session::open_request(std::uint32_t id, const StreamRequest& request, wire::Open open,
                           wire::Slice body, bool fin) {
  auto stream = new_client_stream(id, StreamRole::requester, body, fin);

  StreamOffer offer;
  offer.kind = open.kind;
  offer.sender = peer_id_;
  offer.deadline_ms = open.deadline_ms;
  offer.idle_ms = open.idle_ms;
  offer.metadata = std::move(open.metadata);
  offer.first_chunk = std::move(body);
  offer.fin = fin;
  offer.counterpart = stream;

  auto routed = route_request(context_, request, offer);
  if (!routed.target) {
    wire::append_reset(outbox_.control(), id, make_reset(routed.status, std::move(routed.message)));
    queue_control_done();
    return;
  }
  stream->counterpart_ = std::move(routed.target);
  arm_timer(stream, start_client_stream(stream, open));
}

void Session::open_broadcast(std::uint32_t id, wire::Open open, wire::Slice body, bool fin) {
  auto stream = new_client_stream(id, StreamRole::broadcast_source, body, fin);

  StreamOffer offer;
  offer.kind = wire::StreamKind::broadcast;
  offer.sender = peer_id_;
  offer.deadline_ms = open.deadline_ms;
  offer.idle_ms = open.idle_ms;
  offer.metadata = std::move(open.metadata);
  // The OPEN's body and end travel with the offer: one hand-off per receiver, not two.
  offer.first_chunk = body;
  offer.fin = fin;
  offer.counterpart = stream;
  // The channel's other members as the last presence change left them: the registry is asked
  // again only after a change (as for whole messages), not once per broadcast.
  if (broadcast_targets_stale_.exchange(false, std::memory_order_acquire)) {
    context_.registry.broadcast_targets(channel_, peer_id_, broadcast_targets_);
  }
  offer_broadcast(broadcast_targets_, std::move(offer), stream->fanout_);
  const auto due = start_client_stream(stream, open);
  if (body.size > 0) release_inbound(*stream, stream->fanout_.forwarded_with_offer(body.size));
  arm_timer(stream, due);
  maybe_send_summary(stream);
}

bool Session::handle_data(const wire::Frame& frame) {
  auto stream = find_stream(frame.header.stream, frame.header.type);
  if (!stream) return true;
  const auto size = static_cast<std::uint32_t>(frame.payload.size());
  const bool fin = (frame.header.flags & wire::flags::kFin) != 0;
  if (stream->role() == StreamRole::broadcast_sink || stream->inbound_done()) {
    reset_stream(stream, Status::protocol_error, "DATA after the end of the stream", true, true);
    return true;
  }
  if (!stream->consume_inbound(size)) {
    reset_stream(stream, Status::protocol_error, "flow control window exceeded", true, true);
    return true;
  }
  if (fin) stream->finish_inbound();
  context_.counters.native.payload_bytes_in.fetch_add(size, std::memory_order_relaxed);
  stream->touch();
  wire::Slice slice = reader_.share(frame.payload);
  if (stream->role() == StreamRole::broadcast_source) {
    release_inbound(*stream, stream->fanout_.forward(slice, fin));
    if (fin) maybe_send_summary(stream);
  } else {
    stream->counterpart_->deliver_data(std::move(slice), fin);
  }
  if (fin) maybe_finish(stream);
  return true;
}

bool Session::handle_end(const wire::Frame& frame) {
  auto stream = find_stream(frame.header.stream, frame.header.type);
  if (!stream) return true;
  wire::End end;
  if (wire::parse_end(frame.payload, end) != wire::DecodeError::none) {
    reset_stream(stream, Status::protocol_error, "malformed END", true, true);
    return true;
  }
  if (stream->role() == StreamRole::broadcast_sink || stream->inbound_done()) {
    reset_stream(stream, Status::protocol_error, "END after the end of the stream", true, true);
    return true;
  }
  stream->finish_inbound();
  stream->touch();
  if (stream->role() == StreamRole::responder) stream->outcome_ = end.status;
  if (stream->role() == StreamRole::broadcast_source) {
    if (end.status != Status::ok) {
      reset_stream(stream, end.status, end.message, false, true);
      return true;
    }
    stream->fanout_.forward(wire::Slice{}, true);
    maybe_send_summary(stream);
  } else {
    end.delivered = 0;
    end.dropped = 0;
    stream->counterpart_->deliver_end(std::move(end));
  }
  maybe_finish(stream);
  return true;
}

bool Session::handle_reset(const wire::Frame& frame) {
  auto stream = find_stream(frame.header.stream, frame.header.type);
  if (!stream) return true;
  wire::Reset reset;
  if (wire::parse_reset(frame.payload, reset) != wire::DecodeError::none) {
    reset_stream(stream, Status::protocol_error, "malformed RESET", true, true);
    return true;
  }
  reset_stream(stream, reset.status, reset.message.empty() ? "reset by peer" : reset.message, false,
               true);
  return true;
}

bool Session::handle_window(const wire::Frame& frame) {
  auto stream = find_stream(frame.header.stream, frame.header.type);
  if (!stream) return true;
  std::uint32_t increment = 0;
  if (wire::parse_window(frame.payload, increment) != wire::DecodeError::none) {
    reset_stream(stream, Status::protocol_error, "malformed WINDOW", true, true);
    return true;
  }
  if (!stream->grant_outbound(increment)) {
    reset_stream(stream, Status::protocol_error, "flow control window overflow", true, true);
    return true;
  }
  schedule(stream);
  return true;
}

}  // namespace switchboard::core::net
