// Send RPC: validation, routing, credit-paced reads, ordered response writes, final status.
#include "grpc_gateway/send_call.hpp"

#include <boost/asio/post.hpp>

#include "grpc_gateway/auth_checks.hpp"

namespace switchboard::gateway {

namespace asio = boost::asio;

SendCall* SendCall::start(GatewayContext& gateway, grpc::CallbackServerContext* context) {
  auto call = std::make_shared<SendCall>(gateway, context);
  call->self_ = call;
  {
    std::lock_guard lock(call->read_mutex_);
    call->read_pending_ = true;
  }
  call->StartRead(&call->in_);
  return call.get();
}

SendCall::SendCall(GatewayContext& gateway, grpc::CallbackServerContext* context)
    : gateway_(gateway),
      context_(context),
      serial_(gateway.next_call_executor()),
      idle_timer_(serial_.executor()),
      last_activity_(std::chrono::steady_clock::now().time_since_epoch().count()) {}

void SendCall::touch() noexcept {
  last_activity_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                       std::memory_order_relaxed);
}

// ---- On gRPC's thread: request chunks once the stream is open. ----

// Forwarding here and starting the next read at once keeps a read in flight whenever the target
// has credit, instead of waiting for two thread hand-offs (to the Serial and back) per message.
void SendCall::OnReadDone(bool ok) {
  bool next = false;
  {
    // Deliveries are made under the lock, so none can follow a stop (and the reset the Serial
    // sends after it) and the target sees the chunks in read order. A target never runs this
    // call's handlers inside a delivery (they take this lock): it posts them.
    std::lock_guard lock(read_mutex_);
    read_pending_ = false;
    if (!reading_ || (ok && in_.kind_case() != pb::SendClientMessage::kChunk)) {
      // The open message, a read that lands after a stop, or a protocol error.
      reading_ = false;
    } else if (!ok && context_->IsCancelled()) {
      // The client went away (or the call was cancelled) mid-request: not an end of the body.
      // OnCancel resets the target; a FIN here could let it finish a truncated request OK.
      reading_ = false;
    } else if (!ok) {
      reading_ = false;
      request_done_ = true;
      read_target_->deliver_data(wire::Slice{}, true);
      touch();
      return;
    } else {
      auto& data = *in_.mutable_chunk()->mutable_data();
      credit_ -= static_cast<std::int64_t>(data.size());
      next = credit_ > 0;
      read_pending_ = next;
      auto& counters = gateway_.core.counters.grpc;
      counters.payload_bytes_in.fetch_add(data.size(), std::memory_order_relaxed);
      if (!next) counters.credit_stalls.fetch_add(1, std::memory_order_relaxed);
      if (!data.empty()) read_target_->deliver_data(take_slice(data), false);
      touch();
      if (!next) return;
    }
  }
  if (next) {
    StartRead(&in_);
  } else {
    serial_.dispatch([this, ok] { read_done(ok); }, true, shared_from_this());
  }
}

// ---- Handing over to the Serial. ----

void SendCall::OnWriteDone(bool ok) {
  serial_.dispatch([this, ok] { on_write_done(ok); }, true, shared_from_this());
}
void SendCall::OnCancel() {
  // gRPC frees the context once the call is done, which may come before the Serial runs the
  // reaction: the deadline is read here, inside gRPC's callback.
  const bool expired = deadline_passed(context_);
  post([self = shared_from_this(), expired] { self->on_cancel(expired); });
}
void SendCall::OnDone() {
  post([self = shared_from_this()] { self->on_done(); });
}
// Response bytes run here when the Serial is idle; not drained, since the caller may be a target
// inside its own handlers. Ends and resets are always posted: a target may deliver them from
// inside this call's OnReadDone, under the read lock their handlers take.
void SendCall::deliver_data(wire::Slice payload, bool fin) {
  serial_.dispatch([self = shared_from_this(), payload = std::move(payload),
                    fin]() mutable { self->on_data(std::move(payload), fin); },
                   false, shared_from_this());
}
void SendCall::deliver_end(wire::End end) {
  post([self = shared_from_this(), end = std::move(end)] { self->on_end(end); });
}
void SendCall::deliver_reset(wire::Reset reset) {
  post([self = shared_from_this(), reset = std::move(reset)] { self->on_reset(reset); });
}
// Credit is taken here, under the read lock; the next read starts on the Serial, in order with
// Finish (a read started after it could outlive the call's stream), which is this thread when
// the call is idle: a responder's write completion reads the sender's next chunk without a
// thread hand-off. Callers hold no lock of this call.
void SendCall::deliver_credit(std::uint32_t bytes, std::uint32_t) {
  bool wanted = false;
  {
    std::lock_guard lock(read_mutex_);
    credit_ += bytes;
    wanted = !read_pending_ && reading_ && credit_ > 0;
  }
  touch();
  if (wanted) serial_.dispatch([this] { read_more(); }, false, shared_from_this());
}

