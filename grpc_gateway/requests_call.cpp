// Requests RPC: per-request routing, credit both ways, deadlines and idle timeouts, ordered
// response writes.
#include "grpc_gateway/requests_call.hpp"

#include <algorithm>

#include "grpc_gateway/auth_checks.hpp"
#include "grpc_gateway/carried_request.hpp"

namespace switchboard::gateway {

// ---- The call. ----

RequestsCall* RequestsCall::start(GatewayContext& gateway, grpc::CallbackServerContext* context) {
  auto call = std::make_shared<RequestsCall>(gateway, context);
  call->self_ = call;
  call->read_pending_ = true;
  call->dispatch([call] { call->drain_registration_ = call->gateway_.drains.add(call); });
  call->StartRead(&call->in_);
  return call.get();
}

RequestsCall::RequestsCall(GatewayContext& gateway, grpc::CallbackServerContext* context)
    : gateway_(gateway),
      context_(context),
      serial_(gateway.next_call_executor()),
      sweep_timer_(serial_.executor()) {}

// gRPC calls OnDone after the last read and write completion, and its handler is queued behind
// theirs: the call outlives these handlers without holding itself.
void RequestsCall::OnReadDone(bool ok) {
  serial_.dispatch([this, ok] { read_done(ok); }, shared_from_this());
}
void RequestsCall::OnWriteDone(bool ok) {
  serial_.dispatch([this, ok] { on_write_done(ok); }, shared_from_this());
}
void RequestsCall::OnCancel() {
  // gRPC frees the context once the call is done: the deadline is read inside its callback.
  const bool expired = deadline_passed(context_);
  dispatch([self = shared_from_this(), expired] { self->on_cancel(expired); });
}
void RequestsCall::OnDone() {
  dispatch([self = shared_from_this()] { self->on_done(); });
}

void RequestsCall::read_done(bool ok) {
  serial_.assert_here();
  read_pending_ = false;
  if (done_ || outbox_.ending()) return;
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
      if (!entry.stream.body_done()) truncated.push_back(key);
    }
    for (auto key : truncated) {
      end_request(key, Status::cancelled, "the stream was half-closed before the request's last");
    }
    if (requests_.empty()) finish_ok();
    return;
  }
  switch (in_.kind_case()) {
    case pb::RequestsRequest::kOpen:
      open(*in_.mutable_open());
      break;
    case pb::RequestsRequest::kChunk:
      on_chunk(*in_.mutable_chunk());
      break;
    case pb::RequestsRequest::kCancel:
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
  const auto where = gateway_.core.directory->locate(valid.channel);
  const auto carry_to = carry_target(context_, where);
  const core::StreamRequest stream_request{
      "grpc",
      0,
      valid.channel,
      valid.sender,
      valid.target.is_nil() ? wire::StreamKind::to_any : wire::StreamKind::to_peer,
      valid.target};
  if (!carry_to.empty()) {
    // The relay serving the channel applies the stream rules (the token is checked here too).
    if (gateway_.registry.draining()) {
      refuse(id, Status::refused, "relay is draining");
      return;
    }
  } else if (auto admitted =
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
  offer.counterpart = std::make_shared<StreamLink<RequestsCall>>(shared_from_this(), key);
  if (!carry_to.empty()) {
    // Another relay serves the channel: the request goes there as a Send of its own.
    auto system_deadline = std::chrono::system_clock::time_point::max();
    if (open.deadline_ms() != 0) {
      system_deadline =
          std::chrono::system_clock::now() + std::chrono::milliseconds(open.deadline_ms());
    }
    const auto first_bytes = request.data().size();
    const auto idle_ms = request.idle_timeout_ms();
    auto target = CarriedRequest::start(gateway_.owners, gateway_.next_call_executor(), *context_,
                                        carry_to, std::move(*open.mutable_open()), open.last(),
                                        system_deadline, std::move(offer.counterpart));
    requests_.emplace(key, Request{id, RequestStream(gateway_, std::move(target), first_bytes,
                                                     open.last(), idle_ms, deadline)});
    by_id_.emplace(id, key);
    arm_sweep();
    return;
  }
  auto routed = core::route_request(gateway_.core, stream_request, offer);
  if (!routed.target) {
    refuse(id, routed.status, routed.message);
    return;
  }
  requests_.emplace(
      key, Request{id, RequestStream(gateway_, std::move(routed.target), request.data().size(),
                                     open.last(), request.idle_timeout_ms(), deadline)});
  by_id_.emplace(id, key);
  arm_sweep();
}

void RequestsCall::on_chunk(pb::RequestChunk& chunk) {
  auto found = by_id_.find(chunk.id());
  // Unknown ids belong to requests that just ended (their response crossing this chunk).
  if (found == by_id_.end()) return;
  auto& stream = requests_.at(found->second).stream;
  if (stream.body_done()) {
    end_request(found->second, Status::protocol_error, "request chunk after the request's last");
    return;
  }
  stream.forward(*chunk.mutable_data(), chunk.last());
}

void RequestsCall::on_cancel_request(const pb::StreamCancel& cancel) {
  auto found = by_id_.find(cancel.id());
  if (found == by_id_.end()) return;
  const Status status = cancel_status_from_client(cancel.status());
  end_request(found->second, status,
              cancel.message().empty() ? "cancelled by sender" : cancel.message());
}

// Ends a request early on the relay's side: its target is reset, its response bytes not yet
// written are dropped, and the client gets `end` with `status`, after which the id is free.
void RequestsCall::end_request(std::uint64_t key, Status status, const std::string& message) {
  auto it = requests_.find(key);
  if (it == requests_.end()) return;
  auto& entry = it->second;
  entry.stream.reset(status, message);
  outbox_.erase_if([&](std::uint64_t tag, const pb::RequestsResponse&) { return tag == key; });
  on_response_end(key, status, 0, message, true);
}

// A request that never reached a target: answered at once, the stream goes on.
void RequestsCall::refuse(std::uint64_t id, Status status, const std::string& message) {
  pb::RequestsResponse out;
  auto* end = out.mutable_end();
  end->set_request_id(id);
  end->set_status(to_pb(status));
  end->set_message(message);
  enqueue(std::move(out), 0, 0);
}

void RequestsCall::on_stream_data(std::uint64_t key, wire::Slice payload, bool fin) {
  serial_.assert_here();
  auto it = requests_.find(key);
  if (it == requests_.end() || done_ || outbox_.ending()) {
    // Nobody takes these bytes any more: the target may send on.
    if (it != requests_.end() && payload.size > 0)
      it->second.stream.target()->deliver_credit(payload.size, 0);
    return;
  }
  auto& entry = it->second;
  entry.stream.touch();
  const bool body_done = entry.stream.body_done();
  if (fin) entry.stream.end_response(Status::ok);
  pb::RequestsResponse out;
  const auto bytes = static_cast<std::uint32_t>(payload.size);
  auto* chunk = out.mutable_chunk();
  chunk->set_request_id(entry.id);
  if (std::string data; payload.release_string(data)) {
    chunk->set_data(std::move(data));
  } else {
    chunk->set_data(reinterpret_cast<const char*>(payload.data), payload.size);
  }
  chunk->set_last(fin);
  // May finish the call (buffer limit), which forgets every request: `entry` is not used after.
  enqueue(std::move(out), key, bytes);
  if (fin) complete(key, !body_done);
}

void RequestsCall::on_stream_end(std::uint64_t key, const wire::End& end) {
  serial_.assert_here();
  on_response_end(key, end.status, end.app_code, end.message, false);
}

void RequestsCall::on_stream_reset(std::uint64_t key, const wire::Reset& reset) {
  serial_.assert_here();
  on_response_end(key, reset.status, reset.app_code, reset.message, true);
}

void RequestsCall::on_response_end(std::uint64_t key, Status status, std::uint32_t app_code,
                                   const std::string& message, bool target_gone) {
  auto it = requests_.find(key);
  if (it == requests_.end()) return;
  auto& entry = it->second;
  entry.stream.end_response(status);
  // A target that ended its response leaves the rest of the request unwanted; one that reset
  // the stream has ended both directions already.
  const bool abandon_target = !target_gone && !entry.stream.body_done();
  if (!done_ && !outbox_.ending()) {
    pb::RequestsResponse out;
    if (status == Status::ok) {
      auto* chunk = out.mutable_chunk();
      chunk->set_request_id(entry.id);
      chunk->set_last(true);
    } else {
      auto* end = out.mutable_end();
      end->set_request_id(entry.id);
      end->set_status(to_pb(status));
      end->set_app_code(app_code);
      end->set_message(message);
    }
    enqueue(std::move(out), 0, 0);  // may finish the call: `entry` is not used after
  }
  complete(key, abandon_target);
}

void RequestsCall::on_stream_credit(std::uint64_t key, std::uint32_t bytes) {
  serial_.assert_here();
  auto it = requests_.find(key);
  if (it == requests_.end()) return;
  it->second.stream.credit(bytes);
  read_more();
}

// Forgets a request whose response ended; with `abandon_target` the target is told that the
// rest of the request is not coming.
void RequestsCall::complete(std::uint64_t key, bool abandon_target) {
  auto it = requests_.find(key);
  if (it == requests_.end()) return;
  if (abandon_target) {
    it->second.stream.reset(Status::cancelled, "response ended");
  }
  count_stream_end(gateway_, it->second.stream.outcome());
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
    entry.stream.reset(status, message);
    count_stream_end(gateway_, status);
  }
  requests_.clear();
  by_id_.clear();
}

