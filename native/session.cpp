// Session lifecycle: handshake, read loop, keepalive watchdog, draining and cleanup.
#include "native/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <bit>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <span>
#include <utility>

#include "native/presence_flusher.hpp"

namespace switchboard::core::net {

constexpr std::uint32_t kMaxHelloSize = 50 + wire::kMaxTokenSize;
// A connection reads into a block this small until its traffic needs full-size blocks.
constexpr std::size_t kIdleReadBlockSize = 1024;
// Small frames in a big window would ask for more: their queue grows as it fills instead.
constexpr std::size_t kMaxBulkQueueSlots = 256;

Session::Session(std::unique_ptr<Transport> transport, RelayContext& context,
                 std::uint64_t connection_id, Clock::time_point accepted_at)
    : transport_(std::move(transport)),
      executor_(transport_->get_executor()),
      context_(context),
      limits_(context.limits),
      bulk_queue_slots_(std::bit_ceil(std::min<std::size_t>(
          context.limits.stream_window / context.limits.max_frame + 2, kMaxBulkQueueSlots))),
      connection_id_(connection_id),
      // Until the handshake a HELLO with a full-size token must fit, whatever max_frame is.
      reader_(std::max<std::uint32_t>(context.limits.max_frame, kMaxHelloSize),
              context.limits.read_block_size, kIdleReadBlockSize, context.read_blocks),
      wake_(executor_),
      watchdog_(executor_),
      resolved_(executor_, Clock::time_point::max()),
      token_expiry_(executor_),
      timers_(executor_),
      outbox_(context),
      started_(accepted_at),
      keepalive_(Clock::now()),
      watchdog_ticks_(keepalive_.last_read()) {
  remote_ = transport_->remote();
  if (const auto* io = executor_.target<asio::io_context::executor_type>()) home_ = *io;
  context_.counters.native.connections_total.fetch_add(1, std::memory_order_relaxed);
  context_.counters.native.connections_open.fetch_add(1, std::memory_order_relaxed);
}

Session::~Session() {
  context_.counters.native.connections_open.fetch_sub(1, std::memory_order_relaxed);
}

void Session::start() {
  // The door accepts on one thread and may place the socket on another; the timers and the
  // loop count belong to the socket's thread, so the start runs there.
  asio::dispatch(executor_, [self = shared_from_this()] {
    spdlog::debug("session open conn={} remote={}", self->connection_id_, self->remote_);
    // Two coroutines and one timer wait per connection: an idle peer costs little memory.
    self->loops_running_ = 2;
    self->spawn_loop(&Session::read_loop);
    self->spawn_loop(&Session::write_loop);
    self->arm_watchdog();
  });
}

void Session::spawn_loop(asio::awaitable<bool> (Session::*loop)()) {
  asio::co_spawn(
      executor_, [self = shared_from_this(), loop] { return ((*self).*loop)(); },
      [self = shared_from_this()](std::exception_ptr error, bool stop_other) {
        if (error) {
          try {
            std::rethrow_exception(error);
          } catch (const std::exception& e) {
            spdlog::error("session failed conn={} error=\"{}\"", self->connection_id_, e.what());
          }
          stop_other = true;
        }
        self->on_loop_done(stop_other);
      });
}

void Session::on_loop_done(bool stop_other) {
  if (stop_other) stop_io();
  if (--loops_running_ == 0) {
    watchdog_.cancel();
    cleanup();
  }
}

void Session::stop_io() noexcept {
  io_stopped_ = true;
  resolved_.cancel();
  transport_->close();
  wake_writer();
}

asio::awaitable<bool> Session::read_loop() {
  for (;;) {
    auto space = reader_.prepare();
    auto [ec, n] = co_await transport_->read_some(asio::buffer(space.data(), space.size()));
    if (ec) {
      if (!io_stopped_) close_reason_ = ec == asio::error::eof ? "eof" : ec.message();
      co_return true;
    }
    reader_.commit(n);
    read_since_tick_ = true;
    const auto now = Clock::now();
    keepalive_.on_read(now);
    context_.counters.native.bytes_in.fetch_add(n, std::memory_order_relaxed);
    handle_frames(now);
    while (phase_ == Phase::resolving) {
      // The cluster directory answers the HELLO; frames read behind it wait in the reader.
      co_await resolved_.async_wait(asio::as_tuple(asio::use_awaitable));
      if (closing() || io_stopped_) break;
      if (!verdict_) continue;
      auto verdict = std::move(*verdict_);
      verdict_.reset();
      HandoffBatch::Scope handoffs;
      const bool go_on = finish_hello(verdict);
      handoffs.flush();
      if (go_on) handle_frames(Clock::now());
    }
    if (closing() || io_stopped_) {
      // Stop reading; the writer flushes the final frames, then closes the transport.
      co_return false;
    }
  }
}

void Session::handle_frames(Clock::time_point now) {
  // No co_await until the flush: the batch and the turn's time are this thread's.
  TurnClock::Scope turn(now);
  HandoffBatch::Scope handoffs;
  wire::Frame frame;
  for (;;) {
    const auto result = reader_.next(frame);
    if (result.kind == wire::DecodeResult::Kind::need_more) break;
    if (result.kind == wire::DecodeResult::Kind::error) {
      fail_connection(Status::protocol_error,
                      std::string(wire::decode_error_name(result.error)) + " in frame header");
      break;
    }
    if (!handle_frame(frame) || phase_ == Phase::resolving) break;
  }
  if (messages_read_ > 0) {
    context_.counters.native.messages_received.fetch_add(messages_read_, std::memory_order_relaxed);
    context_.counters.native.payload_bytes_in.fetch_add(message_bytes_read_,
                                                        std::memory_order_relaxed);
    messages_read_ = 0;
    message_bytes_read_ = 0;
  }
  if (release_read_block_) {
    release_read_block_ = false;
    reader_.release_idle_block();
  }
  handoffs.flush();
}

Clock::duration Session::watchdog_tick() const {
  return std::max<Clock::duration>(
      std::chrono::milliseconds(5),
      std::min<Clock::duration>(limits_.keepalive_interval, limits_.handshake_timeout) / 4);
}

void Session::arm_watchdog() {
  watchdog_.expires_after(watchdog_tick());
  watchdog_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->on_watchdog();
  });
}