// ---- On the Serial. ----

void SendCall::finish(grpc::Status status) {
  if (finished_ || done_) return;
  final_status_ = std::move(status);
  stop_reading();
  outbox_.clear();
  outbox_bytes_.clear();
  pump();  // finishes now, or after the write in flight
}

// Reads on once the target granted credit again (the read side stopped at zero).
void SendCall::read_more() {
  {
    std::lock_guard lock(read_mutex_);
    if (read_pending_ || !reading_ || credit_ <= 0) return;
    read_pending_ = true;
  }
  StartRead(&in_);
}

// No read starts after this; one already in flight lands in read_done and is dropped.
void SendCall::stop_reading() {
  std::lock_guard lock(read_mutex_);
  reading_ = false;
}

// A read the read side did not take: the open, or a message that is not a chunk.
void SendCall::read_done(bool ok) {
  touch();
  if (done_ || final_status_) return;
  if (!opened_) {
    if (ok) {
      open();
    } else {
      finish(invalid_argument(context_, "the request ended before its open message"));
    }
    return;
  }
  if (ok && in_.kind_case() != pb::SendClientMessage::kChunk) {
    target_->deliver_reset(wire::Reset{Status::protocol_error, 0, "second open on a Send"});
    if (!outcome_) outcome_ = Status::protocol_error;
    response_done_ = true;
    finish(invalid_argument(context_, "only chunk messages may follow open"));
  }
}

void SendCall::open() {
  auto checked = check_first(in_);
  if (!checked.request) {
    finish(invalid_argument(context_, checked.error));
    return;
  }
  const OpenRequest& valid = *checked.request;
  const auto& request = in_.open();
  const Uuid& channel = valid.channel;
  const Uuid& target = valid.target;
  const Uuid& sender = valid.sender;
  core::auth::Grant grant;
  if (auto refusal = check_token(gateway_, context_, request.token(), channel, sender,
                                 core::auth::Permission::send, grant)) {
    finish(std::move(*refusal));
    return;
  }
  const core::StreamRequest stream_request{
      "grpc",
      0,
      channel,
      sender,
      target.is_nil() ? wire::StreamKind::to_any : wire::StreamKind::to_peer,
      target};
  if (auto admitted =
          core::admit_stream(gateway_.core, stream_request, grant, true, context_->peer());
      !admitted.ok()) {
    finish(to_grpc(context_, admitted.status, admitted.reason));
    return;
  }
  core::StreamOffer offer;
  offer.kind = stream_request.kind;
  offer.sender = sender;
  offer.deadline_ms = remaining_ms(context_);
  offer.idle_ms = request.idle_timeout_ms();
  offer.metadata = std::move(checked.request->metadata);
  offer.first_chunk = to_slice(request.data());
  offer.counterpart = shared_from_this();
  auto routed = core::route_request(gateway_.core, stream_request, offer);
  if (!routed.target) {
    finish(to_grpc(context_, routed.status, routed.message));
    return;
  }
  target_ = std::move(routed.target);
  opened_ = true;
  count_stream_start(gateway_);
  const auto first_bytes = static_cast<std::int64_t>(request.data().size());
  gateway_.core.counters.grpc.payload_bytes_in.fetch_add(request.data().size(),
                                                         std::memory_order_relaxed);
  idle_timeout_ = core::stream_idle_timeout(gateway_.limits, request.idle_timeout_ms());
  {
    std::lock_guard lock(read_mutex_);
    reading_ = true;
    read_target_ = target_;
    // Added, not set: the target may already have returned credit for the open's data.
    credit_ += gateway_window(gateway_) - first_bytes;
  }
  // From here a credit delivery may start the next read into in_ on another thread: the open
  // message is not looked at again.
  if (idle_timeout_.count() > 0) arm_idle_timer();
  read_more();
}

void SendCall::arm_idle_timer() {
  const std::chrono::steady_clock::time_point last{
      std::chrono::steady_clock::duration{last_activity_.load(std::memory_order_relaxed)}};
  idle_timer_.expires_at(last + idle_timeout_);
  idle_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->post([self] { self->idle_check(); });
  });
}