void RequestsCall::enqueue(pb::RequestsResponse message, std::uint64_t key, std::uint32_t bytes) {
  if (outbox_.push(std::move(message), key, bytes) > gateway_.limits.max_connection_buffer) {
    // The client does not read what it is sent; it may not hold relay memory.
    gateway_.core.counters.grpc.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    finish(to_grpc(context_, Status::slow_consumer, "outbound buffer limit"), false);
    return;
  }
  outbox_.pump();
}

void RequestsCall::on_write_done(bool ok) {
  serial_.assert_here();
  const auto written = outbox_.write_done(ok);
  if (!ok) {
    finish(grpc::Status(grpc::StatusCode::CANCELLED, "client stopped reading"), false);
    outbox_.pump();
    return;
  }
  if (written.bytes > 0) {
    // The client took these bytes: the target may send as many more. After the response's
    // end the target needs no more credit.
    if (auto it = requests_.find(written.tag); it != requests_.end()) {
      it->second.stream.response_taken(written.bytes);
    }
  }
  outbox_.pump();
}

// Reads the next message unless a request whose body is still coming has no credit left: its
// target is slower than this client, and the next message may be more of that request.
void RequestsCall::read_more() {
  if (read_pending_ || half_closed_ || done_ || outbox_.ending()) return;
  for (const auto& [key, entry] : requests_) {
    if (entry.stream.stalled()) return;
  }
  read_pending_ = true;
  StartRead(&in_);
}

