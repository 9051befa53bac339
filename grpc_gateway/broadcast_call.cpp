// Broadcast RPC: fan-out to every other peer, paced by the slowest remaining receiver.
#include "grpc_gateway/broadcast_call.hpp"

#include "grpc_gateway/auth_checks.hpp"

namespace switchboard::gateway {

BroadcastCall* BroadcastCall::start(GatewayContext& gateway, grpc::CallbackServerContext* context) {
  auto call = std::make_shared<BroadcastCall>(gateway, context);
  call->self_ = call;
  call->read_pending_ = true;
  call->StartRead(&call->in_);
  return call.get();
}

BroadcastCall::BroadcastCall(GatewayContext& gateway, grpc::CallbackServerContext* context)
    : gateway_(gateway),
      context_(context),
      serial_(gateway.next_call_executor()),
      idle_timer_(serial_.executor()),
      last_activity_(std::chrono::steady_clock::now()) {}

// gRPC calls OnDone after the last read and write completion, and its handler is queued behind
// theirs: the call outlives these handlers without holding itself.
void BroadcastCall::OnReadDone(bool ok) {
  // A cancelled call (the client went away) did not end its message: OnCancel resets the
  // receivers instead of letting them take a truncated message as complete.
  if (!ok && context_->IsCancelled()) return;
  serial_.dispatch([this, ok] { read_done(ok); }, shared_from_this());
}
void BroadcastCall::OnWriteDone(bool ok) {
  serial_.dispatch(
      [this, ok] {
        if (carrier_) {
          carrier_->downstream_write_done(ok);
        } else {
          on_write_done();
        }
      },
      shared_from_this());
}
void BroadcastCall::OnCancel() {
  dispatch([self = shared_from_this()] { self->on_cancel(); });
}
void BroadcastCall::OnDone() {
  dispatch([self = shared_from_this()] { self->on_done(); });
}
void BroadcastCall::deliver_credit(std::uint32_t bytes, std::uint32_t sink) {
  deliver([self = shared_from_this(), bytes, sink] { self->on_credit(bytes, sink); });
}
void BroadcastCall::deliver_sink_done(std::uint32_t sink, Status status) {
  deliver([self = shared_from_this(), sink, status] { self->on_sink_done(sink, status); });
}

// ---- On the Serial. ----

void BroadcastCall::on_credit(std::uint32_t bytes, std::uint32_t sink) {
  serial_.assert_here();
  last_activity_ = std::chrono::steady_clock::now();
  release(fanout_.written(sink, bytes));
}

void BroadcastCall::on_sink_done(std::uint32_t sink, Status status) {
  serial_.assert_here();
  release(fanout_.done(sink, status));
  maybe_summarise();
}

// The summary is written: the call ends OK.
void BroadcastCall::on_write_done() {
  serial_.assert_here();
  finished_ = true;
  Finish(to_grpc(context_, Status::ok, ""));
}

void BroadcastCall::on_cancel() {
  serial_.assert_here();
  if (carrier_) {
    carrier_->downstream_cancelled();
    return;
  }
  fanout_.reset_all(Status::cancelled, "broadcast cancelled by its sender");
  finish(grpc::Status::CANCELLED);
}

void BroadcastCall::finish(grpc::Status status) {
  if (finished_ || done_ || summarised_) return;
  finished_ = true;
  Finish(status);
}

void BroadcastCall::read_more() {
  if (read_pending_ || message_done_ || done_ || finished_ || credit_ <= 0) return;
  read_pending_ = true;
  StartRead(&in_);
}

void BroadcastCall::read_done(bool ok) {
  serial_.assert_here();
  read_pending_ = false;
  if (carrier_) {
    carrier_->downstream_read_done(ok);
    return;
  }
  last_activity_ = std::chrono::steady_clock::now();
  if (done_ || finished_) return;
  if (!ok) {
    if (!opened_) {
      finish(invalid_argument(context_, "the broadcast ended before its open message"));
      return;
    }
    message_done_ = true;
    forward(wire::Slice{}, true);
    maybe_summarise();
    return;
  }
  if (!opened_) {
    open();
    return;
  }
  if (in_.kind_case() != pb::BroadcastRequest::kChunk) {
    fanout_.reset_all(Status::protocol_error, "second open on a Broadcast");
    if (!outcome_) outcome_ = Status::protocol_error;
    finish(invalid_argument(context_, "only chunk messages may follow open"));
    return;
  }
  auto& data = *in_.mutable_chunk()->mutable_data();
  if (!data.empty()) forward(take_slice(data), false);
  read_more();
}

void BroadcastCall::open() {
  const auto checked = check_first(in_);
  if (!checked.request) {
    finish(invalid_argument(context_, checked.error));
    return;
  }
  const auto& request = in_.open();
  const Uuid& channel = checked.request->channel;
  const Uuid& sender = checked.request->sender;
  core::auth::Grant grant;
  if (auto refusal = check_token(gateway_, context_, request.token(), channel, sender,
                                 core::auth::Permission::broadcast, grant)) {
    finish(std::move(*refusal));
    return;
  }
  if (!gateway_.registry.draining()) {
    if (auto address = carry_target(context_, gateway_.core.directory->locate(channel));
        !address.empty()) {
      carrier_ = std::make_unique<BidiCarrier<pb::BroadcastRequest, pb::BroadcastResponse>>(
          gateway_.owners, serial_, *this, context_, shared_from_this());
      carrier_->start(address, std::move(in_));
      return;
    }
  }
  const core::StreamRequest stream_request{"grpc", 0, channel, sender, wire::StreamKind::broadcast,
                                           Uuid{}};
  if (auto admitted =
          core::admit_stream(gateway_.core, stream_request, grant, true, context_->peer());
      !admitted.ok()) {
    finish(to_grpc(context_, admitted.status, admitted.reason));
    return;
  }
  opened_ = true;
  count_stream_start(gateway_);
  credit_ = gateway_window(gateway_);
  core::StreamOffer offer;
  offer.kind = wire::StreamKind::broadcast;
  offer.sender = sender;
  offer.deadline_ms = remaining_ms(context_);
  offer.idle_ms = request.idle_timeout_ms();
  offer.metadata = checked.request->metadata;
  offer.counterpart = shared_from_this();
  core::BroadcastTargets targets;
  core::fan_out(gateway_.core, stream_request, offer, fanout_, targets);
  if (!request.data().empty()) forward(to_slice(request.data()), false);
  idle_timeout_ = core::stream_idle_timeout(gateway_.limits, request.idle_timeout_ms());
  if (idle_timeout_.count() > 0) idle_check();
  read_more();
}

void BroadcastCall::forward(const wire::Slice& slice, bool fin) {
  credit_ -= slice.size;
  gateway_.core.counters.grpc.payload_bytes_in.fetch_add(slice.size, std::memory_order_relaxed);
  if (slice.size > 0 && credit_ <= 0) {
    gateway_.core.counters.grpc.credit_stalls.fetch_add(1, std::memory_order_relaxed);
  }
  release(fanout_.forward(slice, fin));
}

// Credit returns to the client as the slowest receiver still in the broadcast takes bytes.
void BroadcastCall::release(std::uint64_t bytes) {
  if (bytes == 0) return;
  credit_ += static_cast<std::int64_t>(bytes);
  read_more();
}

void BroadcastCall::maybe_summarise() {
  if (!message_done_ || !fanout_.complete() || summarised_ || finished_ || done_) return;
  summarised_ = true;
  if (!outcome_) outcome_ = Status::ok;
  out_.mutable_summary()->set_delivered(fanout_.delivered());
  out_.mutable_summary()->set_dropped(fanout_.dropped());
  StartWrite(&out_);
}

void BroadcastCall::idle_check() {
  serial_.assert_here();
  if (done_ || finished_ || summarised_) return;
  if (std::chrono::steady_clock::now() >= last_activity_ + idle_timeout_) {
    fanout_.reset_all(Status::idle_timeout, "stream idle timeout");
    if (!outcome_) outcome_ = Status::idle_timeout;
    finish(to_grpc(context_, Status::idle_timeout, "no bytes moved for the idle timeout"));
    return;
  }
  idle_timer_.expires_at(last_activity_ + idle_timeout_);
  idle_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->dispatch([self] { self->idle_check(); });
  });
}

void BroadcastCall::on_done() {
  serial_.assert_here();
  if (carrier_) carrier_->downstream_done();
  done_ = true;
  if (opened_) count_stream_end(gateway_, outcome_.value_or(Status::cancelled));
  if (!fanout_.complete()) fanout_.reset_all(Status::cancelled, "broadcast sender went away");
  idle_timer_.cancel();
  self_.reset();
}

}  // namespace switchboard::gateway
