// Stream handling on a session: frames from the client, deliveries from counterparts, timers.
#include <spdlog/spdlog.h>

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/post.hpp>
#include <mutex>

#include "net/session.hpp"
#include "relay/streams.hpp"

namespace switchboard::core::net {
namespace {

wire::Reset make_reset(Status status, std::string message) {
  return wire::Reset{status, 0, std::move(message)};
}

bool is_client_id(std::uint32_t id) noexcept { return (id & 1U) == 1U; }

}  // namespace

// ---- Endpoint: called from any thread, hops onto the owning session's executor. ----

Session::PendingBatch::PendingBatch() {
  // Sized once per thread for a busy scope, so that a scope reaching more sessions than any
  // before it rarely grows them in the middle of a flow.
  constexpr std::size_t kSessionsPerScope = 64;
  targets.reserve(kSessionsPerScope);
  running.reserve(kSessionsPerScope);
  flushes.reserve(kSessionsPerScope);
  flushing.reserve(kSessionsPerScope);
}

Session::PendingBatch& Session::this_thread_batch() {
  thread_local PendingBatch batch;
  return batch;
}

// Delivery lists travel from the thread that gathers them to the target's thread and come
// back here once run, so a steady flow of hand-offs allocates nothing. Bounded: a few lists of
// modest capacity are kept, the rest freed.
template <typename List>
class ListPool {
public:
  ListPool() {
    // Lists for the hand-offs of a few busy flows at once, made before the first flow.
    free_.resize(kFirstLists);
    for (auto& list : free_) list.reserve(kFirstCapacity);
  }