// With `flush`, what is queued (the last responses, the ends of refused requests) goes out
// before Finish; without, it is dropped: the client is gone, stopped reading or broke the
// protocol.
void RequestsCall::finish(grpc::Status status, bool flush) {
  if (done_ || outbox_.ending()) return;
  const Status reason = status.ok() ? Status::cancelled : Status::peer_gone;
  end_all(reason, "sender's call ended");
  drain_registration_.reset();
  sweep_timer_.cancel();
  outbox_.finish(std::move(status), flush);
}

void RequestsCall::drain() {
  serial_.assert_here();
  draining_ = true;
  // Once Finish was called the context may be gone: do not build a status from it.
  if (done_ || outbox_.ending() || !requests_.empty()) return;
  finish(to_grpc(context_, Status::refused, "relay is draining"), true);
}

// The client half-closed and every request has ended.
void RequestsCall::finish_ok() {
  if (done_ || outbox_.ending()) return;
  finish(to_grpc(context_, Status::ok, ""), true);
}

void RequestsCall::on_cancel(bool expired) {
  serial_.assert_here();
  const Status status = expired ? Status::deadline_exceeded : Status::cancelled;
  end_all(status, expired ? "deadline exceeded" : "sender cancelled");
  if (outbox_.finished()) return;  // Finish was called: the context may already be gone
  finish(expired ? to_grpc(context_, Status::deadline_exceeded, "deadline exceeded")
                 : grpc::Status::CANCELLED,
         false);
}

void RequestsCall::on_done() {
  serial_.assert_here();
  done_ = true;
  end_all(Status::cancelled, "sender went away");
  drain_registration_.reset();
  outbox_.close();
  sweep_timer_.cancel();
  self_.reset();
}

// One timer per call, due at the earliest deadline or idle expiry among its requests.
void RequestsCall::arm_sweep() {
  if (done_ || outbox_.ending()) return;
  auto due = Clock::time_point::max();
  for (const auto& [key, entry] : requests_) {
    due = std::min(due, entry.stream.expiry());
  }
  if (due == Clock::time_point::max() || due >= sweep_due_) return;
  sweep_due_ = due;
  sweep_timer_.expires_at(due);
  sweep_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->dispatch([self] { self->sweep(); });
  });
}

void RequestsCall::sweep() {
  serial_.assert_here();
  sweep_due_ = Clock::time_point::max();
  if (done_ || outbox_.ending()) return;
  const auto now = Clock::now();
  std::vector<std::pair<std::uint64_t, Status>> expired;
  for (const auto& [key, entry] : requests_) {
    if (auto status = entry.stream.expired(now)) expired.emplace_back(key, *status);
  }
  for (const auto& [key, status] : expired) {
    if (outbox_.ending()) return;  // an end crossed the buffer limit and finished the call
    end_request(key, status,
                status == Status::deadline_exceeded ? "deadline exceeded" : "stream idle timeout");
  }
  arm_sweep();
}

}  // namespace switchboard::gateway
