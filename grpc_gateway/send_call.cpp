// Send RPC: validation, routing, credit-paced reads, ordered response writes, final status.
#include "grpc_gateway/send_call.hpp"

#include "grpc_gateway/auth_checks.hpp"

namespace switchboard::gateway {

SendCall* SendCall::start(GatewayContext& gateway, grpc::CallbackServerContext* context) {
  auto call = std::make_shared<SendCall>(gateway, context);
  call->self_ = call;
  call->read_pending_ = true;
  call->StartRead(&call->in_);
  return call.get();
}

SendCall::SendCall(GatewayContext& gateway, grpc::CallbackServerContext* context)
    : gateway_(gateway),
      context_(context),
      serial_(gateway.next_call_executor()),
      idle_timer_(serial_.executor()) {}

// ---- Handing over to the Serial. ----

// gRPC calls OnDone after the last read and write completion, and its handler is queued behind
// theirs: the call outlives these handlers without holding itself.
void SendCall::OnReadDone(bool ok) {
  serial_.dispatch([this, ok] { read_done(ok); }, shared_from_this());
}
void SendCall::OnWriteDone(bool ok) {
  serial_.dispatch([this, ok] { on_write_done(ok); }, shared_from_this());
}
void SendCall::OnCancel() {
  // gRPC frees the context once the call is done, which may come before the Serial runs the
  // reaction: the deadline is read here, inside gRPC's callback.
  const bool expired = deadline_passed(context_);
  dispatch([self = shared_from_this(), expired] { self->on_cancel(expired); });
}
void SendCall::OnDone() {
  dispatch([self = shared_from_this()] { self->on_done(); });
}
void SendCall::deliver_data(wire::Slice payload, bool fin) {
  deliver([self = shared_from_this(), payload = std::move(payload), fin]() mutable {
    self->on_data(std::move(payload), fin);
  });
}
void SendCall::deliver_end(wire::End end) {
  deliver([self = shared_from_this(), end = std::move(end)] { self->on_end(end); });
}
void SendCall::deliver_reset(wire::Reset reset) {
  deliver([self = shared_from_this(), reset = std::move(reset)] { self->on_reset(reset); });
}
// A responder's write completion starts the sender's next read on its own thread when this call
// is idle: no thread hand-off between a response write and the next request read.
void SendCall::deliver_credit(std::uint32_t bytes, std::uint32_t) {
  deliver([self = shared_from_this(), bytes] { self->on_credit(bytes); });
}

// ---- On the Serial. ----

// The response ends with `status` once what is queued is written.
void SendCall::end_response(grpc::Status status) {
  reading_ = false;  // no read may start once Finish is called
  outbox_.finish(std::move(status), true);
}

// The call ends with `status` now; what is queued is dropped.
void SendCall::abort(grpc::Status status) {
  reading_ = false;
  outbox_.abort(std::move(status));
}

// Reads on while the target has credit; a read stopped at zero restarts from on_credit.
void SendCall::read_more() {
  if (read_pending_ || !reading_ || !stream_->has_credit() || outbox_.ending()) return;
  read_pending_ = true;
  StartRead(&in_);
}

void SendCall::on_credit(std::uint32_t bytes) {
  serial_.assert_here();
  if (!stream_) return;
  stream_->credit(bytes);
  read_more();
}

void SendCall::read_done(bool ok) {
  serial_.assert_here();
  read_pending_ = false;
  if (carrier_) {
    carrier_->downstream_read_done(ok);
    return;
  }
  if (stream_) stream_->touch();
  if (done_ || outbox_.ending()) return;
  if (!stream_) {
    if (ok) {
      open();
    } else {
      abort(invalid_argument(context_, "the request ended before its open message"));
    }
    return;
  }
  if (!reading_) return;  // a read that lands after a stop
  if (ok && in_.kind_case() != pb::SendRequest::kChunk) {
    reading_ = false;
    stream_->reset(Status::protocol_error, "second open on a Send");
    stream_->end_response(Status::protocol_error);
    abort(invalid_argument(context_, "only chunk messages may follow open"));
    return;
  }
  if (!ok) {
    reading_ = false;
    // The client went away (or the call was cancelled) mid-request: not an end of the body.
    // OnCancel resets the target; a FIN here could let it finish a truncated request OK.
    if (context_->IsCancelled()) return;
    stream_->end_body();
    return;
  }
  stream_->forward(*in_.mutable_chunk()->mutable_data(), false);
  read_more();
}

void SendCall::open() {
  auto checked = check_first(in_);
  if (!checked.request) {
    abort(invalid_argument(context_, checked.error));
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
    abort(std::move(*refusal));
    return;
  }
  if (!gateway_.registry.draining()) {
    if (auto address = carry_target(context_, gateway_.core.directory->locate(channel));
        !address.empty()) {
      carrier_ = std::make_unique<BidiCarrier<pb::SendRequest, pb::SendResponse>>(
          gateway_.owners, serial_, *this, context_, shared_from_this());
      carrier_->start(address, std::move(in_));
      return;
    }
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
    abort(to_grpc(context_, admitted.status, admitted.reason));
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
    abort(to_grpc(context_, routed.status, routed.message));
    return;
  }
  // The target's first deliveries (credit for the open's data) are queued behind this handler.
  // The call's deadline is gRPC's: OnCancel.
  stream_.emplace(gateway_, std::move(routed.target), request.data().size(), false,
                  request.idle_timeout_ms());
  reading_ = true;
  // From here a read may land in in_: the open message is not looked at again.
  if (stream_->expiry() != Clock::time_point::max()) arm_idle_timer();
  read_more();
}

void SendCall::arm_idle_timer() {
  idle_timer_.expires_at(stream_->expiry());
  idle_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->dispatch([self] { self->idle_check(); });
  });
}