  List take() {
    std::lock_guard lock(mutex_);
    if (free_.empty()) return {};
    List list = std::move(free_.back());
    free_.pop_back();
    return list;
  }
  void give_back(List list) {
    list.clear();
    if (list.capacity() > kMaxKeptCapacity) return;
    std::lock_guard lock(mutex_);
    if (free_.size() < kMaxKeptLists) free_.push_back(std::move(list));
  }

private:
  static constexpr std::size_t kFirstLists = 8;
  static constexpr std::size_t kFirstCapacity = 16;
  static constexpr std::size_t kMaxKeptLists = 64;
  static constexpr std::size_t kMaxKeptCapacity = 256;
  std::mutex mutex_;
  std::vector<List> free_;
};

ListPool<std::vector<Session::Delivery>>& Session::delivery_lists() {
  static ListPool<std::vector<Delivery>> pool;
  return pool;
}

Session::DeliveryScope::DeliveryScope() noexcept : owner_(!this_thread_batch().open) {
  this_thread_batch().open = true;
}

Session::DeliveryScope::~DeliveryScope() {
  if (!owner_) return;
  auto& batch = this_thread_batch();
  // What runs here may hand off and wake writers again; those are handled in the next round.
  // The rounds are bounded: what is left after them is posted, as it would be without a scope.
  constexpr int kMaxRounds = 8;
  for (int round = 0; !batch.targets.empty() || !batch.flushes.empty(); ++round) {
    const bool last = round + 1 == kMaxRounds;
    batch.running.swap(batch.targets);
    for (auto& [session, deliveries] : batch.running) {
      if (!last && session->runs_on_this_thread() &&
          session->deliveries_posted_.load(std::memory_order_acquire) == 0) {
        for (auto& delivery : deliveries) delivery.stream->session_->run_delivery(delivery);
        delivery_lists().give_back(std::move(deliveries));
      } else {
        post_deliveries(session, std::move(deliveries));
      }
    }
    batch.running.clear();
    batch.flushing.swap(batch.flushes);
    for (auto& session : batch.flushing) {
      session->flush_queued_ = false;
      if (last) {
        if (session->writer_parked_) {  // wake it the ordinary way
          session->writer_parked_ = false;
          session->wake_.cancel();
        }
      } else {
        session->flush_now();
      }
    }
    batch.flushing.clear();
    if (last) break;
  }
  batch.open = false;
}

bool Session::runs_on_this_thread() const noexcept {
  return home_ && home_->running_in_this_thread();
}

void Session::post_deliveries(Session* target, std::vector<Delivery> deliveries) {
  target->deliveries_posted_.fetch_add(1, std::memory_order_relaxed);
  asio::post(target->executor_, [target, deliveries = std::move(deliveries)]() mutable {
    // The deliveries hold their streams, which hold the target session.
    target->deliveries_posted_.fetch_sub(1, std::memory_order_release);
    const DeliveryScope scope;
    for (auto& delivery : deliveries) target->run_delivery(delivery);
    delivery_lists().give_back(std::move(deliveries));
  });
}

void Session::hand_off(Delivery delivery) {
  Session* target = delivery.stream->session_.get();
  auto& t_batch = this_thread_batch();
  if (!t_batch.open) {
    auto deliveries = delivery_lists().take();
    deliveries.push_back(std::move(delivery));
    post_deliveries(target, std::move(deliveries));
    return;
  }
  for (auto& [session, deliveries] : t_batch.targets) {
    if (session == target) {
      deliveries.push_back(std::move(delivery));
      return;
    }
  }
  t_batch.targets.emplace_back(target, delivery_lists().take())
      .second.push_back(std::move(delivery));
}

void Session::run_delivery(Delivery& delivery) {
  switch (delivery.kind) {
    case Delivery::Kind::incoming:
      on_incoming(delivery.stream, std::move(delivery.offer));
      break;
    case Delivery::Kind::data:
      on_data(delivery.stream, std::move(delivery.payload), delivery.fin);
      break;
    case Delivery::Kind::end:
      on_end(delivery.stream, std::move(delivery.end));
      break;
    case Delivery::Kind::reset:
      on_reset(delivery.stream, std::move(delivery.reset));
      break;
    case Delivery::Kind::credit:
      on_credit(delivery.stream, delivery.bytes, delivery.sink);
      break;
    case Delivery::Kind::sink_done:
      on_sink_done(delivery.stream, delivery.sink, delivery.status);
      break;
  }
}

void SessionStream::deliver_data(wire::Slice payload, bool fin) {
  Session::Delivery delivery;
  delivery.kind = Session::Delivery::Kind::data;
  delivery.stream = shared_from_this();
  delivery.payload = std::move(payload);
  delivery.fin = fin;
  Session::hand_off(std::move(delivery));
}

void SessionStream::deliver_end(wire::End end) {
  Session::Delivery delivery;
  delivery.kind = Session::Delivery::Kind::end;
  delivery.stream = shared_from_this();
  delivery.end = std::move(end);
  Session::hand_off(std::move(delivery));
}

void SessionStream::deliver_reset(wire::Reset reset) {
  Session::Delivery delivery;
  delivery.kind = Session::Delivery::Kind::reset;
  delivery.stream = shared_from_this();
  delivery.reset = std::move(reset);
  Session::hand_off(std::move(delivery));
}

void SessionStream::deliver_credit(std::uint32_t bytes, std::uint32_t sink) {
  Session::Delivery delivery;
  delivery.kind = Session::Delivery::Kind::credit;
  delivery.stream = shared_from_this();
  delivery.bytes = bytes;
  delivery.sink = sink;
  Session::hand_off(std::move(delivery));
}

void SessionStream::deliver_sink_done(std::uint32_t sink, Status status) {
  Session::Delivery delivery;
  delivery.kind = Session::Delivery::Kind::sink_done;
  delivery.stream = shared_from_this();
  delivery.sink = sink;
  delivery.status = status;
  Session::hand_off(std::move(delivery));
}

// ---- Frames from our client. ----

Session::StreamPtr Session::find_stream(std::uint32_t id, wire::FrameType type) {
  if (auto it = streams_.find(id); it != streams_.end()) return it->second;
  const bool seen = is_client_id(id) ? id <= last_client_stream_ : id < next_relay_stream_;
  if (!seen) {
    // Never opened: a stream-level error, the connection stays up.
    wire::append_reset(
        control_, id,
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
    wire::append_reset(control_, id, make_reset(status, std::move(message)));
    queue_control_done();
    return true;
  };
  if (draining_) return refuse(Status::refused, "relay is draining");
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
    open_broadcast(id, request, std::move(open), std::move(slice), fin);
  } else {
    open_request(id, request, std::move(open), std::move(slice), fin);
  }
  return true;
}

void Session::open_request(std::uint32_t id, const StreamRequest& request, wire::Open open,
                           wire::Slice body, bool fin) {
  auto stream = std::make_shared<SessionStream>(shared_from_this(), StreamRole::requester);
  stream->id = id;
  stream->in_credit = static_cast<std::int64_t>(limits_.stream_window) - body.size;
  stream->in_done = fin;
  stream->out_credit = client_window_;

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
    wire::append_reset(control_, id, make_reset(routed.status, std::move(routed.message)));
    queue_control_done();
    return;
  }
  stream->counterpart = std::move(routed.target);
  const auto now = Clock::now();
  if (open.deadline_ms != 0) stream->deadline = now + std::chrono::milliseconds(open.deadline_ms);
  stream->idle_timeout = stream_idle_timeout(limits_, open.idle_ms);
  register_stream(stream);
  ++client_streams_open_;
  touch(*stream);
  arm_timer(stream, std::min(stream->deadline, stream->idle_timeout.count() > 0
                                                   ? now + stream->idle_timeout
                                                   : Clock::time_point::max()));
}