void Session::on_watchdog() {
  if (io_stopped_) return;
  const auto now = Clock::now();
  switch (phase_) {
    case Phase::handshake:
    case Phase::resolving:
      if (now - started_ > limits_.handshake_timeout) {
        context_.counters.native.count_handshake_failure(HandshakeFailure::timeout);
        fail_connection(Status::protocol_error, "handshake timeout");
      }
      break;
    case Phase::draining:
      if (now > relocate_deadline_) {
        reset_all(Status::cancelled, "channel moved to another relay", true);
        close_reason_ = "relocated; streams outlived the drain timeout";
        begin_close();
        break;
      }
      [[fallthrough]];
    case Phase::joined:
      judge_liveness(now);
      if (io_stopped_) return;
      judge_message_progress(now);
      arm_watchdog();
      return;
    case Phase::closing:
      if (now - closing_since_ > std::chrono::seconds(2)) {
        stop_io();  // the client does not take our last frames: give up on them
        return;
      }
      break;
    case Phase::closed:
      return;
  }
  watchdog_ticks_.skip(now);  // only a joined peer is judged
  arm_watchdog();
}

void Session::judge_liveness(Clock::time_point now) {
  // A late tick means this relay was not running (descheduled, stopped by a debugger or a
  // sanitizer): what the peer sent meanwhile may still be unread, so nobody is judged on it.
  // A peer is judged only on a PING it had a whole interval to answer.
  const bool relay_was_stalled = watchdog_ticks_.on_tick(now, 2 * watchdog_tick());
  const wire::KeepaliveTiming timing{limits_.keepalive_interval, limits_.keepalive_interval};
  const auto verdict = keepalive_.judge(now, timing, relay_was_stalled);
  if (verdict == wire::KeepaliveVerdict::dead) {
    close_reason_ = "keepalive timeout";
    spdlog::debug("session dead conn={} peer={} reason=keepalive", connection_id_,
                  peer_id_.to_string());
    stop_io();
    return;
  }
  if (writer_ == Writer::writing && !relay_was_stalled &&
      now - write_started_ > limits_.write_timeout) {
    // The peer may answer PINGs and send WINDOWs, but its socket takes nothing from us.
    context_.counters.native.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    close_reason_ = "write timeout";
    spdlog::warn("slow consumer closed conn={} peer={} reason=write_timeout streams={}",
                 connection_id_, peer_id_.to_string(), streams_.size());
    stop_io();
    return;
  }
  if (verdict == wire::KeepaliveVerdict::send_ping) {
    keepalive_.on_ping_sent(now);
    wire::append_ping(outbox_.control(), static_cast<std::uint64_t>(now.time_since_epoch().count()),
                      false);
    queue_control_done();
  }
  if (!wrote_since_tick_) release_idle_buffers();
  // A read is pending into the reader's block while the connection is quiet: the block can
  // only be let go between reads, so the read loop does it after the next one completes.
  if (!read_since_tick_) release_read_block_ = true;
  wrote_since_tick_ = false;
  read_since_tick_ = false;
}