void SendCall::idle_check() {
  if (done_ || final_status_ || response_done_) return;
  // Reset only when nothing moved for the whole timeout; otherwise look again later.
  const std::chrono::steady_clock::time_point last{
      std::chrono::steady_clock::duration{last_activity_.load(std::memory_order_relaxed)}};
  if (std::chrono::steady_clock::now() < last + idle_timeout_) {
    arm_idle_timer();
    return;
  }
  stop_reading();
  target_->deliver_reset(wire::Reset{Status::idle_timeout, 0, "stream idle timeout"});
  if (!outcome_) outcome_ = Status::idle_timeout;
  response_done_ = true;
  finish(to_grpc(context_, Status::idle_timeout, "no bytes moved for the idle timeout"));
}

void SendCall::on_reset(const wire::Reset& reset) {
  if (!outcome_) outcome_ = reset.status;
  response_done_ = true;
  if (finished_ || done_) return;  // Finish was called: the context may already be gone
  finish(to_grpc(context_, reset.status, reset.message, reset.app_code));
}

void SendCall::on_data(wire::Slice payload, bool fin) {
  if (done_ || final_status_) {
    if (target_ && payload.size > 0) target_->deliver_credit(payload.size, 0);
    return;
  }
  touch();
  if (payload.size > 0) {
    pb::SendServerMessage message;
    message.mutable_chunk()->set_data(reinterpret_cast<const char*>(payload.data), payload.size);
    outbox_.push_back(std::move(message));
    outbox_bytes_.push_back(payload.size);
  }
  if (fin) {
    if (!outcome_) outcome_ = Status::ok;
    response_done_ = true;
    final_status_ = to_grpc(context_, Status::ok, "");
    stop_reading();
  }
  pump();
}

void SendCall::on_end(const wire::End& end) {
  if (done_ || final_status_) return;
  if (!outcome_) outcome_ = end.status;
  response_done_ = true;
  final_status_ = to_grpc(context_, end.status, end.message, end.app_code);
  stop_reading();
  pump();
}

// Starts the next write, or finishes once the outbox is empty and the status is known.
void SendCall::pump() {
  if (write_pending_ || finished_ || done_) return;
  if (!outbox_.empty()) {
    writing_ = std::move(outbox_.front());
    writing_bytes_ = outbox_bytes_.front();
    outbox_.pop_front();
    outbox_bytes_.pop_front();
    if (outbox_.empty() && final_status_) {
      // The response's last bytes and its status leave in one batch: no OnWriteDone trip
      // through the Serial before the trailers (the whole latency of a small request). Nothing
      // follows, so the responder needs no credit for these bytes.
      finished_ = true;
      stop_reading();  // no read may start once Finish is called
      gateway_.core.counters.grpc.payload_bytes_out.fetch_add(writing_bytes_,
                                                              std::memory_order_relaxed);
      StartWriteAndFinish(&writing_, grpc::WriteOptions(), *final_status_);
      return;
    }
    write_pending_ = true;
    StartWrite(&writing_);
    return;
  }
  if (final_status_) {
    finished_ = true;
    stop_reading();
    Finish(*final_status_);
  }
}

void SendCall::on_write_done(bool ok) {
  write_pending_ = false;
  touch();
  gateway_.core.counters.grpc.payload_bytes_out.fetch_add(writing_bytes_,
                                                          std::memory_order_relaxed);
  // The client took these bytes: the responder may send as many more.
  if (target_) target_->deliver_credit(writing_bytes_, 0);
  if (!ok && !final_status_) {
    if (!outcome_) outcome_ = Status::cancelled;
    final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "client stopped reading");
    outbox_.clear();
    outbox_bytes_.clear();
  }
  pump();
}

void SendCall::on_cancel(bool expired) {
  if (!outcome_) outcome_ = expired ? Status::deadline_exceeded : Status::cancelled;
  if (target_ && !response_done_) {
    stop_reading();
    target_->deliver_reset(expired ? wire::Reset{Status::deadline_exceeded, 0, "deadline exceeded"}
                                   : wire::Reset{Status::cancelled, 0, "sender cancelled"});
    response_done_ = true;
  }
  if (finished_ || done_) return;  // Finish was called: the context may already be gone
  finish(expired ? to_grpc(context_, Status::deadline_exceeded, "deadline exceeded")
                 : grpc::Status::CANCELLED);
}

void SendCall::on_done() {
  done_ = true;
  bool request_done = false;
  {
    std::lock_guard lock(read_mutex_);
    reading_ = false;
    request_done = request_done_;
    read_target_.reset();
  }
  if (opened_) count_stream_end(gateway_, outcome_.value_or(Status::cancelled));
  // A response that ended first leaves the rest of the request unwanted: release the target.
  if (target_ && (!response_done_ || !request_done)) {
    target_->deliver_reset(wire::Reset{Status::cancelled, 0, "sender went away"});
  }
  target_.reset();
  outbox_.clear();
  idle_timer_.cancel();
  self_.reset();
}

}  // namespace switchboard::gateway