void Session::open_broadcast(std::uint32_t id, const StreamRequest& request, wire::Open open,
                             wire::Slice body, bool fin) {
  auto stream = std::make_shared<SessionStream>(shared_from_this(), StreamRole::broadcast_source);
  stream->id = id;
  stream->in_credit = static_cast<std::int64_t>(limits_.stream_window) - body.size;
  stream->in_done = fin;
  stream->out_credit = client_window_;

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
  fan_out(context_, request, offer, stream->fanout, broadcast_targets_);
  const auto now = Clock::now();
  if (open.deadline_ms != 0) stream->deadline = now + std::chrono::milliseconds(open.deadline_ms);
  stream->idle_timeout = stream_idle_timeout(limits_, open.idle_ms);
  register_stream(stream);
  ++client_streams_open_;
  touch(*stream);
  if (body.size > 0) release_inbound(*stream, stream->fanout.forwarded_with_offer(body.size));
  arm_timer(stream, std::min(stream->deadline, stream->idle_timeout.count() > 0
                                                   ? now + stream->idle_timeout
                                                   : Clock::time_point::max()));
  maybe_send_summary(stream);
}

bool Session::handle_data(const wire::Frame& frame) {
  auto stream = find_stream(frame.header.stream, frame.header.type);
  if (!stream) return true;
  const auto size = static_cast<std::uint32_t>(frame.payload.size());
  const bool fin = (frame.header.flags & wire::flags::kFin) != 0;
  if (stream->role == StreamRole::broadcast_sink || stream->in_done) {
    reset_stream(stream, Status::protocol_error, "DATA after the end of the stream", true, true);
    return true;
  }
  if (size > stream->in_credit) {
    reset_stream(stream, Status::protocol_error, "flow control window exceeded", true, true);
    return true;
  }
  stream->in_credit -= size;
  stream->in_done = fin;
  context_.counters.native.payload_bytes_in.fetch_add(size, std::memory_order_relaxed);
  touch(*stream);
  wire::Slice slice = reader_.share(frame.payload);
  if (stream->role == StreamRole::broadcast_source) {
    release_inbound(*stream, stream->fanout.forward(slice, fin));
    if (fin) maybe_send_summary(stream);
  } else {
    stream->counterpart->deliver_data(std::move(slice), fin);
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
  if (stream->role == StreamRole::broadcast_sink || stream->in_done) {
    reset_stream(stream, Status::protocol_error, "END after the end of the stream", true, true);
    return true;
  }
  stream->in_done = true;
  touch(*stream);
  if (stream->role == StreamRole::responder) stream->outcome = end.status;
  if (stream->role == StreamRole::broadcast_source) {
    if (end.status != Status::ok) {
      reset_stream(stream, end.status, end.message, false, true);
      return true;
    }
    stream->fanout.forward(wire::Slice{}, true);
    maybe_send_summary(stream);
  } else {
    end.delivered = 0;
    end.dropped = 0;
    stream->counterpart->deliver_end(std::move(end));
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
  stream->out_credit += increment;
  if (stream->out_credit > std::int64_t{wire::kMaxWindow}) {
    reset_stream(stream, Status::protocol_error, "flow control window overflow", true, true);
    return true;
  }
  schedule(stream);
  return true;
}

// ---- Deliveries from counterparts, on our executor. ----

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
  Delivery delivery;
  delivery.kind = Delivery::Kind::incoming;
  delivery.stream = stream;
  delivery.offer = std::move(offer);
  hand_off(std::move(delivery));
  return stream;
}

void Session::on_incoming(const StreamPtr& stream, StreamOffer offer) {
  stream->counterpart = std::move(offer.counterpart);
  stream->sink_index = offer.sink_index;
  if (closed_ || closing_) {
    stream->removed = true;
    if (stream->role == StreamRole::responder) {
      incoming_open_.fetch_sub(1, std::memory_order_relaxed);
      stream->counterpart->deliver_reset(make_reset(Status::peer_gone, "responder left"));
    } else {
      stream->counterpart->deliver_sink_done(stream->sink_index, Status::peer_gone);
    }
    stream->counterpart.reset();
    return;
  }
  stream->id = next_relay_stream_;
  next_relay_stream_ += 2;
  stream->in_credit = limits_.stream_window;
  stream->in_done = stream->role == StreamRole::broadcast_sink;
  stream->out_credit = client_window_;
  wire::Open open;
  open.kind = offer.kind;
  open.peer = offer.sender;
  open.deadline_ms = offer.deadline_ms;
  open.idle_ms = offer.idle_ms;
  open.metadata = std::move(offer.metadata);
  stream->open_pending = std::move(open);
  register_stream(stream);
  if (offer.first_chunk.size > 0) {
    stream->out_queued += offer.first_chunk.size;
    context_.counters.queued_bytes.fetch_add(offer.first_chunk.size, std::memory_order_relaxed);
    stream->out_queue.push_back(std::move(offer.first_chunk));
  }
  stream->out_fin_pending = offer.fin;
  if (stream->role == StreamRole::broadcast_sink) watch_stall(stream);
  schedule(stream);
}

void Session::on_data(const StreamPtr& stream, wire::Slice payload, bool fin) {
  if (stream->removed || !stream->registered) {
    // Not ours any more: hand the credit straight back so the sender is not stuck.
    if (stream->counterpart && payload.size > 0) {
      stream->counterpart->deliver_credit(payload.size, stream->sink_index);
    }
    return;
  }
  touch(*stream);
  if (payload.size > 0) {
    // A small payload that must wait for client credit is copied so it does not pin a whole
    // read block of the sender.
    if (stream->out_credit < payload.size && payload.block &&
        payload.size < payload.block->capacity() / 16) {
      payload = wire::Slice::copy_of(payload.bytes());
    }
    stream->out_queued += payload.size;
    context_.counters.queued_bytes.fetch_add(payload.size, std::memory_order_relaxed);
    auto& queue = stream->out_queue;
    if (queue.size() == queue.capacity() && queue.capacity() < bulk_queue_slots_) {
      // More than a one-frame stream queues: size it for a window of full frames at once
      // rather than growing it each time the flow runs deeper than before.
      queue.reserve(bulk_queue_slots_);
    }
    queue.push_back(std::move(payload));
  }
  if (fin) stream->out_fin_pending = true;
  if (stream->role == StreamRole::broadcast_sink) watch_stall(stream);
  schedule(stream);
}

void Session::on_end(const StreamPtr& stream, wire::End end) {
  if (stream->removed || !stream->registered) return;
  touch(*stream);
  stream->out_end_pending = std::move(end);
  schedule(stream);
}

void Session::on_reset(const StreamPtr& stream, wire::Reset reset) {
  if (stream->removed) return;
  if (!stream->registered) {
    // Reset before our executor saw the stream: nothing reached the client yet.
    stream->removed = true;
    stream->counterpart.reset();
    return;
  }
  reset_stream(stream, reset.status, std::move(reset.message), true, false);
}

void Session::on_credit(const StreamPtr& stream, std::uint32_t bytes, std::uint32_t sink) {
  if (stream->removed) return;
  if (stream->role == StreamRole::broadcast_source) {
    release_inbound(*stream, stream->fanout.written(sink, bytes));
  } else {
    release_inbound(*stream, bytes);
  }
}

void Session::on_sink_done(const StreamPtr& stream, std::uint32_t sink, Status status) {
  if (stream->removed) return;
  release_inbound(*stream, stream->fanout.done(sink, status));
  maybe_send_summary(stream);
}

// ---- Bookkeeping. ----

void Session::register_stream(const StreamPtr& stream) {
  stream->registered = true;
  streams_.emplace(stream->id, stream);
  if (timer_heap_.capacity() < streams_.size()) {
    // Room for each stream's timer entry now, not when its timer is first armed mid-flow.
    timer_heap_.reserve(std::max<std::size_t>(8, 2 * streams_.size()));
  }
  if (!stream_timer_memory_ && !closed_) wait_stream_timer(Clock::time_point::max());
  context_.counters.native.streams_total.fetch_add(1, std::memory_order_relaxed);
  context_.counters.native.streams_open.fetch_add(1, std::memory_order_relaxed);
}

void Session::release_inbound(SessionStream& stream, std::uint64_t bytes) {
  if (bytes == 0 || stream.in_done || closing_) return;
  stream.in_release_pending += static_cast<std::uint32_t>(bytes);
  // Batch grants: a WINDOW frame per quarter window keeps the sender busy without chatter.
  // Credit grows only when granted, so a client can never run ahead of what it was told.
  if (stream.in_release_pending >= limits_.stream_window / 4) {
    stream.in_credit += stream.in_release_pending;
    wire::append_window(control_, stream.id, stream.in_release_pending);
    stream.in_release_pending = 0;
    queue_control_done();
  }
}

void Session::reset_stream(const StreamPtr& stream, Status status, std::string message,
                           bool tell_client, bool tell_counterpart) {
  if (stream->removed) return;
  stream->outcome = status;
  if (tell_client && stream->registered && !closing_) {
    wire::append_reset(control_, stream->id, make_reset(status, message));
    queue_control_done();
  }
  if (tell_counterpart) {
    if (stream->role == StreamRole::broadcast_source) {
      stream->fanout.reset_all(status, message);
    } else if (stream->role == StreamRole::broadcast_sink) {
      if (stream->counterpart) {
        stream->counterpart->deliver_sink_done(stream->sink_index,
                                               status == Status::ok ? Status::cancelled : status);
      }
    } else if (stream->counterpart) {
      stream->counterpart->deliver_reset(make_reset(status, std::move(message)));
    }
  }
  remove_stream(stream);
}

void Session::maybe_send_summary(const StreamPtr& stream) {
  if (stream->role != StreamRole::broadcast_source || !stream->in_done ||
      !stream->fanout.complete() || stream->out_end_pending || stream->out_done) {
    return;
  }
  wire::End summary;
  summary.status = Status::ok;
  summary.delivered = stream->fanout.delivered();
  summary.dropped = stream->fanout.dropped();
  stream->out_end_pending = std::move(summary);
  schedule(stream);
}

void Session::maybe_finish(const StreamPtr& stream) {
  if (stream->removed) return;
  const bool in_finished = stream->in_done || stream->role == StreamRole::broadcast_sink;
  if (in_finished && stream->out_done) remove_stream(stream);
}

void Session::remove_stream(const StreamPtr& stream) {
  if (stream->removed) return;
  stream->removed = true;
  if (stream->registered) {
    if (auto it = streams_.find(stream->id); it != streams_.end() && it->second == stream) {
      streams_.erase(it);
    }
    context_.counters.native.streams_open.fetch_sub(1, std::memory_order_relaxed);
    context_.counters.native.count_stream_end(stream->outcome);
    if (stream->role == StreamRole::responder) {
      incoming_open_.fetch_sub(1, std::memory_order_relaxed);
    } else if (stream->role == StreamRole::requester ||
               stream->role == StreamRole::broadcast_source) {
      --client_streams_open_;
    }
  }
  context_.counters.queued_bytes.fetch_sub(static_cast<std::int64_t>(stream->out_queued),
                                           std::memory_order_relaxed);
  stream->out_queue.clear();
  stream->out_queued = 0;
  stream->counterpart.reset();
  stream->fanout = Fanout{};
  if (draining_ && streams_.empty()) begin_close();
}

void Session::touch(SessionStream& stream) noexcept { stream.last_activity = Clock::now(); }

void Session::watch_stall(const StreamPtr& stream) {
  if (stream->stalled_since || stream->out_queued == 0) return;
  stream->stalled_since = Clock::now();
  arm_timer(stream, *stream->stalled_since + limits_.slow_consumer_timeout);
}

void Session::arm_timer(const StreamPtr& stream, Clock::time_point when) {
  if (when == Clock::time_point::max() || stream->removed || closed_) return;
  if (stream->timer_armed) return;  // the pending entry re-checks and re-arms itself
  stream->timer_armed = true;
  const auto later = [](const TimerEntry& a, const TimerEntry& b) { return a.due > b.due; };
  if (timer_heap_.size() >= 2 * streams_.size() + 64) {
    // Mostly entries of streams gone meanwhile: keep the queue proportional to live streams.
    std::erase_if(timer_heap_, [this](const TimerEntry& entry) {
      const auto it = streams_.find(entry.stream);
      return it == streams_.end() || !it->second->timer_armed;
    });
    std::make_heap(timer_heap_.begin(), timer_heap_.end(), later);
  }
  timer_heap_.push_back(TimerEntry{when, stream->id});
  std::push_heap(timer_heap_.begin(), timer_heap_.end(), later);
  arm_stream_timer();
}

void Session::arm_stream_timer() {
  if (timer_heap_.empty() || timer_heap_.front().due >= stream_timer_due_) return;
  wait_stream_timer(timer_heap_.front().due);
}

void Session::wait_stream_timer(Clock::time_point due) {
  // Re-arming cancels the pending wait; its handler sees operation_aborted and does nothing.
  // From the first stream on, a wait is always pending until cleanup (due "never" when no stream
  // has a timer), in memory of the session's own: a broadcast receiver that runs out of credit
  // arms it in the middle of a flow, which then neither allocates an operation nor grows the
  // reactor's heap of pending timers.
  if (!stream_timer_memory_) stream_timer_memory_ = std::make_unique<HandlerSlots>();
  stream_timer_due_ = due;
  stream_timer_.expires_at(due);
  stream_timer_.async_wait(
      asio::bind_allocator(SlotAllocator<void>(*stream_timer_memory_),
                           [self = shared_from_this()](boost::system::error_code ec) {
                             if (ec != asio::error::operation_aborted) self->on_stream_timer();
                           }));
}

void Session::on_stream_timer() {
  stream_timer_due_ = Clock::time_point::max();
  if (closed_) return;
  const auto later = [](const TimerEntry& a, const TimerEntry& b) { return a.due > b.due; };
  const auto now = Clock::now();
  while (!timer_heap_.empty() && timer_heap_.front().due <= now) {
    const std::uint32_t id = timer_heap_.front().stream;
    std::pop_heap(timer_heap_.begin(), timer_heap_.end(), later);
    timer_heap_.pop_back();
    const auto it = streams_.find(id);
    if (it == streams_.end() || !it->second->timer_armed) continue;
    auto stream = it->second;
    stream->timer_armed = false;
    on_timer(stream);  // re-arms with a due time after now, or removes the stream
  }
  if (stream_timer_due_ == Clock::time_point::max()) {
    wait_stream_timer(timer_heap_.empty() ? Clock::time_point::max() : timer_heap_.front().due);
  }
}

void Session::on_timer(const StreamPtr& stream) {
  if (stream->removed) return;
  const auto now = Clock::now();
  if (stream->role == StreamRole::broadcast_sink) {
    if (!stream->stalled_since) return;
    const auto due = *stream->stalled_since + limits_.slow_consumer_timeout;
    if (now >= due) {
      context_.counters.native.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("slow consumer dropped from broadcast conn={} peer={} stream={} pending={}",
                   connection_id_, peer_id_.to_string(), stream->id, stream->out_queued);
      reset_stream(stream, Status::slow_consumer,
                   "receiver took no bytes for the slow-consumer timeout", true, true);
      return;
    }
    arm_timer(stream, due);
    return;
  }
  if (now >= stream->deadline) {
    reset_stream(stream, Status::deadline_exceeded, "stream deadline exceeded", true, true);
    return;
  }
  Clock::time_point next = stream->deadline;
  if (stream->idle_timeout.count() > 0) {
    const auto idle_due = stream->last_activity + stream->idle_timeout;
    if (now >= idle_due) {
      reset_stream(stream, Status::idle_timeout, "no bytes moved for the idle timeout", true, true);
      return;
    }
    next = std::min(next, idle_due);
  }
  arm_timer(stream, next);
}

}  // namespace switchboard::core::net