void SendCall::idle_check() {
  serial_.assert_here();
  if (done_ || outbox_.ending() || stream_->response_done()) return;
  // Reset only when nothing moved for the whole timeout; otherwise look again later.
  if (!stream_->expired(Clock::now())) {
    arm_idle_timer();
    return;
  }
  reading_ = false;
  stream_->reset(Status::idle_timeout, "stream idle timeout");
  stream_->end_response(Status::idle_timeout);
  abort(to_grpc(context_, Status::idle_timeout, "no bytes moved for the idle timeout"));
}

void SendCall::on_reset(const wire::Reset& reset) {
  serial_.assert_here();
  if (stream_) stream_->end_response(reset.status);
  if (outbox_.finished()) return;  // Finish was called: the context may already be gone
  abort(to_grpc(context_, reset.status, reset.message, reset.app_code));
}

void SendCall::on_data(wire::Slice payload, bool fin) {
  serial_.assert_here();
  if (!stream_) return;  // a counterpart delivers only once routed
  if (done_ || outbox_.ending()) {
    if (payload.size > 0) stream_->target()->deliver_credit(payload.size, 0);
    return;
  }
  stream_->touch();
  if (payload.size > 0) {
    pb::SendResponse message;
    message.mutable_chunk()->set_data(reinterpret_cast<const char*>(payload.data), payload.size);
    outbox_.push(std::move(message), NoTag{}, payload.size);
  }
  if (fin) {
    stream_->end_response(Status::ok);
    // The response's last bytes and its status leave in one batch: no OnWriteDone trip through
    // the Serial before the trailers (the whole latency of a small request).
    end_response(to_grpc(context_, Status::ok, ""));
    return;
  }
  outbox_.pump();
}

void SendCall::on_end(const wire::End& end) {
  serial_.assert_here();
  if (!stream_ || done_ || outbox_.ending()) return;
  stream_->end_response(end.status);
  end_response(to_grpc(context_, end.status, end.message, end.app_code));
}

void SendCall::on_write_done(bool ok) {
  serial_.assert_here();
  if (carrier_) {
    carrier_->downstream_write_done(ok);
    return;
  }
  const auto written = outbox_.write_done(ok);
  // The client took these bytes: the responder may send as many more.
  if (stream_) stream_->response_taken(written.bytes);
  if (!ok && !outbox_.ending()) {
    if (stream_) stream_->decide(Status::cancelled);
    reading_ = false;
    outbox_.finish(grpc::Status(grpc::StatusCode::CANCELLED, "client stopped reading"), false);
  }
  outbox_.pump();
}

void SendCall::on_cancel(bool expired) {
  serial_.assert_here();
  if (carrier_) {
    carrier_->downstream_cancelled();
    return;
  }
  if (stream_ && !stream_->response_done()) {
    reading_ = false;
    if (expired) {
      stream_->reset(Status::deadline_exceeded, "deadline exceeded");
    } else {
      stream_->reset(Status::cancelled, "sender cancelled");
    }
  }
  if (stream_) stream_->end_response(expired ? Status::deadline_exceeded : Status::cancelled);
  if (outbox_.finished()) return;  // Finish was called: the context may already be gone
  abort(expired ? to_grpc(context_, Status::deadline_exceeded, "deadline exceeded")
                : grpc::Status::CANCELLED);
}

void SendCall::on_done() {
  serial_.assert_here();
  if (carrier_) carrier_->downstream_done();
  done_ = true;
  reading_ = false;
  if (stream_) {
    count_stream_end(gateway_, stream_->outcome());
    // A response that ended first leaves the rest of the request unwanted: release the target.
    if (!stream_->response_done() || !stream_->body_done()) {
      stream_->reset(Status::cancelled, "sender went away");
    }
    stream_.reset();
  }
  outbox_.close();
  idle_timer_.cancel();
  self_.reset();
}

}  // namespace switchboard::gateway
