// Respond RPC: join, presence, incoming requests and broadcasts, responses with credit.
#include "grpc_gateway/respond_call.hpp"

#include <spdlog/spdlog.h>

#include "grpc_gateway/auth_checks.hpp"

namespace switchboard::gateway {

// ---- The call. ----

RespondCall* RespondCall::start(GatewayContext& gateway, grpc::CallbackServerContext* context) {
  auto call = std::make_shared<RespondCall>(gateway, context);
  call->self_ = call;
  call->read_pending_ = true;
  call->StartRead(&call->in_);
  return call.get();
}

RespondCall::RespondCall(GatewayContext& gateway, grpc::CallbackServerContext* context)
    : gateway_(gateway),
      context_(context),
      origin_(context->peer()),
      serial_(gateway.next_call_executor()),
      watchdog_(serial_.executor()),
      token_expiry_(serial_.executor()) {}

// gRPC calls OnDone after the last read and write completion, and its handler is queued behind
// theirs: the call outlives these handlers without holding itself.
void RespondCall::OnReadDone(bool ok) {
  serial_.dispatch([this, ok] { read_done(ok); }, shared_from_this());
}
void RespondCall::OnWriteDone(bool ok) {
  serial_.dispatch(
      [this, ok] {
        if (carrier_) {
          carrier_->downstream_write_done(ok);
        } else {
          on_write_done(ok);
        }
      },
      shared_from_this());
}
void RespondCall::OnCancel() {
  dispatch([self = shared_from_this()] {
    if (self->carrier_) {
      self->carrier_->downstream_cancelled();
    } else {
      self->finish(grpc::Status::CANCELLED);
    }
  });
}
void RespondCall::OnDone() {
  dispatch([self = shared_from_this()] { self->on_done(); });
}

// Called with the registry's lock held: posted, never run here.
void RespondCall::on_presence(const wire::Presence& event) {
  post([self = shared_from_this(), event] {
    self->serial_.assert_here();
    if (self->done_ || self->outbox_.ending()) return;
    pb::RespondResponse out;
    auto* update = out.mutable_presence();
    update->set_kind(event.event == wire::PresenceEvent::joined ? pb::PresenceUpdate::KIND_JOINED
                                                                : pb::PresenceUpdate::KIND_LEFT);
    update->set_version(event.version);
    for (const auto& id : event.peers) update->add_peers(id.to_string());
    self->enqueue(std::move(out), Tag{}, 0);
  });
}

std::shared_ptr<core::Endpoint> RespondCall::accept_stream(core::StreamOffer offer) {
  if (offer.kind != wire::StreamKind::broadcast) {
    if (open_requests_.fetch_add(1) >= gateway_.limits.max_streams_per_connection) {
      open_requests_.fetch_sub(1);
      return nullptr;
    }
  }
  const std::uint64_t id = next_id_.fetch_add(1);
  auto link = std::make_shared<StreamLink<RespondCall>>(shared_from_this(), id);
  // Senders offer streams holding no registry lock. Handed in before the link is returned, so
  // before the sender's first chunk.
  deliver([self = shared_from_this(), id, offer = std::move(offer)]() mutable {
    self->on_incoming(id, std::move(offer));
  });
  return link;
}

bool RespondCall::has_capacity() const {
  return open_requests_.load() < gateway_.limits.max_streams_per_connection;
}

// Leaves first, so that the peer is gone from the channel when its client learns the status.
void RespondCall::finish(grpc::Status status) {
  serial_.assert_here();
  if (done_ || outbox_.ending()) return;
  leave();
  outbox_.finish(std::move(status), false);
}

// Leaves the channel and ends every stream: counterparts learn PEER_GONE.
void RespondCall::leave() {
  if (joined_) {
    joined_ = false;
    gateway_.registry.leave(channel_, peer_id_);
  }
  drain_registration_.reset();
  for (auto& [id, entry] : incoming_) {
    count_stream_end(gateway_, Status::peer_gone);
    if (entry.broadcast) {
      entry.counterpart->deliver_sink_done(entry.sink_index, Status::peer_gone);
    } else {
      open_requests_.fetch_sub(1);
      entry.counterpart->deliver_reset(wire::Reset{Status::peer_gone, 0, "responder left"});
    }
  }
  incoming_.clear();
  watchdog_.cancel();
  token_expiry_.cancel();
}

void RespondCall::read_more() {
  if (read_pending_ || done_ || outbox_.ending()) return;
  // Without stream windows, a response out of credit stops reading: its requester is slower
  // than this responder. With them, a chunk beyond its credit resets its own request instead.
  for (const auto& [id, entry] : incoming_) {
    if (windows_) break;
    if (!entry.broadcast && !entry.response_done && entry.response_credit <= 0) return;
  }
  read_pending_ = true;
  StartRead(&in_);
}

void RespondCall::read_done(bool ok) {
  serial_.assert_here();
  read_pending_ = false;
  if (carrier_) {
    carrier_->downstream_read_done(ok);
    return;
  }
  if (done_ || outbox_.ending()) return;
  if (!ok) {
    if (joined_) {
      finish(to_grpc(context_, Status::ok, ""));  // the client ended the stream: the peer leaves
    } else if (context_->IsCancelled()) {
      finish(grpc::Status::CANCELLED);
    } else {
      // gRPC reports a half-close and a message that does not parse alike: a failed read.
      gateway_.core.counters.grpc.count_handshake_failure(core::HandshakeFailure::bad_hello);
      finish(invalid_argument(context_,
                              "the stream ended before its join message, or it did not parse"));
    }
    return;
  }
  if (!joined_) {
    join();
    return;
  }
  switch (in_.kind_case()) {
    case pb::RespondRequest::kChunk: {
      const auto& chunk = in_.chunk();
      auto it = incoming_.find(chunk.request_id());
      // Unknown ids belong to streams that just ended (reset crossing the response): ignored.
      if (it != incoming_.end() && !it->second.broadcast && !it->second.response_done) {
        auto& entry = it->second;
        if (windows_ && static_cast<std::int64_t>(chunk.data().size()) > entry.response_credit) {
          overrun(chunk.request_id());
          break;
        }
        entry.response_credit -= static_cast<std::int64_t>(chunk.data().size());
        gateway_.core.counters.grpc.payload_bytes_in.fetch_add(chunk.data().size(),
                                                               std::memory_order_relaxed);
        if (!chunk.data().empty() && entry.response_credit <= 0) {
          gateway_.core.counters.grpc.credit_stalls.fetch_add(1, std::memory_order_relaxed);
        }
        entry.counterpart->deliver_data(take_slice(*in_.mutable_chunk()->mutable_data()),
                                        chunk.last());
        if (chunk.last()) {
          entry.response_done = true;
          if (entry.request_written) {
            open_requests_.fetch_sub(1);
            count_stream_end(gateway_, entry.outcome);
            incoming_.erase(it);
          }
        }
      }
      break;
    }
    case pb::RespondRequest::kEnd: {
      const auto& end = in_.end();
      auto it = incoming_.find(end.request_id());
      if (it != incoming_.end() && !it->second.broadcast && !it->second.response_done) {
        const Status status = status_from_client(end.status(), Status::internal);
        it->second.counterpart->deliver_end(wire::End{status, end.app_code(), 0, 0, end.message()});
        it->second.response_done = true;
        it->second.outcome = status;
        if (it->second.request_written) {
          open_requests_.fetch_sub(1);
          count_stream_end(gateway_, it->second.outcome);
          incoming_.erase(it);
        }
      }
      break;
    }
    case pb::RespondRequest::kCancel: {
      const auto& cancel = in_.cancel();
      drop(cancel.id(), cancel_status_from_client(cancel.status()),
           cancel.message().empty() ? "cancelled by responder" : cancel.message(), false);
      break;
    }
    case pb::RespondRequest::kWindow:
      if (!windows_) {
        finish(invalid_argument(context_, "window needs join.stream_windows"));
        return;
      }
      on_client_window(in_.window());
      break;
    case pb::RespondRequest::kJoin:
      finish(invalid_argument(context_, "join may only be the first message"));
      return;
    default:
      finish(invalid_argument(context_, "empty Respond message"));
      return;
  }
  read_more();
}

void RespondCall::join() {
  auto& counters = gateway_.core.counters.grpc;
  const auto checked = check_first(in_);
  if (!checked.request) {
    counters.count_handshake_failure(in_.kind_case() == pb::RespondRequest::kJoin
                                         ? core::HandshakeFailure::bad_hello
                                         : core::HandshakeFailure::unexpected_frame);
    finish(invalid_argument(context_, checked.error));
    return;
  }
  const Uuid& channel = checked.request->channel;
  const Uuid& peer = checked.request->peer_id;
  core::auth::Grant grant;
  if (auto refusal = check_token(gateway_, context_, in_.join().token(), channel, peer,
                                 core::auth::Permission::respond, grant)) {
    counters.count_handshake_failure(core::HandshakeFailure::unauthorized);
    finish(std::move(*refusal));
    return;
  }
  // On a cluster the channel may need claiming first; the reads wait until it is decided.
  auto verdict = cluster::resolve_or_defer(
      *gateway_.core.directory, channel,
      [self = shared_from_this(), channel, peer, grant](cluster::Verdict later) {
        self->post([self, channel, peer, grant, later = std::move(later)] {
          self->join_resolved(channel, peer, grant, later);
        });
      });
  if (verdict) join_resolved(channel, peer, grant, *verdict);
}

void RespondCall::join_resolved(const Uuid& channel, const Uuid& peer,
                                const core::auth::Grant& grant, const cluster::Verdict& verdict) {
  serial_.assert_here();
  if (done_ || outbox_.ending()) return;
  auto& counters = gateway_.core.counters.grpc;
  if (!gateway_.registry.draining()) {
    if (auto address = carry_target(context_, verdict); !address.empty()) {
      carrier_ = std::make_unique<BidiCarrier<pb::RespondRequest, pb::RespondResponse>>(
          gateway_.owners, serial_, *this, context_, shared_from_this());
      carrier_->start(address, std::move(in_));
      return;
    }
  }
  if (verdict.kind != cluster::Verdict::Kind::serve) {
    // Nobody serves the channel now, or the call came carried already: the client is told
    // where the channel is, if anywhere.
    counters.count_handshake_failure(core::HandshakeFailure::unavailable);
    if (verdict.kind == cluster::Verdict::Kind::redirect) {
      counters.redirects_sent.fetch_add(1, std::memory_order_relaxed);
    }
    finish(to_grpc(context_, Status::refused, cluster::served_elsewhere(verdict)));
    return;
  }
  auto joined = gateway_.registry.join(channel, peer, true, shared_from_this());
  if (joined.resolve_again && ++resolve_rounds_ <= kMaxResolveRounds) {
    auto again = cluster::resolve_or_defer(
        *gateway_.core.directory, channel,
        [self = shared_from_this(), channel, peer, grant](cluster::Verdict later) {
          self->post([self, channel, peer, grant, later = std::move(later)] {
            self->join_resolved(channel, peer, grant, later);
          });
        });
    if (again) join_resolved(channel, peer, grant, *again);
    return;
  }
  if (joined.moved) {
    join_resolved(channel, peer, grant, *joined.moved);
    return;
  }
  if (joined.status != Status::ok) {
    counters.count_handshake_failure(gateway_.registry.draining()
                                         ? core::HandshakeFailure::draining
                                         : core::HandshakeFailure::refused);
    finish(to_grpc(context_, joined.status, joined.message, 0,
                   joined.status == Status::refused && !peer.is_nil() &&
                       joined.message.find("already") != std::string::npos));
    return;
  }
  joined_ = true;
  channel_ = channel;
  peer_id_ = joined.peer_id;
  windows_ = in_.join().stream_windows();
  response_window_ = windows_ ? response_window(gateway_) : gateway_window(gateway_);
  drain_registration_ = gateway_.drains.add(shared_from_this());
  pb::RespondResponse welcome;
  welcome.mutable_joined()->set_peer_id(peer_id_.to_string());
  if (windows_) {
    welcome.mutable_joined()->set_response_window(static_cast<std::uint32_t>(response_window_));
    welcome.mutable_joined()->set_incoming_window(gateway_.limits.stream_window);
  }
  enqueue(std::move(welcome), Tag{}, 0);
  pb::RespondResponse snapshot;
  auto* update = snapshot.mutable_presence();
  update->set_kind(pb::PresenceUpdate::KIND_SNAPSHOT);
  update->set_version(joined.version);
  for (const auto& id : joined.others) update->add_peers(id.to_string());
  enqueue(std::move(snapshot), Tag{}, 0);
  check_slow_consumers();
  arm_expiry(token_expiry_, grant, [self = shared_from_this()] {
    self->dispatch([self] { self->token_expired_now(); });
  });
  read_more();
}

void RespondCall::token_expired_now() {
  serial_.assert_here();
  // Once Finish was called the context may be gone: do not build a status from it.
  if (done_ || outbox_.ending()) return;
  finish(token_expired(gateway_, context_, "respond", channel_));
}

void RespondCall::drain() {
  serial_.assert_here();
  draining_ = true;
  // Once Finish was called the context may be gone: do not build a status from it.
  if (done_ || outbox_.ending() || !incoming_.empty()) return;
  finish(to_grpc(context_, Status::refused, drain_message_));
}

void RespondCall::relocate(const cluster::Verdict& next) {
  std::string message =
      next.kind == cluster::Verdict::Kind::redirect
          ? "channel moved to relay " + next.owner.node_id +
                (next.owner.grpc.empty() ? std::string() : " at " + next.owner.grpc)
          : "channel unavailable on this relay: " + next.reason;
  auto self = shared_from_this();
  serial_.deliver(
      [self, message = std::move(message)]() mutable {
        self->drain_message_ = std::move(message);
        self->drain();
      },
      self);
}

void RespondCall::on_incoming(std::uint64_t id, core::StreamOffer offer) {
  serial_.assert_here();
  const bool broadcast = offer.kind == wire::StreamKind::broadcast;
  if (done_ || outbox_.ending() || !joined_) {
    if (broadcast) {
      offer.counterpart->deliver_sink_done(offer.sink_index, Status::peer_gone);
    } else {
      open_requests_.fetch_sub(1);
      offer.counterpart->deliver_reset(wire::Reset{Status::peer_gone, 0, "responder left"});
    }
    return;
  }
  Incoming entry;
  entry.counterpart = std::move(offer.counterpart);
  entry.broadcast = broadcast;
  entry.sink_index = offer.sink_index;
  entry.response_done = broadcast;
  entry.response_credit = response_window_;
  incoming_.emplace(id, std::move(entry));
  count_stream_start(gateway_);
  pb::RespondResponse out;
  auto* start = out.mutable_start();
  start->set_id(id);
  start->set_broadcast(broadcast);
  if (!offer.sender.is_nil()) start->set_sender(offer.sender.to_string());
  start->set_deadline_ms(offer.deadline_ms);
  from_metadata(offer.metadata, start->mutable_metadata());
  start->set_data(reinterpret_cast<const char*>(offer.first_chunk.data), offer.first_chunk.size);
  start->set_last(offer.fin);
  enqueue(std::move(out), Tag{id, offer.fin}, offer.first_chunk.size);
}

void RespondCall::on_stream_data(std::uint64_t id, wire::Slice payload, bool fin) {
  serial_.assert_here();
  auto it = incoming_.find(id);
  if (it == incoming_.end() || done_ || outbox_.ending()) return;
  pb::RespondResponse out;
  const auto bytes = payload.size;
  auto* chunk = out.mutable_chunk();
  chunk->set_id(id);
  // A chunk from a gRPC sender is its parsed message's own string: it moves, not copied.
  if (std::string data; payload.release_string(data)) {
    chunk->set_data(std::move(data));
  } else {
    chunk->set_data(reinterpret_cast<const char*>(payload.data), payload.size);
  }
  chunk->set_last(fin);
  enqueue(std::move(out), Tag{id, fin}, bytes);
}

// A requester that ends its request with an error status aborts it.
void RespondCall::on_stream_end(std::uint64_t id, const wire::End& end) {
  serial_.assert_here();
  on_stream_reset(id, wire::Reset{end.status == Status::ok ? Status::cancelled : end.status,
                                  end.app_code, end.message});
}

void RespondCall::on_stream_reset(std::uint64_t id, const wire::Reset& reset) {
  serial_.assert_here();
  drop(id, reset.status, reset.message, true);
}

// Ends one incoming stream early; its queued bytes are discarded.
void RespondCall::drop(std::uint64_t id, Status status, const std::string& message,
                       bool tell_client) {
  auto it = incoming_.find(id);
  if (it == incoming_.end()) return;
  Incoming entry = std::move(it->second);
  incoming_.erase(it);
  count_stream_end(gateway_, status);
  outbox_.erase_if([&](const Tag& tag, const pb::RespondResponse& out) {
    return tag.id == id || (out.has_window() && out.window().id() == id);
  });
  if (entry.broadcast) {
    if (!tell_client || status == Status::slow_consumer) {
      entry.counterpart->deliver_sink_done(entry.sink_index, status);
    }
  } else {
    open_requests_.fetch_sub(1);
    if (!tell_client) entry.counterpart->deliver_reset(wire::Reset{status, 0, message});
  }
  if (tell_client && !done_ && !outbox_.ending()) {
    pb::RespondResponse out;
    auto* reset = out.mutable_reset();
    reset->set_id(id);
    reset->set_status(to_pb(status));
    reset->set_message(message);
    enqueue(std::move(out), Tag{}, 0);
  }
  if (draining_ && incoming_.empty()) drain();
  read_more();
}

void RespondCall::on_stream_credit(std::uint64_t id, std::uint32_t bytes) {
  serial_.assert_here();
  auto it = incoming_.find(id);
  if (it == incoming_.end()) return;
  it->second.response_credit += bytes;
  if (windows_) {
    if (!it->second.response_done && !done_ && !outbox_.ending()) enqueue_window(id, bytes);
    return;
  }
  read_more();
}

// The client granted more of an incoming stream: that much goes back to its sender. Grants
// beyond what the client was sent are dropped, so a sender never gets more than it sent.
void RespondCall::on_client_window(const pb::StreamWindow& window) {
  auto it = incoming_.find(window.id());
  if (it == incoming_.end()) return;  // ended: the grant crossed its end
  auto& entry = it->second;
  const auto bytes =
      static_cast<std::uint32_t>(std::min<std::uint64_t>(window.bytes(), entry.queued));
  if (bytes == 0) return;
  entry.queued -= bytes;
  if (entry.queued > 0) entry.queued_since = std::chrono::steady_clock::now();
  entry.counterpart->deliver_credit(bytes, entry.sink_index);
}

// A response chunk beyond its request's credit: that request is reset at both ends, and the
// call goes on.
void RespondCall::overrun(std::uint64_t id) {
  gateway_.core.counters.grpc.protocol_errors.fetch_add(1, std::memory_order_relaxed);
  spdlog::warn("respond window exceeded door=grpc peer={} request={}", peer_id_.to_string(), id);
  auto counterpart = incoming_.at(id).counterpart;
  counterpart->deliver_reset(
      wire::Reset{Status::protocol_error, 0, "responder exceeded its flow-control window"});
  drop(id, Status::protocol_error, "flow control window exceeded", true);
}

// Credit for request `id`'s response, written ahead of queued data so that it is not held
// behind incoming bytes; merged with a grant for the same request still waiting.
void RespondCall::enqueue_window(std::uint64_t id, std::uint32_t bytes) {
  if (auto* waiting = outbox_.find_urgent(
          [&](const pb::RespondResponse& message) { return message.window().id() == id; })) {
    auto* window = waiting->mutable_window();
    window->set_bytes(window->bytes() + bytes);
    return;  // its size barely changes: still counted as queued
  }
  pb::RespondResponse out;
  out.mutable_window()->set_id(id);
  out.mutable_window()->set_bytes(bytes);
  outbox_.push(std::move(out), Tag{}, 0, true);
  outbox_.pump();
}

void RespondCall::enqueue(pb::RespondResponse message, Tag tag, std::uint32_t bytes) {
  if (tag.id != 0) {
    if (auto it = incoming_.find(tag.id); it != incoming_.end()) {
      if (it->second.queued == 0) it->second.queued_since = std::chrono::steady_clock::now();
      it->second.queued += bytes;
    }
  }
  if (outbox_.push(std::move(message), tag, bytes) > gateway_.limits.max_connection_buffer) {
    // The client does not read what it is sent; it may not hold relay memory.
    gateway_.core.counters.grpc.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    finish(to_grpc(context_, Status::slow_consumer, "outbound buffer limit"));
    return;
  }
  outbox_.pump();
}

void RespondCall::on_write_done(bool ok) {
  serial_.assert_here();
  const auto written = outbox_.write_done(ok);
  if (!ok) {
    finish(grpc::Status(grpc::StatusCode::CANCELLED, "client stopped reading"));
    // The status may have been set while this write was in flight (drain, cancel): finish now.
    outbox_.pump();
    return;
  }
  if (written.tag.id != 0) {
    auto it = incoming_.find(written.tag.id);
    if (it != incoming_.end()) {
      auto& entry = it->second;
      if (!windows_) {  // with windows, the client's grants return the credit
        entry.queued -= std::min<std::uint64_t>(entry.queued, written.bytes);
        if (entry.queued > 0) entry.queued_since = std::chrono::steady_clock::now();
        if (written.bytes > 0) entry.counterpart->deliver_credit(written.bytes, entry.sink_index);
      }
      if (written.tag.last) {
        entry.request_written = true;
        if (entry.broadcast) {
          entry.counterpart->deliver_sink_done(entry.sink_index, Status::ok);
          count_stream_end(gateway_, Status::ok);
          incoming_.erase(it);
        } else if (entry.response_done) {
          open_requests_.fetch_sub(1);
          count_stream_end(gateway_, entry.outcome);
          incoming_.erase(it);
        }
        if (draining_ && incoming_.empty()) drain();
      }
    }
  }
  outbox_.pump();
}

// A broadcast whose bytes have waited longer than the slow-consumer timeout is dropped.
void RespondCall::check_slow_consumers() {
  serial_.assert_here();
  if (done_ || outbox_.ending()) return;
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::uint64_t> slow;
  for (const auto& [id, entry] : incoming_) {
    if (entry.broadcast && entry.queued > 0 &&
        now - entry.queued_since > gateway_.limits.slow_consumer_timeout) {
      slow.push_back(id);
    }
  }
  for (auto id : slow) {
    gateway_.core.counters.grpc.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("slow consumer dropped from broadcast door=grpc peer={}", peer_id_.to_string());
    drop(id, Status::slow_consumer, "receiver too slow for the broadcast", true);
  }
  watchdog_.expires_after(gateway_.limits.slow_consumer_timeout / 4);
  watchdog_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->dispatch([self] { self->check_slow_consumers(); });
  });
}

void RespondCall::on_done() {
  serial_.assert_here();
  if (carrier_) carrier_->downstream_done();
  done_ = true;
  outbox_.close();
  leave();
  self_.reset();
}

}  // namespace switchboard::gateway
