// SessionStream: one stream of a native connection, its flow-control counters and outbound queue.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "native/fifo.hpp"
#include "registry/fanout.hpp"
#include "registry/peer.hpp"
#include "switchboard/wire/buffer.hpp"
#include "switchboard/wire/flow.hpp"

namespace switchboard::core::net {

using Clock = std::chrono::steady_clock;

/// The time of the event-loop turn in hand on this thread: read once for a batch of frames or
/// deliveries, where one clock read per frame was a measurable share of a small stream's cost.
/// Streams' activity and time limits count from it; outside a turn it is the clock itself.
class TurnClock {
public:
  static Clock::time_point now() noexcept { return turn_ != nullptr ? *turn_ : Clock::now(); }

  /// Makes `now` this thread's turn time until the scope ends (scopes nest). Never held across
  /// a co_await: another coroutine may run on the thread meanwhile.
  class Scope {
  public:
    explicit Scope(Clock::time_point now) noexcept : now_(now), outer_(turn_) { turn_ = &now_; }
    ~Scope() { turn_ = outer_; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

  private:
    Clock::time_point now_;
    const Clock::time_point* outer_;
  };

private:
  static inline thread_local const Clock::time_point* turn_ = nullptr;
};

class Session;

enum class StreamRole : std::uint8_t {
  requester,         // our client opened a Send; the counterpart is the responder
  responder,         // the relay opened a request to our client
  broadcast_source,  // our client broadcasts; the counterparts are the receivers
  broadcast_sink,    // the relay delivers someone's broadcast to our client
};

/// One stream on this connection, and the Endpoint its counterparts deliver to. The Endpoint
/// methods may be called from any thread and only hand a Delivery to the owning session; every
/// other member is used only on the session's executor.
class SessionStream final : public Endpoint, public std::enable_shared_from_this<SessionStream> {
public:
  SessionStream(std::shared_ptr<Session> session, StreamRole role) noexcept
      : session_(std::move(session)), role_(role) {}

  void deliver_data(wire::Slice payload, bool fin) override;
  void deliver_end(wire::End end) override;
  void deliver_reset(wire::Reset reset) override;
  void deliver_credit(std::uint32_t bytes, std::uint32_t sink) override;
  void deliver_sink_done(std::uint32_t sink, Status status) override;

  Session& session() const noexcept { return *session_; }
  StreamRole role() const noexcept { return role_; }
  std::uint32_t id() const noexcept { return id_; }

  // ---- Client -> relay: the credit our client may still use, granted back in batches. ----

  void open_inbound(std::int64_t credit, bool done) noexcept {
    in_credit_ = credit;
    in_done_ = done;
  }
  bool inbound_done() const noexcept { return in_done_; }
  void finish_inbound() noexcept { in_done_ = true; }
  /// Takes `bytes` of the client's credit; false (and nothing taken) when it has not that much.
  bool consume_inbound(std::uint32_t bytes) noexcept {
    if (bytes > in_credit_) return false;
    in_credit_ -= bytes;
    return true;
  }
  /// `bytes` left relay memory; returns the grant to send the client now, by the protocol's
  /// credit-return rule for a stream `window` (0: keep gathering). Credit grows only when
  /// granted, so a client can never run ahead of what it was told.
  std::uint32_t release_inbound(std::uint64_t bytes, std::uint32_t window) noexcept {
    in_release_pending_ += static_cast<std::uint32_t>(bytes);
    if (!wire::credit_due(in_release_pending_, window)) return 0;
    const std::uint32_t grant = in_release_pending_;
    in_credit_ += grant;
    in_release_pending_ = 0;
    return grant;
  }

  // ---- Relay -> client: payload queued for the writer and the credit our client granted. ----