namespace {
// A thread's presence write buffer keeps this much room between writes (a storm's writes to a
// channel of a few hundred peers).
constexpr std::size_t kDirectBufferKeep = 64 * 1024;
}  // namespace

void Session::on_presence(const wire::Presence& event) {
  // Called with the registry's lock held: queue the change, and post at most one hand-off
  // until it is written, however many changes follow.
  broadcast_targets_stale_.store(true, std::memory_order_relaxed);
  {
    std::lock_guard lock(presence_mutex_);
    for (const auto& subject : event.peers) {
      presence_pending_.push_back(PresenceRecord{event.event, event.version, subject});
    }
    if (presence_scheduled_) return;
    presence_scheduled_ = true;
  }
  asio::post(executor_, [self = shared_from_this()] { self->schedule_presence(); });
}

void Session::on_logged_presence(const wire::Presence& event,
                                 const std::shared_ptr<PresenceLogChunk>& logged) {
  // As on_presence, but the change stays in the channel's log: a storm of joins costs each
  // member no memory of its own, only its place in the log.
  broadcast_targets_stale_.store(true, std::memory_order_relaxed);
  {
    std::lock_guard lock(presence_mutex_);
    if (!presence_log_) {
      presence_log_ = logged;
      presence_first_ = event.version;
    }
    presence_last_ = event.version;
    if (presence_scheduled_) return;
    presence_scheduled_ = true;
  }
  asio::post(executor_, [self = shared_from_this()] { self->schedule_presence(); });
}

// A change that finds the connection quiet is written in this turn of the event loop; while
// changes keep coming, each write waits four times as long as the one before, from an eighth of
// presence_interval up to all of it, so a storm of joins costs each peer a few writes. In a
// storm the relay counts (presence_storm_rate), every change waits for the flusher and a write
// follows the one before by presence_storm_hold. Once no change is announced for a tick of the
// thread's flusher (four in a storm), the held changes go out at once.
void Session::schedule_presence() {
  // Members cached for broadcasts (streams and messages) may have left: let them go now, not at
  // the next broadcast (which refreshes the list anyway).
  if (broadcast_targets_stale_.load(std::memory_order_relaxed)) broadcast_targets_.clear();
  if (closing()) return;
  const auto now = Clock::now();
  const auto interval = Clock::duration(limits_.presence_interval);
  if (now >= presence_written_ + interval) presence_wait_ = interval / 8;  // quiet long enough
  const auto due = presence_written_ + presence_wait_;
  if (home_ && !presence_flusher_) {
    presence_flusher_ = &asio::use_service<PresenceFlusher>(home_->context());
  }
  if (now >= due && !(presence_flusher_ && presence_flusher_->storming())) {
    write_presence();
    return;
  }
  presence_wait_ = std::min<Clock::duration>(interval, 4 * presence_wait_);
  presence_due_ = due;
  if (presence_flusher_) {
    // A tick resolves the due time and notices the end of a storm soon after it ends.
    const auto tick = std::clamp<Clock::duration>(interval / 16, std::chrono::milliseconds(1),
                                                  std::chrono::milliseconds(25));
    presence_flusher_->add(shared_from_this(), context_.registry, tick,
                           limits_.presence_storm_rate);
    return;
  }
  if (!presence_timer_) presence_timer_ = std::make_unique<asio::steady_timer>(executor_);
  presence_timer_->expires_at(due);
  presence_timer_->async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec && !self->closing()) self->write_presence();
  });
}

bool Session::flush_deferred_presence(Clock::time_point now, bool quiet, bool storming) {
  if (closing()) return true;
  if (!quiet) {
    if (now < presence_due_) return false;
    if (storming && now < presence_sent_ + limits_.presence_storm_hold) return false;
  }
  write_presence();
  return true;
}

