// Streams on a session: deliveries from counterparts, stream bookkeeping and stream timers.
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "native/session.hpp"

namespace switchboard::core::net {
namespace {

wire::Reset make_reset(Status status, std::string message) {
  return wire::Reset{status, 0, std::move(message)};
}

// One handler per kind: a kind without one does not compile.
template <typename... Handlers>
struct Overloaded : Handlers... {
  using Handlers::operator()...;
};
template <typename... Handlers>
Overloaded(Handlers...) -> Overloaded<Handlers...>;

}  // namespace

// ---- Endpoint: called from any thread; the delivery goes to the owning session. ----

void SessionStream::deliver_data(wire::Slice payload, bool fin) {
  HandoffBatch::hand_off(
      Delivery{shared_from_this(), delivery::Data{std::move(payload), fin}, nullptr});
}

void SessionStream::deliver_end(wire::End end) {
  HandoffBatch::hand_off(Delivery{shared_from_this(), delivery::End{std::move(end)}, nullptr});
}

void SessionStream::deliver_reset(wire::Reset reset) {
  HandoffBatch::hand_off(Delivery{shared_from_this(), delivery::Reset{std::move(reset)}, nullptr});
}

void SessionStream::deliver_credit(std::uint32_t bytes, std::uint32_t sink) {
  HandoffBatch::hand_off(Delivery{shared_from_this(), delivery::Credit{bytes, sink}, nullptr});
}

void SessionStream::deliver_sink_done(std::uint32_t sink, Status status) {
  HandoffBatch::hand_off(Delivery{shared_from_this(), delivery::SinkDone{sink, status}, nullptr});
}

std::shared_ptr<Endpoint> Session::accept_stream(StreamOffer offer) {
  if (offer.kind != wire::StreamKind::broadcast) {
    // Reserve the slot now so concurrent "any" routing sees it.
    if (incoming_open_.fetch_add(1, std::memory_order_relaxed) >=
        limits_.max_streams_per_connection) {
      incoming_open_.fetch_sub(1, std::memory_order_relaxed);
      return nullptr;
    }
  }
  const auto role = offer.kind == wire::StreamKind::broadcast ? StreamRole::broadcast_sink
                                                              : StreamRole::responder;
  auto stream = std::make_shared<SessionStream>(shared_from_this(), role);
  HandoffBatch::hand_off(Delivery{stream, delivery::Incoming{std::move(offer)}, nullptr});
  return stream;
}

// ---- Deliveries, on our executor. ----

bool Session::takes_deliveries_inline() const noexcept {
  return home_ && home_->running_in_this_thread() &&
         deliveries_posted_.load(std::memory_order_acquire) == 0;
}

void Session::run_deliveries(DeliveryList& deliveries) {
  for (auto& delivery : deliveries) run_delivery(delivery);
}

void Session::post_deliveries(DeliveryList deliveries) {
  deliveries_posted_.fetch_add(1, std::memory_order_relaxed);
  // The deliveries hold their streams, which hold this session.
  asio::post(executor_, [this, deliveries = std::move(deliveries)]() mutable {
    deliveries_posted_.fetch_sub(1, std::memory_order_release);
    TurnClock::Scope turn(Clock::now());
    HandoffBatch::Scope handoffs;
    run_deliveries(deliveries);
    HandoffBatch::give_back(std::move(deliveries));
    handoffs.flush();
  });
}

void Session::run_delivery(Delivery& delivery) {
  const StreamPtr& stream = delivery.stream;
  std::visit(Overloaded{
                 [&](delivery::Incoming& d) { on_incoming(stream, std::move(d.offer)); },
                 [&](delivery::Data& d) { on_data(stream, std::move(d.payload), d.fin); },
                 [&](delivery::End& d) { on_end(stream, std::move(d.end)); },
                 [&](delivery::Reset& d) { on_reset(stream, std::move(d.reset)); },
                 [&](delivery::Credit& d) { on_credit(stream, d.bytes, d.sink); },
                 [&](delivery::SinkDone& d) { on_sink_done(stream, d.sink, d.status); },
                 [&](delivery::Message& d) { on_message(std::move(d.message)); },
                 [&](delivery::Settled& d) { on_messages_settled(d.settlement); },
             },
             delivery.what);
}

void Session::on_incoming(const StreamPtr& stream, StreamOffer offer) {
  SessionStream& s = *stream;
  s.counterpart_ = std::move(offer.counterpart);
  s.sink_index_ = offer.sink_index;
  if (closing()) {
    s.removed_ = true;
    if (s.role() == StreamRole::responder) {
      incoming_open_.fetch_sub(1, std::memory_order_relaxed);
      s.counterpart_->deliver_reset(make_reset(Status::peer_gone, "responder left"));
    } else {
      s.counterpart_->deliver_sink_done(s.sink_index_, Status::peer_gone);
    }
    s.counterpart_.reset();
    return;
  }
  s.id_ = next_relay_stream_;
  next_relay_stream_ += 2;
  s.open_inbound(limits_.stream_window, s.role() == StreamRole::broadcast_sink);
  s.open_outbound(client_window_);
  wire::Open open;
  open.kind = offer.kind;
  open.peer = offer.sender;
  open.deadline_ms = offer.deadline_ms;
  open.idle_ms = offer.idle_ms;
  open.metadata = std::move(offer.metadata);
  s.open_pending_ = std::move(open);
  register_stream(stream);
  if (offer.first_chunk.size > 0) {
    context_.counters.queued_bytes.fetch_add(offer.first_chunk.size, std::memory_order_relaxed);
    s.enqueue_first(std::move(offer.first_chunk));
  }
  s.out_fin_pending_ = offer.fin;
  if (s.role() == StreamRole::broadcast_sink) watch_stall(stream);
  schedule(stream);
}

void Session::on_data(const StreamPtr& stream, wire::Slice payload, bool fin) {
  SessionStream& s = *stream;
  if (s.removed_ || !s.registered_) {
    // Not ours any more: hand the credit straight back so the sender is not stuck.
    if (s.counterpart_ && payload.size > 0) {
      s.counterpart_->deliver_credit(payload.size, s.sink_index_);
    }
    return;
  }
  s.touch();
  if (payload.size > 0) {
    context_.counters.queued_bytes.fetch_add(payload.size, std::memory_order_relaxed);
    s.enqueue(std::move(payload), bulk_queue_slots_);
  }
  if (fin) s.out_fin_pending_ = true;
  if (s.role() == StreamRole::broadcast_sink) watch_stall(stream);
  schedule(stream);
}

void Session::on_end(const StreamPtr& stream, wire::End end) {
  if (stream->removed_ || !stream->registered_) return;
  stream->touch();
  stream->out_end_pending_ = std::move(end);
  schedule(stream);
}

void Session::on_reset(const StreamPtr& stream, wire::Reset reset) {
  if (stream->removed_) return;
  if (!stream->registered_) {
    // Reset before our executor saw the stream: nothing reached the client yet.
    stream->removed_ = true;
    stream->counterpart_.reset();
    return;
  }
  reset_stream(stream, reset.status, std::move(reset.message), true, false);
}

void Session::on_credit(const StreamPtr& stream, std::uint32_t bytes, std::uint32_t sink) {
  if (stream->removed_) return;
  if (stream->role() == StreamRole::broadcast_source) {
    release_inbound(*stream, stream->fanout_.written(sink, bytes));
  } else {
    release_inbound(*stream, bytes);
  }
}

void Session::on_sink_done(const StreamPtr& stream, std::uint32_t sink, Status status) {
  if (stream->removed_) return;
  release_inbound(*stream, stream->fanout_.done(sink, status));
  maybe_send_summary(stream);
}

// ---- Bookkeeping. ----

void Session::register_stream(const StreamPtr& stream) {
  stream->registered_ = true;
  streams_.emplace(stream->id(), stream);
  timers_.reserve_for(streams_.size());
  if (!timers_.started() && phase_ != Phase::closed) wait_stream_timer(Clock::time_point::max());
  context_.counters.native.streams_total.fetch_add(1, std::memory_order_relaxed);
  context_.counters.native.streams_open.fetch_add(1, std::memory_order_relaxed);
}

void Session::release_inbound(SessionStream& stream, std::uint64_t bytes) {
  if (bytes == 0 || stream.inbound_done() || closing()) return;
  if (const auto grant = stream.release_inbound(bytes, limits_.stream_window); grant > 0) {
    wire::append_window(outbox_.control(), stream.id(), grant);
    queue_control_done();
  }
}

void Session::reset_stream(const StreamPtr& stream, Status status, std::string message,
                           bool tell_client, bool tell_counterpart) {
  SessionStream& s = *stream;
  if (s.removed_) return;
  s.outcome_ = status;
  if (tell_client && s.registered_ && !closing()) {
    wire::append_reset(outbox_.control(), s.id(), make_reset(status, message));
    queue_control_done();
  }
  if (tell_counterpart) {
    if (s.role() == StreamRole::broadcast_source) {
      s.fanout_.reset_all(status, message);
    } else if (s.role() == StreamRole::broadcast_sink) {
      if (s.counterpart_) {
        s.counterpart_->deliver_sink_done(s.sink_index_,
                                          status == Status::ok ? Status::cancelled : status);
      }
    } else if (s.counterpart_) {
      s.counterpart_->deliver_reset(make_reset(status, std::move(message)));
    }
  }
  remove_stream(stream);
}

void Session::reset_all(Status status, const std::string& message, bool tell_client) {
  auto streams = streams_;  // resetting removes them from streams_
  for (auto& [id, stream] : streams) reset_stream(stream, status, message, tell_client, true);
}

void Session::maybe_send_summary(const StreamPtr& stream) {
  SessionStream& s = *stream;
  if (s.role() != StreamRole::broadcast_source || !s.inbound_done() || !s.fanout_.complete() ||
      s.out_end_pending_ || s.out_done_) {
    return;
  }
  wire::End summary;
  summary.status = Status::ok;
  summary.delivered = s.fanout_.delivered();
  summary.dropped = s.fanout_.dropped();
  s.out_end_pending_ = std::move(summary);
  schedule(stream);
}

void Session::maybe_finish(const StreamPtr& stream) {
  if (stream->removed_) return;
  const bool in_finished = stream->inbound_done() || stream->role() == StreamRole::broadcast_sink;
  if (in_finished && stream->out_done_) remove_stream(stream);
}

void Session::remove_stream(const StreamPtr& stream) {
  SessionStream& s = *stream;
  if (s.removed_) return;
  s.removed_ = true;
  if (s.registered_) {
    if (auto it = streams_.find(s.id()); it != streams_.end() && it->second == stream) {
      streams_.erase(it);
    }
    context_.counters.native.streams_open.fetch_sub(1, std::memory_order_relaxed);
    context_.counters.native.count_stream_end(s.outcome_);
    if (s.role() == StreamRole::responder) {
      incoming_open_.fetch_sub(1, std::memory_order_relaxed);
    } else if (s.role() == StreamRole::requester || s.role() == StreamRole::broadcast_source) {
      --client_streams_open_;
    }
  }
  context_.counters.queued_bytes.fetch_sub(static_cast<std::int64_t>(s.drop_outbound()),
                                           std::memory_order_relaxed);
  s.counterpart_.reset();
  s.fanout_ = Fanout{};
  if (phase_ == Phase::draining && streams_.empty()) begin_close();
}

void Session::schedule(const StreamPtr& stream) {
  if (outbox_.schedule(stream)) wake_writer();
}

// ---- Stream timers. ----

void Session::watch_stall(const StreamPtr& stream) {
  if (stream->stalled_since() || stream->outbound_queued() == 0) return;
  const auto now = TurnClock::now();
  stream->set_stalled_since(now);
  arm_timer(stream, now + limits_.slow_consumer_timeout);
}

void Session::arm_timer(const StreamPtr& stream, Clock::time_point when) {
  if (when == Clock::time_point::max() || stream->removed_ || phase_ == Phase::closed) return;
  if (stream->timer_armed()) return;  // the pending entry re-checks and re-arms itself
  stream->set_timer_armed(true);
  const bool earlier = timers_.add(when, stream->id(), streams_.size(), [this](std::uint32_t id) {
    const auto it = streams_.find(id);
    return it == streams_.end() || !it->second->timer_armed();
  });
  if (earlier) wait_stream_timer(timers_.next_due());
}

void Session::wait_stream_timer(Clock::time_point due) {
  timers_.wait(due, [self = shared_from_this()](boost::system::error_code ec) {
    if (ec != asio::error::operation_aborted) self->on_stream_timer();
  });
}

void Session::on_stream_timer() {
  timers_.fired();
  if (phase_ == Phase::closed) return;
  const auto now = Clock::now();
  std::uint32_t id = 0;
  while (timers_.pop_due(now, id)) {
    const auto it = streams_.find(id);
    if (it == streams_.end() || !it->second->timer_armed()) continue;
    auto stream = it->second;
    stream->set_timer_armed(false);
    on_timer(stream);  // re-arms with a due time after now, or removes the stream
  }
  if (!timers_.waiting()) wait_stream_timer(timers_.next_due());
}

void Session::on_timer(const StreamPtr& stream) {
  if (stream->removed_) return;
  const auto now = Clock::now();
  if (stream->role() == StreamRole::broadcast_sink) {
    if (!stream->stalled_since()) return;
    const auto due = *stream->stalled_since() + limits_.slow_consumer_timeout;
    if (now >= due) {
      context_.counters.native.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("slow consumer dropped from broadcast conn={} peer={} stream={} pending={}",
                   connection_id_, peer_id_.to_string(), stream->id(), stream->outbound_queued());
      reset_stream(stream, Status::slow_consumer,
                   "receiver took no bytes for the slow-consumer timeout", true, true);
      return;
    }
    arm_timer(stream, due);
    return;
  }
  if (now >= stream->deadline()) {
    reset_stream(stream, Status::deadline_exceeded, "stream deadline exceeded", true, true);
    return;
  }
  Clock::time_point next = stream->deadline();
  if (stream->idle_timeout().count() > 0) {
    const auto idle_due = stream->last_activity() + stream->idle_timeout();
    if (now >= idle_due) {
      reset_stream(stream, Status::idle_timeout, "no bytes moved for the idle timeout", true, true);
      return;
    }
    next = std::min(next, idle_due);
  }
  arm_timer(stream, next);
}

}  // namespace switchboard::core::net