  void open_outbound(std::int64_t credit) noexcept { out_credit_ = credit; }
  std::int64_t outbound_credit() const noexcept { return out_credit_; }
  std::uint64_t outbound_queued() const noexcept { return out_queued_; }
  /// Adds the client's WINDOW increment; false when the window would exceed the protocol's.
  bool grant_outbound(std::uint32_t increment) noexcept {
    out_credit_ += increment;
    return out_credit_ <= std::int64_t{wire::kMaxWindow};
  }
  /// Queues an offer's first chunk for the client, as it came.
  void enqueue_first(wire::Slice payload) {
    out_queued_ += payload.size;
    out_queue_.push_back(std::move(payload));
  }
  /// Queues payload for the client. A payload that must wait for credit and is small next to its
  /// read block is copied, so it does not pin the sender's whole block. Once more than a
  /// one-frame stream queues, the queue is sized for `bulk_slots` at once rather than growing
  /// each time the flow runs deeper than before.
  void enqueue(wire::Slice payload, std::size_t bulk_slots) {
    if (out_credit_ < payload.size && payload.block &&
        payload.size < payload.block->capacity() / 16) {
      payload = wire::Slice::copy_of(payload.bytes());
    }
    out_queued_ += payload.size;
    if (out_queue_.size() == out_queue_.capacity() && out_queue_.capacity() < bulk_slots) {
      out_queue_.reserve(bulk_slots);
    }
    out_queue_.push_back(std::move(payload));
  }
  /// Bytes the writer may take now: within credit, what is queued and this turn's `quantum`.
  std::uint32_t sendable(std::uint32_t sent, std::uint32_t quantum) const noexcept {
    const auto credit = static_cast<std::uint64_t>(std::max<std::int64_t>(out_credit_, 0));
    return static_cast<std::uint32_t>(
        std::min<std::uint64_t>({credit, out_queued_, quantum - std::min(sent, quantum)}));
  }
  std::uint32_t front_size() noexcept { return out_queue_.empty() ? 0 : out_queue_.front().size; }
  bool queue_empty() const noexcept { return out_queue_.empty(); }
  /// Takes `n` bytes (at most the first queued payload) for a frame, spending credit.
  wire::Slice take_outbound(std::uint32_t n) {
    wire::Slice slice = out_queue_.front().take_front(n);
    if (out_queue_.front().size == 0) out_queue_.pop_front();
    out_queued_ -= n;
    out_credit_ -= n;
    return slice;
  }
  /// Drops what is queued; returns how many bytes that was.
  std::uint64_t drop_outbound() noexcept {
    const std::uint64_t dropped = out_queued_;
    out_queue_.clear();
    out_queued_ = 0;
    return dropped;
  }

  // ---- Time limits (opener side) and the slow-consumer watch (broadcast receivers). ----

  void set_time_limits(Clock::time_point deadline, Clock::duration idle_timeout) noexcept {
    deadline_ = deadline;
    idle_timeout_ = idle_timeout;
  }
  Clock::time_point deadline() const noexcept { return deadline_; }
  Clock::duration idle_timeout() const noexcept { return idle_timeout_; }
  Clock::time_point last_activity() const noexcept { return last_activity_; }
  void touch() noexcept { last_activity_ = TurnClock::now(); }
  const std::optional<Clock::time_point>& stalled_since() const noexcept { return stalled_since_; }
  void set_stalled_since(std::optional<Clock::time_point> since) noexcept {
    stalled_since_ = since;
  }
  /// Whether the session's timer queue holds an entry for this stream.
  bool timer_armed() const noexcept { return timer_armed_; }
  void set_timer_armed(bool armed) noexcept { timer_armed_ = armed; }

private:
  // The session runs the stream's lifecycle: registration, its counterpart and its tail frames.
  friend class Session;
  friend class Outbox;

  std::shared_ptr<Session> session_;
  const StreamRole role_;
  std::uint32_t id_ = 0;  // 0 until registered on the executor
  bool registered_ = false;
  bool removed_ = false;
  Status outcome_ = Status::ok;  // the status this end finished with, for the metrics

  // The counterpart (requester/responder/sink) or the receivers (source).
  std::shared_ptr<Endpoint> counterpart_;
  std::uint32_t sink_index_ = 0;
  Fanout fanout_;

  std::int64_t in_credit_ = 0;
  std::uint32_t in_release_pending_ = 0;
  bool in_done_ = false;

  std::optional<wire::Open> open_pending_;  // relay-initiated: OPEN not yet written
  Fifo<wire::Slice, 2> out_queue_;          // inline: a one-frame stream queues without allocating
  std::uint64_t out_queued_ = 0;
  std::int64_t out_credit_ = 0;
  bool out_fin_pending_ = false;
  std::optional<wire::End> out_end_pending_;
  bool out_done_ = false;
  bool in_ready_list_ = false;

  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::duration idle_timeout_{};
  Clock::time_point last_activity_{};
  // Broadcast receivers: since when the relay has held bytes for this client of which none has
  // left (queued, or in a write the socket has not taken). Only a completed write is progress:
  // neither credit the client grants nor a write that never completes resets it, so a receiver
  // that stalls by credit, by socket or by both is dropped after the slow-consumer timeout.
  std::optional<Clock::time_point> stalled_since_;
  bool timer_armed_ = false;
};

using StreamPtr = std::shared_ptr<SessionStream>;

}  // namespace switchboard::core::net