void Session::write_presence() {
  std::shared_ptr<PresenceLogChunk> chunk;
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::vector<PresenceRecord> queued;
  {
    std::lock_guard lock(presence_mutex_);
    chunk = std::exchange(presence_log_, nullptr);
    first = presence_first_;
    last = presence_last_;
    queued.swap(presence_pending_);
    presence_scheduled_ = false;
  }
  const std::size_t count = chunk ? last - first + 1 : queued.size();
  if (count == 0) return;
  presence_written_ = Clock::now();
  presence_sent_ = presence_written_;
  // With nothing else waiting, the frames are encoded into this thread's buffer and written at
  // once: a storm's writes then leave no buffer of their own in each of its peers (freed, they
  // would still scatter holes over the heap that the peers' long-lived state is interleaved
  // with). What the socket does not take goes to the writer as usual.
  thread_local std::vector<std::uint8_t> direct_buffer;
  // (A parked writer has written whatever its last composition held.)
  const bool direct =
      writer_ == Writer::parked && !outbox_.has_queued() && !closing() && !io_stopped_;
  auto& out = direct ? direct_buffer : outbox_.control();
  // One id per frame; the frame's list is this thread's, so a write allocates nothing.
  thread_local wire::Presence frame{wire::PresenceEvent::joined, 0, {Uuid{}}};
  const auto append = [&out](const PresenceRecord& record) {
    frame.event = record.event;
    frame.version = record.version;
    frame.peers.front() = record.subject;
    wire::append_presence(out, frame);
  };
  if (chunk) {
    // Every version from first to last was announced to this session after it was logged, so
    // the chain holds them all (and its links up to `last` are set).
    for (auto version = first; version <= last; ++version) {
      while (!chunk->holds(version)) chunk = chunk->next();
      append(chunk->at(version));
    }
  } else {
    for (const auto& record : queued) append(record);
  }
  if (direct) {
    boost::system::error_code ec;
    const std::array buffers{asio::const_buffer(direct_buffer.data(), direct_buffer.size())};
    const std::size_t n = transport_->try_write(buffers, ec);
    context_.counters.native.bytes_out.fetch_add(n, std::memory_order_relaxed);
    const bool whole = n == direct_buffer.size();
    if (n > 0) wrote_since_tick_ = true;
    // The rest (and the error, if any) is the writer's. Every frame here has the same size
    // (one change each), so the end of the one the socket cut is where the next would start.
    if (!whole) {
      const std::size_t frame_size = direct_buffer.size() / count;
      outbox_.queue_rest(std::span(direct_buffer).subspan(n),
                         (frame_size - n % frame_size) % frame_size);
    }
    direct_buffer.clear();
    if (direct_buffer.capacity() > kDirectBufferKeep) direct_buffer.shrink_to_fit();
    if (whole) {
      // Several changes together: a storm, after which each of its idle peers gives back what
      // its welcome grew, as the writer does after a burst written through it.
      if (count > 1 && streams_.empty()) outbox_.release_idle();
      return;
    }
  }
  presence_burst_ = presence_burst_ || count > 1;
  queue_control_done();
}

bool Session::has_capacity() const {
  return incoming_open_.load(std::memory_order_relaxed) < limits_.max_streams_per_connection;
}

void Session::drain() {
  asio::post(executor_, [self = shared_from_this()] {
    if (self->drain_asked() || self->phase_ == Phase::closed) return;
    if (self->phase_ != Phase::joined) {
      // Not joined yet, or closing already: nothing to wait for, but a HELLO or an OPEN still
      // read is refused as draining.
      self->begin_close();
      self->phase_before_close_ = Phase::draining;
      return;
    }
    self->phase_ = Phase::draining;
    wire::append_go_away(self->outbox_.control(),
                         wire::GoAway{self->last_client_stream_, Status::ok, "relay is draining"});
    self->queue_control_done();
    if (self->streams_.empty()) self->begin_close();
  });
}

