// Requests RPC: per-request routing, credit both ways, deadlines and idle timeouts, ordered
// response writes.
#include "grpc_gateway/requests_call.hpp"

#include <algorithm>

#include "grpc_gateway/auth_checks.hpp"

namespace switchboard::gateway {

// ---- RequestLink: a target's deliveries, run on the call's Serial. ----

// Response bytes run here when the call is idle; not drained, as the target may be inside its
// own handlers. The rest is posted.
void RequestLink::deliver_data(wire::Slice payload, bool fin) {
  call_->serial_.dispatch([call = call_, key = key_, payload = std::move(payload),
                           fin]() mutable { call->on_response_data(key, std::move(payload), fin); },
                          false, call_);
}
void RequestLink::deliver_end(wire::End end) {
  call_->post([call = call_, key = key_, end = std::move(end)] {
    call->on_response_end(key, end.status, end.app_code, end.message, false);
  });
}
void RequestLink::deliver_reset(wire::Reset reset) {
  call_->post([call = call_, key = key_, reset = std::move(reset)] {
    call->on_response_end(key, reset.status, reset.app_code, reset.message, true);
  });
}
void RequestLink::deliver_credit(std::uint32_t bytes, std::uint32_t) {
  call_->post([call = call_, key = key_, bytes] { call->on_credit(key, bytes); });
}

// ---- The call. ----

RequestsCall* RequestsCall::start(GatewayContext& gateway, grpc::CallbackServerContext* context) {
  auto call = std::make_shared<RequestsCall>(gateway, context);
  call->self_ = call;
  call->read_pending_ = true;
  {
    std::lock_guard lock(gateway.peers_mutex);
    call->drain_token_ = gateway.next_call_id++;
    gateway.drainers.emplace(call->drain_token_, [weak = call->weak_from_this()] {
      if (auto self = weak.lock()) self->post([self] { self->drain(); });
    });
  }
  call->StartRead(&call->in_);
  return call.get();
}

RequestsCall::RequestsCall(GatewayContext& gateway, grpc::CallbackServerContext* context)
    : gateway_(gateway),
      context_(context),
      serial_(gateway.next_call_executor()),
      sweep_timer_(serial_.executor()) {}

void RequestsCall::OnReadDone(bool ok) {
  serial_.dispatch([this, ok] { read_done(ok); }, true, shared_from_this());
}
void RequestsCall::OnWriteDone(bool ok) {
  serial_.dispatch([this, ok] { on_write_done(ok); }, true, shared_from_this());
}
void RequestsCall::OnCancel() {
  // gRPC frees the context once the call is done: the deadline is read inside its callback.
  const bool expired = deadline_passed(context_);
  post([self = shared_from_this(), expired] { self->on_cancel(expired); });
}
void RequestsCall::OnDone() {
  post([self = shared_from_this()] { self->on_done(); });
}

void RequestsCall::read_done(bool ok) {
  read_pending_ = false;
  if (done_ || final_status_) return;
  if (!ok && !got_message_ && !context_->IsCancelled()) {
    // gRPC reports a half-close and a message that does not parse alike: a failed read.
    finish(invalid_argument(context_,
                            "the stream ended before its first message, or it did not parse"),
           false);
    return;
  }
  got_message_ = got_message_ || ok;
  if (!ok) {
    // The client sends no more: the requests whose body has not ended never will. The others
    // finish; the RPC ends after the last of them.
    half_closed_ = true;
    std::vector<std::uint64_t> truncated;
    for (const auto& [key, entry] : requests_) {
      if (!entry.request_done) truncated.push_back(key);
    }
    for (auto key : truncated) {
      end_request(key, Status::cancelled, "the stream was half-closed before the request's last");
    }
    if (requests_.empty()) finish_ok();
    return;
  }
  switch (in_.kind_case()) {
    case pb::RequestsClientMessage::kOpen:
      open(*in_.mutable_open());
      break;
    case pb::RequestsClientMessage::kChunk:
      on_chunk(*in_.mutable_chunk());
      break;
    case pb::RequestsClientMessage::kCancel:
      on_cancel_request(in_.cancel());
      break;
    default:
      finish(invalid_argument(context_, "empty Requests message"), false);
      return;
  }
  read_more();
}

void RequestsCall::open(pb::RequestOpen& open) {
  const std::uint64_t id = open.id();
  if (id == 0) {
    finish(invalid_argument(context_, "a request id must not be 0"), false);
    return;
  }
  if (by_id_.contains(id)) {
    finish(invalid_argument(context_, "request id " + std::to_string(id) + " is still open"),
           false);
    return;
  }
  auto checked = check_open(open.open());
  if (!checked.request) {
    finish(invalid_argument(context_, checked.error), false);
    return;
  }
  const OpenRequest& valid = *checked.request;
  const auto& request = open.open();
  if (requests_.size() >= gateway_.limits.max_streams_per_connection) {
    refuse(id, Status::resource_exhausted, "too many open requests on this call");
    return;
  }
  if (draining_) {
    refuse(id, Status::refused, "relay is draining");
    return;
  }
  core::auth::Grant grant;
  if (auto refusal = check_request_token(gateway_, context_, request.token(), valid.channel,
                                         valid.sender, core::auth::Permission::send, grant)) {
    refuse(id, refusal->status, refusal->reason);
    return;
  }
  const core::StreamRequest stream_request{
      "grpc",
      0,
      valid.channel,
      valid.sender,
      valid.target.is_nil() ? wire::StreamKind::to_any : wire::StreamKind::to_peer,
      valid.target};
  if (auto admitted =
          core::admit_stream(gateway_.core, stream_request, grant, true, context_->peer());
      !admitted.ok()) {
    refuse(id, admitted.status, admitted.reason);
    return;
  }

  const auto now = Clock::now();
  Clock::time_point deadline = Clock::time_point::max();
  if (open.deadline_ms() != 0) deadline = now + std::chrono::milliseconds(open.deadline_ms());
  const auto call_deadline = remaining_ms(context_);
  std::uint32_t remaining = open.deadline_ms();
  if (call_deadline != 0 && (remaining == 0 || call_deadline < remaining)) {
    remaining = call_deadline;
  }

  const std::uint64_t key = next_key_++;
  core::StreamOffer offer;
  offer.kind = stream_request.kind;
  offer.sender = valid.sender;
  offer.deadline_ms = remaining;
  offer.idle_ms = request.idle_timeout_ms();
  offer.metadata = std::move(checked.request->metadata);
  offer.first_chunk = to_slice(request.data());
  offer.fin = open.last();
  offer.counterpart = std::make_shared<RequestLink>(shared_from_this(), key);
  auto routed = core::route_request(gateway_.core, stream_request, offer);
  if (!routed.target) {
    refuse(id, routed.status, routed.message);
    return;
  }
  count_stream_start(gateway_);
  gateway_.core.counters.grpc.payload_bytes_in.fetch_add(request.data().size(),
                                                         std::memory_order_relaxed);
  Request entry;
  entry.id = id;
  entry.target = std::move(routed.target);
  entry.credit = gateway_window(gateway_) - static_cast<std::int64_t>(request.data().size());
  entry.request_done = open.last();
  entry.deadline = deadline;
  entry.idle_timeout = core::stream_idle_timeout(gateway_.limits, request.idle_timeout_ms());
  entry.last_activity = now;
  requests_.emplace(key, std::move(entry));
  by_id_.emplace(id, key);
  arm_sweep();
}

void RequestsCall::on_chunk(pb::RequestChunk& chunk) {
  auto found = by_id_.find(chunk.id());
  // Unknown ids belong to requests that just ended (their response crossing this chunk).
  if (found == by_id_.end()) return;
  auto& entry = requests_.at(found->second);
  if (entry.request_done) {
    end_request(found->second, Status::protocol_error, "request chunk after the request's last");
    return;
  }
  auto& data = *chunk.mutable_data();
  entry.credit -= static_cast<std::int64_t>(data.size());
  entry.last_activity = Clock::now();
  auto& counters = gateway_.core.counters.grpc;
  counters.payload_bytes_in.fetch_add(data.size(), std::memory_order_relaxed);
  if (entry.credit <= 0 && !chunk.last()) {
    counters.credit_stalls.fetch_add(1, std::memory_order_relaxed);
  }
  entry.request_done = chunk.last();
  if (!data.empty() || chunk.last()) entry.target->deliver_data(take_slice(data), chunk.last());
}

void RequestsCall::on_cancel_request(const pb::StreamCancel& cancel) {
  auto found = by_id_.find(cancel.id());
  if (found == by_id_.end()) return;
  const Status status = cancel.status() == pb::OK
                            ? Status::cancelled
                            : status_from_client(cancel.status(), Status::cancelled);
  end_request(found->second, status,
              cancel.message().empty() ? "cancelled by sender" : cancel.message());
}

// Ends a request early on the relay's side: its target is reset, its response bytes not yet
// written are dropped, and the client gets `end` with `status`, after which the id is free.
void RequestsCall::end_request(std::uint64_t key, Status status, const std::string& message) {
  auto it = requests_.find(key);
  if (it == requests_.end()) return;
  auto& entry = it->second;
  entry.target->deliver_reset(wire::Reset{status, 0, message});
  entry.request_done = true;
  std::erase_if(outbox_, [&](const Outgoing& out) {
    if (out.key != key) return false;
    outbox_bytes_ -= std::min(outbox_bytes_, out.size);
    return true;
  });
  on_response_end(key, status, 0, message, true);
}

// A request that never reached a target: answered at once, the stream goes on.
void RequestsCall::refuse(std::uint64_t id, Status status, const std::string& message) {
  Outgoing out;
  auto* end = out.message.mutable_end();
  end->set_request_id(id);
  end->set_status(static_cast<pb::Status>(status));
  end->set_message(message);
  enqueue(std::move(out));
}

void RequestsCall::on_response_data(std::uint64_t key, wire::Slice payload, bool fin) {
  auto it = requests_.find(key);
  if (it == requests_.end() || done_ || final_status_) {
    // Nobody takes these bytes any more: the target may send on.
    if (it != requests_.end() && payload.size > 0)
      it->second.target->deliver_credit(payload.size, 0);
    return;
  }
  auto& entry = it->second;
  entry.last_activity = Clock::now();
  const bool request_done = entry.request_done;
  if (fin) {
    entry.response_done = true;
    entry.outcome = Status::ok;
  }
  Outgoing out;
  out.key = key;
  out.bytes = static_cast<std::uint32_t>(payload.size);
  auto* chunk = out.message.mutable_chunk();
  chunk->set_request_id(entry.id);
  if (std::string bytes; payload.release_string(bytes)) {
    chunk->set_data(std::move(bytes));
  } else {
    chunk->set_data(reinterpret_cast<const char*>(payload.data), payload.size);
  }
  chunk->set_last(fin);
  // May finish the call (buffer limit), which forgets every request: `entry` is not used after.
  enqueue(std::move(out));
  if (fin) complete(key, !request_done);
}

void RequestsCall::on_response_end(std::uint64_t key, Status status, std::uint32_t app_code,
                                   const std::string& message, bool target_gone) {
  auto it = requests_.find(key);
  if (it == requests_.end()) return;
  auto& entry = it->second;
  entry.response_done = true;
  entry.outcome = status;
  // A target that ended its response leaves the rest of the request unwanted; one that reset
  // the stream has ended both directions already.
  const bool abandon_target = !target_gone && !entry.request_done;
  if (!done_ && !final_status_) {
    Outgoing out;
    if (status == Status::ok) {
      auto* chunk = out.message.mutable_chunk();
      chunk->set_request_id(entry.id);
      chunk->set_last(true);
    } else {
      auto* end = out.message.mutable_end();
      end->set_request_id(entry.id);
      end->set_status(static_cast<pb::Status>(status));
      end->set_app_code(app_code);
      end->set_message(message);
    }
    enqueue(std::move(out));  // may finish the call: `entry` is not used after
  }
  complete(key, abandon_target);
}

void RequestsCall::on_credit(std::uint64_t key, std::uint32_t bytes) {
  auto it = requests_.find(key);
  if (it == requests_.end()) return;
  it->second.credit += bytes;
  it->second.last_activity = Clock::now();
  read_more();
}

// Forgets a request whose response ended; with `abandon_target` the target is told that the
// rest of the request is not coming.
void RequestsCall::complete(std::uint64_t key, bool abandon_target) {
  auto it = requests_.find(key);
  if (it == requests_.end()) return;
  if (abandon_target) {
    it->second.target->deliver_reset(wire::Reset{Status::cancelled, 0, "response ended"});
  }
  count_stream_end(gateway_, it->second.outcome);
  by_id_.erase(it->second.id);
  requests_.erase(it);
  if (requests_.empty() && (half_closed_ || draining_)) {
    if (half_closed_) {
      finish_ok();
    } else {
      drain();
    }
    return;
  }
  read_more();  // the request may have been the one out of credit
}

// Ends every open request with `status` (to its target and, while the call can write, to the
// client).
void RequestsCall::end_all(Status status, const std::string& message) {
  for (auto& [key, entry] : requests_) {
    entry.target->deliver_reset(wire::Reset{status, 0, message});
    count_stream_end(gateway_, status);
  }
  requests_.clear();
  by_id_.clear();
}

void RequestsCall::enqueue(Outgoing outgoing) {
  outgoing.size = outgoing.bytes + static_cast<std::size_t>(outgoing.message.ByteSizeLong());
  outbox_bytes_ += outgoing.size;
  outbox_.push_back(std::move(outgoing));
  if (outbox_bytes_ > gateway_.limits.max_connection_buffer) {
    // The client does not read what it is sent; it may not hold relay memory.
    gateway_.core.counters.grpc.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    finish(to_grpc(context_, Status::slow_consumer, "outbound buffer limit"), false);
    return;
  }
  pump();
}

// Starts the next write, or finishes once the outbox is empty and the status is known.
void RequestsCall::pump() {
  if (write_pending_ || finished_ || done_) return;
  if (!outbox_.empty()) {
    writing_ = std::move(outbox_.front());
    outbox_.pop_front();
    write_pending_ = true;
    StartWrite(&writing_.message);
    return;
  }
  if (final_status_) {
    finished_ = true;
    Finish(*final_status_);
  }
}

void RequestsCall::on_write_done(bool ok) {
  write_pending_ = false;
  outbox_bytes_ -= std::min(outbox_bytes_, writing_.size);
  if (!ok) {
    finish(grpc::Status(grpc::StatusCode::CANCELLED, "client stopped reading"), false);
    pump();
    return;
  }
  if (writing_.bytes > 0) {
    gateway_.core.counters.grpc.payload_bytes_out.fetch_add(writing_.bytes,
                                                            std::memory_order_relaxed);
    // The client took these bytes: the target may send as many more. After the response's
    // end the target needs no more credit.
    if (auto it = requests_.find(writing_.key); it != requests_.end()) {
      it->second.last_activity = Clock::now();
      it->second.target->deliver_credit(writing_.bytes, 0);
    }
  }
  pump();
}

// Reads the next message unless a request whose body is still coming has no credit left: its
// target is slower than this client, and the next message may be more of that request.
void RequestsCall::read_more() {
  if (read_pending_ || half_closed_ || done_ || final_status_) return;
  for (const auto& [key, entry] : requests_) {
    if (!entry.request_done && entry.credit <= 0) return;
  }
  read_pending_ = true;
  StartRead(&in_);
}

// With `flush`, what is queued (the last responses, the ends of refused requests) goes out
// before Finish; without, it is dropped: the client is gone, stopped reading or broke the
// protocol.
void RequestsCall::finish(grpc::Status status, bool flush) {
  if (finished_ || done_ || final_status_) return;
  final_status_ = std::move(status);
  const Status reason = final_status_->ok() ? Status::cancelled : Status::peer_gone;
  end_all(reason, "sender's call ended");
  if (!flush) {
    outbox_.clear();
    outbox_bytes_ = 0;
  }
  {
    std::lock_guard lock(gateway_.peers_mutex);
    gateway_.drainers.erase(drain_token_);
  }
  sweep_timer_.cancel();
  pump();
}

void RequestsCall::drain() {
  draining_ = true;
  // Once Finish was called the context may be gone: do not build a status from it.
  if (finished_ || done_ || final_status_ || !requests_.empty()) return;
  finish(to_grpc(context_, Status::refused, "relay is draining"), true);
}

// The client half-closed and every request has ended.
void RequestsCall::finish_ok() {
  if (finished_ || done_ || final_status_) return;
  finish(to_grpc(context_, Status::ok, ""), true);
}

void RequestsCall::on_cancel(bool expired) {
  const Status status = expired ? Status::deadline_exceeded : Status::cancelled;
  end_all(status, expired ? "deadline exceeded" : "sender cancelled");
  if (finished_ || done_) return;  // Finish was called: the context may already be gone
  finish(expired ? to_grpc(context_, Status::deadline_exceeded, "deadline exceeded")
                 : grpc::Status::CANCELLED,
         false);
}

void RequestsCall::on_done() {
  done_ = true;
  end_all(Status::cancelled, "sender went away");
  {
    std::lock_guard lock(gateway_.peers_mutex);
    gateway_.drainers.erase(drain_token_);
  }
  outbox_.clear();
  sweep_timer_.cancel();
  self_.reset();
}

// One timer per call, due at the earliest deadline or idle expiry among its requests.
void RequestsCall::arm_sweep() {
  if (done_ || final_status_) return;
  auto due = Clock::time_point::max();
  for (const auto& [key, entry] : requests_) {
    due = std::min(due, entry.deadline);
    if (entry.idle_timeout.count() > 0)
      due = std::min(due, entry.last_activity + entry.idle_timeout);
  }
  if (due == Clock::time_point::max() || due >= sweep_due_) return;
  sweep_due_ = due;
  sweep_timer_.expires_at(due);
  sweep_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->post([self] { self->sweep(); });
  });
}

void RequestsCall::sweep() {
  sweep_due_ = Clock::time_point::max();
  if (done_ || final_status_) return;
  const auto now = Clock::now();
  std::vector<std::pair<std::uint64_t, Status>> expired;
  for (const auto& [key, entry] : requests_) {
    if (now >= entry.deadline) {
      expired.emplace_back(key, Status::deadline_exceeded);
    } else if (entry.idle_timeout.count() > 0 && now >= entry.last_activity + entry.idle_timeout) {
      expired.emplace_back(key, Status::idle_timeout);
    }
  }
  for (const auto& [key, status] : expired) {
    if (final_status_) return;  // an end crossed the buffer limit and finished the call
    end_request(key, status,
                status == Status::deadline_exceeded ? "deadline exceeded" : "stream idle timeout");
  }
  arm_sweep();
}

}  // namespace switchboard::gateway
