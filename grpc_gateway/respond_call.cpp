// Respond RPC: join, presence, incoming requests and broadcasts, responses with credit.
#include "grpc_gateway/respond_call.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "grpc_gateway/auth_checks.hpp"

namespace switchboard::gateway {

namespace asio = boost::asio;

// ---- IncomingLink: deliveries from a sender, run on the call's Serial. ----

// Run here when the call is idle. Not drained: the sender may hold its read lock, which a queued
// write completion (returning credit to that sender) would take.
void IncomingLink::deliver_data(wire::Slice payload, bool fin) {
  call_->serial_.dispatch([call = call_, id = id_, payload = std::move(payload),
                           fin]() mutable { call->on_data(id, std::move(payload), fin); },
                          false, call_);
}
void IncomingLink::deliver_end(wire::End end) {
  // A requester that ends its request with an error status aborts it.
  deliver_reset(wire::Reset{end.status == Status::ok ? Status::cancelled : end.status, end.app_code,
                            std::move(end.message)});
}
void IncomingLink::deliver_reset(wire::Reset reset) {
  call_->post([call = call_, id = id_, reset = std::move(reset)] { call->on_reset(id, reset); });
}
void IncomingLink::deliver_credit(std::uint32_t bytes, std::uint32_t) {
  call_->post([call = call_, id = id_, bytes] { call->on_credit(id, bytes); });
}

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

// gRPC's thread holds none of our locks here: the reaction runs, and drains, where it lands.
void RespondCall::OnReadDone(bool ok) {
  serial_.dispatch([this, ok] { read_done(ok); }, true, shared_from_this());
}
// The next queued message starts here, before the Serial runs, so consecutive writes are not
// paced by the handlers; what the finished write means (credit, ends) is decided on the Serial.
void RespondCall::OnWriteDone(bool ok) {
  Written written;
  bool next = false;
  {
    std::lock_guard lock(write_mutex_);
    written.id = writing_.id;
    written.bytes = writing_.bytes;
    written.last = writing_.last;
    written.size = writing_.size;
    write_pending_ = false;
    if (ok && writes_open_ && (!windows_out_.empty() || !outbox_.empty())) {
      take_next_write();
      next = true;
    }
  }
  // Handed to the Serial before the next write starts: it sees the writes' completions in order.
  serial_.dispatch([this, ok, written] { on_write_done(ok, written); }, true, shared_from_this());
  if (next) StartWrite(&writing_.message);
}
void RespondCall::OnCancel() {
  post([self = shared_from_this()] { self->finish(grpc::Status::CANCELLED); });
}
void RespondCall::OnDone() {
  post([self = shared_from_this()] { self->on_done(); });
}

void RespondCall::on_presence(const wire::Presence& event) {
  post([self = shared_from_this(), event] {
    if (self->done_ || self->final_status_) return;
    Outgoing out;
    auto* update = out.message.mutable_presence();
    update->set_kind(event.event == wire::PresenceEvent::joined ? pb::PresenceUpdate::JOINED
                                                                : pb::PresenceUpdate::LEFT);
    update->set_version(event.version);
    for (const auto& id : event.peers) update->add_peers(id.to_string());
    self->enqueue(std::move(out));
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
  auto link = std::make_shared<IncomingLink>(shared_from_this(), id);
  // Run here when the call is idle (senders offer streams holding no registry lock), else queued:
  // either way before the sender's first chunk. Not drained, as for a chunk.
  serial_.dispatch(
      [self = shared_from_this(), id, offer = std::move(offer)]() mutable {
        self->on_incoming(id, std::move(offer));
      },
      false, shared_from_this());
  return link;
}

bool RespondCall::has_capacity() const {
  return open_requests_.load() < gateway_.limits.max_streams_per_connection;
}

void RespondCall::finish(grpc::Status status) {
  if (finished_ || done_ || final_status_) return;
  final_status_ = std::move(status);
  leave();
  pump();
}

// Leaves the channel and ends every stream: counterparts learn PEER_GONE.
void RespondCall::leave() {
  if (joined_) {
    joined_ = false;
    gateway_.registry.leave(channel_, peer_id_);
  }
  {
    std::lock_guard lock(gateway_.peers_mutex);
    gateway_.drainers.erase(drain_token_);
  }
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
  {
    std::lock_guard lock(write_mutex_);
    outbox_.clear();
    windows_out_.clear();
  }
  outbox_bytes_ = 0;
  watchdog_.cancel();
  token_expiry_.cancel();
}

void RespondCall::read_more() {
  if (read_pending_ || done_ || final_status_) return;
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
  read_pending_ = false;
  if (done_ || final_status_) return;
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
    case pb::RespondClientMessage::kChunk: {
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
    case pb::RespondClientMessage::kEnd: {
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
    case pb::RespondClientMessage::kCancel: {
      const auto& cancel = in_.cancel();
      drop(cancel.id(),
           cancel.status() == pb::OK ? Status::cancelled
                                     : status_from_client(cancel.status(), Status::cancelled),
           cancel.message().empty() ? "cancelled by responder" : cancel.message(), false);
      break;
    }
    case pb::RespondClientMessage::kWindow:
      if (!windows_) {
        finish(invalid_argument(context_, "window needs join.stream_windows"));
        return;
      }
      on_client_window(in_.window());
      break;
    case pb::RespondClientMessage::kJoin:
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
    counters.count_handshake_failure(in_.kind_case() == pb::RespondClientMessage::kJoin
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
  auto joined = gateway_.registry.join(channel, peer, true, shared_from_this());
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
  {
    std::lock_guard lock(gateway_.peers_mutex);
    drain_token_ = gateway_.next_call_id++;
    gateway_.drainers.emplace(drain_token_, [weak = weak_from_this()] {
      if (auto self = weak.lock()) {
        self->post([self] { self->drain(); });
      }
    });
  }
  Outgoing welcome;
  welcome.message.mutable_joined()->set_peer_id(peer_id_.to_string());
  if (windows_) {
    welcome.message.mutable_joined()->set_response_window(
        static_cast<std::uint32_t>(response_window_));
    welcome.message.mutable_joined()->set_incoming_window(gateway_.limits.stream_window);
  }
  enqueue(std::move(welcome));
  Outgoing snapshot;
  auto* update = snapshot.message.mutable_presence();
  update->set_kind(pb::PresenceUpdate::SNAPSHOT);
  update->set_version(joined.version);
  for (const auto& id : joined.others) update->add_peers(id.to_string());
  enqueue(std::move(snapshot));
  check_slow_consumers();
  arm_expiry(token_expiry_, grant,
             [self = shared_from_this()] { self->post([self] { self->token_expired_now(); }); });
  read_more();
}

void RespondCall::token_expired_now() {
  // Once Finish was called the context may be gone: do not build a status from it.
  if (finished_ || done_ || final_status_) return;
  finish(token_expired(gateway_, context_, "respond", channel_));
}

void RespondCall::drain() {
  draining_ = true;
  // Once Finish was called the context may be gone: do not build a status from it.
  if (finished_ || done_ || final_status_ || !incoming_.empty()) return;
  finish(to_grpc(context_, Status::refused, "relay is draining"));
}

void RespondCall::on_incoming(std::uint64_t id, core::StreamOffer offer) {
  const bool broadcast = offer.kind == wire::StreamKind::broadcast;
  if (done_ || final_status_ || !joined_) {
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
  Outgoing out;
  out.id = id;
  out.bytes = offer.first_chunk.size;
  out.last = offer.fin;
  auto* start = out.message.mutable_start();
  start->set_id(id);
  start->set_broadcast(broadcast);
  if (!offer.sender.is_nil()) start->set_sender(offer.sender.to_string());
  start->set_deadline_ms(offer.deadline_ms);
  from_metadata(offer.metadata, start->mutable_metadata());
  start->set_data(reinterpret_cast<const char*>(offer.first_chunk.data), offer.first_chunk.size);
  start->set_last(offer.fin);
  enqueue(std::move(out));
}

void RespondCall::on_data(std::uint64_t id, wire::Slice payload, bool fin) {
  auto it = incoming_.find(id);
  if (it == incoming_.end() || done_ || final_status_) return;
  Outgoing out;
  out.id = id;
  out.bytes = payload.size;
  out.last = fin;
  auto* chunk = out.message.mutable_chunk();
  chunk->set_id(id);
  // A chunk from a gRPC sender is its parsed message's own string: it moves, not copied.
  if (std::string bytes; payload.release_string(bytes)) {
    chunk->set_data(std::move(bytes));
  } else {
    chunk->set_data(reinterpret_cast<const char*>(payload.data), payload.size);
  }
  chunk->set_last(fin);
  enqueue(std::move(out));
}

void RespondCall::on_reset(std::uint64_t id, const wire::Reset& reset) {
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
  {
    std::lock_guard lock(write_mutex_);
    std::erase_if(outbox_, [&](const Outgoing& out) {
      if (out.id != id) return false;
      outbox_bytes_ -= out.size;
      return true;
    });
    std::erase_if(windows_out_, [&](const Outgoing& out) {
      if (out.message.window().id() != id) return false;
      outbox_bytes_ -= out.size;
      return true;
    });
  }
  if (entry.broadcast) {
    if (!tell_client || status == Status::slow_consumer) {
      entry.counterpart->deliver_sink_done(entry.sink_index, status);
    }
  } else {
    open_requests_.fetch_sub(1);
    if (!tell_client) entry.counterpart->deliver_reset(wire::Reset{status, 0, message});
  }
  if (tell_client && !done_ && !final_status_) {
    Outgoing out;
    auto* reset = out.message.mutable_reset();
    reset->set_id(id);
    reset->set_status(static_cast<pb::Status>(status));
    reset->set_message(message);
    enqueue(std::move(out));
  }
  if (draining_ && incoming_.empty()) drain();
  read_more();
}

void RespondCall::on_credit(std::uint64_t id, std::uint32_t bytes) {
  auto it = incoming_.find(id);
  if (it == incoming_.end()) return;
  it->second.response_credit += bytes;
  if (windows_) {
    if (!it->second.response_done && !done_ && !final_status_) enqueue_window(id, bytes);
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
  {
    std::lock_guard lock(write_mutex_);
    auto waiting = std::find_if(windows_out_.begin(), windows_out_.end(), [&](const Outgoing& out) {
      return out.message.window().id() == id;
    });
    if (waiting != windows_out_.end()) {
      auto* window = waiting->message.mutable_window();
      window->set_bytes(window->bytes() + bytes);
      return;  // its size barely changes: still counted as queued
    }
    Outgoing out;
    out.message.mutable_window()->set_id(id);
    out.message.mutable_window()->set_bytes(bytes);
    out.size = static_cast<std::size_t>(out.message.ByteSizeLong());
    outbox_bytes_ += out.size;
    windows_out_.push_back(std::move(out));
  }
  pump();
}

void RespondCall::enqueue(Outgoing outgoing) {
  if (outgoing.id != 0) {
    if (auto it = incoming_.find(outgoing.id); it != incoming_.end()) {
      if (it->second.queued == 0) it->second.queued_since = std::chrono::steady_clock::now();
      it->second.queued += outgoing.bytes;
    }
  }
  outgoing.size = outgoing.bytes + static_cast<std::size_t>(outgoing.message.ByteSizeLong());
  outbox_bytes_ += outgoing.size;
  {
    std::lock_guard lock(write_mutex_);
    outbox_.push_back(std::move(outgoing));
  }
  if (outbox_bytes_ > gateway_.limits.max_connection_buffer) {
    // The client does not read what it is sent; it may not hold relay memory.
    gateway_.core.counters.grpc.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    finish(to_grpc(context_, Status::slow_consumer, "outbound buffer limit"));
    return;
  }
  pump();
}

void RespondCall::pump() {
  if (finished_ || done_) return;
  bool start = false;
  {
    std::lock_guard lock(write_mutex_);
    if (write_pending_) return;
    if (!windows_out_.empty() || !outbox_.empty()) {
      take_next_write();
      start = true;
    } else if (final_status_) {
      finished_ = true;
      writes_open_ = false;
    }
  }
  if (start) {
    StartWrite(&writing_.message);
  } else if (finished_) {
    Finish(*final_status_);
  }
}

// Moves the next message (a window first, else the outbox's first) into `writing_`. Called with
// write_mutex_ held and a queue not empty.
void RespondCall::take_next_write() {
  auto& queue = windows_out_.empty() ? outbox_ : windows_out_;
  writing_ = std::move(queue.front());
  queue.pop_front();
  write_pending_ = true;
}

void RespondCall::on_write_done(bool ok, const Written& written) {
  outbox_bytes_ -= std::min<std::size_t>(outbox_bytes_, written.size);
  if (!ok) {
    finish(grpc::Status(grpc::StatusCode::CANCELLED, "client stopped reading"));
    // The status may have been set while this write was in flight (drain, cancel): finish now.
    pump();
    return;
  }
  if (written.id != 0) {
    gateway_.core.counters.grpc.payload_bytes_out.fetch_add(written.bytes,
                                                            std::memory_order_relaxed);
    auto it = incoming_.find(written.id);
    if (it != incoming_.end()) {
      auto& entry = it->second;
      if (!windows_) {  // with windows, the client's grants return the credit
        entry.queued -= std::min<std::uint64_t>(entry.queued, written.bytes);
        if (entry.queued > 0) entry.queued_since = std::chrono::steady_clock::now();
        if (written.bytes > 0) entry.counterpart->deliver_credit(written.bytes, entry.sink_index);
      }
      if (written.last) {
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
  pump();
}

// A broadcast whose bytes have waited longer than the slow-consumer timeout is dropped.
void RespondCall::check_slow_consumers() {
  if (done_ || final_status_) return;
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
    if (!ec) self->post([self] { self->check_slow_consumers(); });
  });
}

void RespondCall::on_done() {
  done_ = true;
  {
    std::lock_guard lock(write_mutex_);
    writes_open_ = false;
  }
  leave();
  self_.reset();
}

}  // namespace switchboard::gateway