void Session::relocate(const cluster::Verdict& next) {
  asio::post(executor_, [self = shared_from_this(), next] {
    if (self->phase_ != Phase::joined && self->phase_ != Phase::draining) return;
    if (next.kind != cluster::Verdict::Kind::redirect) {
      // Fenced or unreachable: this relay must stop serving the channel now, streams or not.
      self->reset_all(Status::refused, "channel unavailable on this relay: " + next.reason, true);
      self->close_reason_ = "channel unavailable: " + next.reason;
      auto& control = self->outbox_.control();
      wire::append_error(control, wire::Error{Status::refused,
                                              "channel unavailable on this relay: " + next.reason});
      self->queue_control_done();
      self->begin_close();
      return;
    }
    self->context_.counters.native.redirects_sent.fetch_add(1, std::memory_order_relaxed);
    self->phase_ = Phase::draining;
    self->relocate_deadline_ = Clock::now() + self->limits_.drain_timeout;
    std::string message = "channel moved to relay " + next.owner.node_id;
    if (self->protocol_version_ >= wire::kRedirectVersion) {
      wire::append_redirect(self->outbox_.control(),
                            wire::Redirect{self->last_client_stream_, next.revision,
                                           next.owner.native, std::move(message)});
    } else {
      // An older client reconnects where it was told to at start; the message says where to.
      wire::append_go_away(self->outbox_.control(),
                           wire::GoAway{self->last_client_stream_, Status::ok,
                                        message + " at " + next.owner.native});
    }
    self->queue_control_done();
    if (self->streams_.empty()) self->begin_close();
  });
}

void Session::terminate(std::string reason) {
  asio::post(executor_, [self = shared_from_this(), reason = std::move(reason)] {
    if (self->phase_ == Phase::closed) return;
    self->reset_all(Status::cancelled, reason, true);
    self->close_reason_ = reason;
    self->begin_close();
  });
}

void Session::fail_connection(Status status, std::string message) {
  if (closing()) return;
  if (status == Status::protocol_error) {
    context_.counters.native.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("protocol violation conn={} remote={} error=\"{}\"", connection_id_, remote_,
                 message);
  }
  close_reason_ = message;
  outbox_.discard_control();  // the error goes out first; nothing else matters any more
  auto& control = outbox_.control();
  wire::append_error(control, wire::Error{status, std::move(message)});
  reset_all(Status::peer_gone, "peer connection failed", false);
  begin_close();
}

void Session::arm_token_expiry() {
  const auto remaining = std::max(grant_.expiry - std::chrono::system_clock::now(),
                                  std::chrono::system_clock::duration::zero());
  token_expiry_.expires_after(std::chrono::duration_cast<Clock::duration>(remaining));
  token_expiry_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->expire_token();
  });
}

// The peer's credentials ran out: its own streams end UNAUTHENTICATED, its counterparts see the
// peer go, and the connection closes with an ERROR saying why.
void Session::expire_token() {
  if (closing()) return;
  context_.counters.auth_failures[static_cast<std::size_t>(auth::Failure::expired_token)].fetch_add(
      1, std::memory_order_relaxed);
  spdlog::info("token expired conn={} channel={} peer={} streams={}", connection_id_,
               channel_.to_string(), peer_id_.to_string(), streams_.size());
  outbox_.discard_control();
  auto& control = outbox_.control();
  auto streams = streams_;
  for (auto& [id, stream] : streams) {
    if (stream->registered_) {
      wire::append_reset(control, stream->id(),
                         wire::Reset{Status::unauthenticated, 0, "token expired"});
    }
    reset_stream(stream, Status::peer_gone, "peer's token expired", false, true);
  }
  wire::append_error(control, wire::Error{Status::unauthenticated, "token expired"});
  close_reason_ = "token expired";
  begin_close();
}

void Session::begin_close() {
  if (closing()) return;
  phase_before_close_ = phase_;
  phase_ = Phase::closing;
  closing_since_ = Clock::now();
  resolved_.cancel();
  wake_writer();
}

void Session::cleanup() {
  if (!closing()) phase_before_close_ = phase_;
  phase_ = Phase::closed;
  token_expiry_.cancel();
  if (presence_timer_) presence_timer_->cancel();  // its wait holds this session
  timers_.stop();                                  // its wait holds this session
  if (observer()) {
    context_.registry.unwatch(channel_, watch_token_);
  } else if (in_channel()) {
    context_.registry.leave(channel_, peer_id_);
  }
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, stream] : streams) {
    reset_stream(stream, Status::peer_gone, "peer left", false, true);
  }
  broadcast_targets_.clear();  // two sessions holding each other would never be freed
  // Streams referenced by an interrupted write would keep this session alive through their
  // back-pointer; drop them with it.
  outbox_.drop_streams();
  transport_->close();
  spdlog::debug("session closed conn={} peer={} reason=\"{}\"", connection_id_,
                peer_id_.to_string(), close_reason_);
}

}  // namespace switchboard::core::net
