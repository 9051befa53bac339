// A native connection: owns its transport, frame reader, outbox and the streams it carries.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "native/handoff.hpp"
#include "native/outbox.hpp"
#include "native/session_stream.hpp"
#include "native/stream_timers.hpp"
#include "registry/peer.hpp"
#include "relay/relay_context.hpp"
#include "relay/streams.hpp"
#include "switchboard/wire/buffer.hpp"
#include "switchboard/wire/flow.hpp"
#include "transport/transport.hpp"

namespace switchboard::core::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

class PresenceFlusher;

/// The native door's per-connection session. Kept alive by its own coroutines and by the
/// registry while joined; all state lives on the transport's executor (one thread, or a strand).
///
/// Its jobs live apart: frames from the client (session_frames.cpp), deliveries from
/// counterparts and stream bookkeeping (session_streams.cpp), the writer (session_write.cpp,
/// composing in Outbox), stream timers (StreamTimers) and hand-offs between sessions
/// (HandoffBatch).
class Session final : public Peer,
                      public MessageSource,
                      public std::enable_shared_from_this<Session> {
public:
  /// `accepted_at` starts the handshake timeout (a connection may wait before its session).
  Session(std::unique_ptr<Transport> transport, RelayContext& context, std::uint64_t connection_id,
          Clock::time_point accepted_at = Clock::now());
  ~Session() override;

  void start();
  /// Begins a graceful drain: GOAWAY, no new streams, close when the last stream ends.
  void drain();
  /// Ends every stream (CANCELLED) and closes now.
  void terminate(std::string reason);

  void on_presence(const wire::Presence& event) override;
  void on_logged_presence(const wire::Presence& event,
                          const std::shared_ptr<PresenceLogChunk>& logged) override;
  std::shared_ptr<Endpoint> accept_stream(StreamOffer offer) override;
  /// Written as a MESSAGE frame to a client that speaks them; as a stream to one that does not.
  void deliver_message(MessageDelivery message) override;
  bool has_capacity() const override;
  /// Some of this client's messages reached their end (any thread).
  void messages_settled(const Settlement& settlement) override;
  /// Drains like drain(), but announces where the channel went (REDIRECT), or closes at once
  /// when no relay can serve it.
  void relocate(const cluster::Verdict& next) override;

private:
  // The batch runs or posts the deliveries it gathered for this session, and its woken writer.
  friend class HandoffBatch;
  // The thread's flusher writes presence this session holds back.
  friend class PresenceFlusher;

  enum class Phase : std::uint8_t {
    handshake,  // until a HELLO is accepted
    resolving,  // a valid HELLO waits for the cluster directory; reading is paused
    joined,     // a peer of its channel
    draining,   // GOAWAY sent: no new streams; closes when the last stream ends
    closing,    // the writer sends the final frames, then closes the transport
    closed,     // cleanup ran
  };

  // ---- Lifecycle (session.cpp). ----
  // Each loop returns whether the other must be stopped (it ended on its own).
  asio::awaitable<bool> read_loop();
  asio::awaitable<bool> write_loop();
  void spawn_loop(asio::awaitable<bool> (Session::*loop)());
  void on_loop_done(bool stop_other);
  void stop_io() noexcept;
  Clock::duration watchdog_tick() const;
  void arm_watchdog();
  void on_watchdog();
  void judge_liveness(Clock::time_point now);
  void arm_token_expiry();
  void expire_token();
  void fail_connection(Status status, std::string message);
  void begin_close();
  void cleanup();
  bool closing() const noexcept { return phase_ >= Phase::closing; }
  // A closing connection still handles the frames of the read in hand: an OPEN or a HELLO among
  // them is refused as draining if a drain was asked for before or while it closed.
  bool drain_asked() const noexcept {
    return phase_ == Phase::draining ||
           (phase_ >= Phase::closing && phase_before_close_ == Phase::draining);
  }
  // Whether the registry holds this session (a peer id is given only by a successful join).
  bool in_channel() const noexcept { return !peer_id_.is_nil(); }
  // Admitted to the channel's presence only (HELLO flag OBSERVE): the registry holds this
  // session as a watcher, not as a member.
  bool observer() const noexcept { return watch_token_ != 0; }

  // ---- Frames from the client (session_frames.cpp). ----
  bool handle_frame(const wire::Frame& frame);
  bool handle_hello(const wire::Frame& frame);
  bool resolve_hello();
  bool finish_hello(const cluster::Verdict& verdict);
  bool redirect_hello(const wire::Hello& hello, const cluster::Verdict& verdict);
  // Handles the frames the reader holds; false once the connection stops reading.
  void handle_frames(Clock::time_point now);
  bool handle_open(const wire::Frame& frame);
  bool handle_data(const wire::Frame& frame);
  bool handle_end(const wire::Frame& frame);
  bool handle_reset(const wire::Frame& frame);
  bool handle_window(const wire::Frame& frame);
  bool handle_ping(const wire::Frame& frame);
  bool handle_error(const wire::Frame& frame);
  bool handle_message(const wire::Frame& frame);
  StreamPtr find_stream(std::uint32_t id, wire::FrameType type);
  void open_request(std::uint32_t id, const StreamRequest& request, wire::Open open,
                    wire::Slice body, bool fin);
  void open_broadcast(std::uint32_t id, wire::Open open, wire::Slice body, bool fin);
  StreamPtr new_client_stream(std::uint32_t id, StreamRole role, const wire::Slice& body, bool fin);
  Clock::time_point start_client_stream(const StreamPtr& stream, const wire::Open& open);

  // ---- Deliveries from counterparts, on the session's executor (session_streams.cpp). ----
  // Hand-offs from this session's own thread may run inline unless earlier ones are posted.
  bool takes_deliveries_inline() const noexcept;
  void run_deliveries(DeliveryList& deliveries);
  void post_deliveries(DeliveryList deliveries);
  void run_delivery(Delivery& delivery);
  void on_incoming(const StreamPtr& stream, StreamOffer offer);
  void on_data(const StreamPtr& stream, wire::Slice payload, bool fin);
  void on_end(const StreamPtr& stream, wire::End end);
  void on_reset(const StreamPtr& stream, wire::Reset reset);
  void on_credit(const StreamPtr& stream, std::uint32_t bytes, std::uint32_t sink);
  void on_sink_done(const StreamPtr& stream, std::uint32_t sink, Status status);
  void on_message(MessageDelivery message);
  void on_messages_settled(const Settlement& settlement);

  // ---- Whole messages (session_messages.cpp). ----
  // Counts settled (or refused) messages of our client's towards its next MESSAGE_REPORT, and
  // sends the report when its credit is due or nothing of the client's is left in flight.
  void settle_own_messages(const Settlement& settlement, std::uint32_t refused);
  void send_message_report();
  // Messages queued for our client that have not moved for the slow-consumer timeout are
  // dropped (their senders learn it; our client learns how many it lost).
  void judge_message_progress(Clock::time_point now);

  // ---- Stream bookkeeping (session_streams.cpp). ----
  void register_stream(const StreamPtr& stream);
  void release_inbound(SessionStream& stream, std::uint64_t bytes);
  void reset_stream(const StreamPtr& stream, Status status, std::string message, bool tell_client,
                    bool tell_counterpart);
  void reset_all(Status status, const std::string& message, bool tell_client);
  void maybe_finish(const StreamPtr& stream);
  void maybe_send_summary(const StreamPtr& stream);
  void remove_stream(const StreamPtr& stream);
  void schedule(const StreamPtr& stream);
  void watch_stall(const StreamPtr& stream);
  void arm_timer(const StreamPtr& stream, Clock::time_point when);
  void wait_stream_timer(Clock::time_point due);
  void on_stream_timer();
  void on_timer(const StreamPtr& stream);

  // ---- Presence changes, coalesced (session.cpp). ----
  void schedule_presence();
  void write_presence();
  // A tick of this thread's flusher: writes the held changes when they are due, or at once when
  // no change was announced since the tick before (`quiet`); in a join storm (`storming`) not
  // before presence_storm_hold has passed since the last write. True once this session is done
  // with the flusher.
  bool flush_deferred_presence(Clock::time_point now, bool quiet, bool storming);

  // ---- The writer (session_write.cpp). ----
  void queue_control_done();
  void compose_write();
  void complete_write();
  void wake_writer() noexcept;
  void flush_woken_writer(bool write_now);
  void flush_now();
  void release_idle_buffers() noexcept;

  std::unique_ptr<Transport> transport_;
  // One I/O thread's context (or a strand): hand-offs posted to it from any thread run in the
  // order they were posted, which the streams rely on (an OPEN before its DATA).
  asio::any_io_executor executor_;
  // The same executor when it is an io_context's (it is, but for tests on other executors):
  // hand-offs made on its thread may run inline.
  std::optional<asio::io_context::executor_type> home_;
  // Delivery batches posted to this session and not yet run; while any is queued, a hand-off
  // from this thread is posted behind them instead of running inline ahead of them.
  std::atomic<std::uint32_t> deliveries_posted_{0};
  RelayContext& context_;
  const Limits& limits_;
  // Slots a bulk stream's out_queue is given at once: a stream window of full-size frames.
  const std::size_t bulk_queue_slots_;
  const std::uint64_t connection_id_;
  std::string remote_;
  wire::FrameReader reader_;
  asio::steady_timer wake_;
  asio::steady_timer watchdog_;  // handshake timeout, keepalive, closing grace
  int loops_running_ = 0;
  bool io_stopped_ = false;
  Phase phase_ = Phase::handshake;
  // While resolving: the HELLO in hand, the read loop's wake-up and the answer it wakes to.
  std::unique_ptr<wire::Hello> pending_hello_;
  asio::steady_timer resolved_;
  std::optional<cluster::Verdict> verdict_;
  static constexpr std::uint8_t kMaxResolveRounds = 3;
  std::uint8_t resolve_rounds_ = 0;
  // A relocating peer whose streams outlive this is closed (the drain timeout bounds a move).
  Clock::time_point relocate_deadline_ = Clock::time_point::max();
  Phase phase_before_close_ = Phase::handshake;  // set once closing (or closed) begins
  Clock::time_point closing_since_{};
  std::string close_reason_ = "eof";

  // Identity, set by the handshake.
  Uuid channel_;
  Uuid peer_id_;                   // an observer's names only its connection: it is no member
  std::uint64_t watch_token_ = 0;  // nonzero for an observer: its registration to unwatch
  std::uint16_t protocol_version_ = wire::kProtocolVersion;  // the one the client's HELLO spoke
  std::uint32_t client_max_frame_ = wire::kMinMaxFrame;
  std::uint32_t client_window_ = 0;
  auth::Grant grant_;  // what the HELLO's token allows (everything on an open relay)
  asio::steady_timer token_expiry_;

  // Whole messages. Set before the session joins (the registry's lock publishes it to senders
  // on other threads): whether the client reads MESSAGE frames.
  bool client_reads_messages_ = false;
  // The channel's other members as of the last broadcast (a stream or a message), refreshed from
  // the registry only after a presence change marked it stale (set from any thread, under the
  // registry's lock); cleared on this thread when a change comes, so it keeps nobody who left.
  std::atomic<bool> broadcast_targets_stale_{true};
  BroadcastTargets broadcast_targets_;
  std::int64_t message_credit_ = 0;       // body bytes our client may still send
  std::uint32_t messages_in_flight_ = 0;  // our client's messages not settled yet
  // Held while any is: their shares point to this session without owning it.
  std::shared_ptr<Session> alive_for_messages_;
  // Counted per message, added to the shared counters once per read.
  std::uint64_t messages_read_ = 0;
  std::uint64_t message_bytes_read_ = 0;
  wire::MessageReport report_{};  // counts gathered for the next MESSAGE_REPORT
  bool message_refusal_logged_ = false;
  // Progress of the messages towards our client, judged by the watchdog: how many left so far,
  // the count it saw last, and since when that count has not changed while some waited.
  // Set when waiting messages were dropped: later ones are dropped at once (and counted as
  // lost to our client) until a write to the client completes again.
  bool messages_dropping_ = false;
  std::uint64_t messages_written_ = 0;
  std::uint64_t messages_written_seen_ = 0;
  Clock::time_point messages_moved_{};

  // Streams.
  boost::unordered_flat_map<std::uint32_t, StreamPtr> streams_;
  StreamTimers timers_;
  std::uint32_t last_client_stream_ = 0;
  std::uint32_t next_relay_stream_ = 2;
  std::uint32_t client_streams_open_ = 0;
  std::atomic<std::uint32_t> incoming_open_{0};

  // Presence changes the registry announced (from any thread) and this session has not written
  // yet, in version order; written together, at most one write per presence_interval once
  // changes keep coming (schedule_presence). A member reads them from its channel's log: the
  // chunk holding the first, and the versions from the first to the last. An observer, whose
  // changes outlive the channel's log, queues its own.
  std::mutex presence_mutex_;
  std::shared_ptr<PresenceLogChunk> presence_log_;  // guarded by presence_mutex_
  std::uint64_t presence_first_ = 0;                // guarded by presence_mutex_
  std::uint64_t presence_last_ = 0;                 // guarded by presence_mutex_
  std::vector<PresenceRecord> presence_pending_;    // guarded by presence_mutex_ (observers)
  bool presence_scheduled_ = false;                 // guarded by presence_mutex_
  // On the session's thread: when presence was last written, the least time before the next
  // write, and when the held changes are due. The thread's flusher waits for that time; a
  // session on another kind of executor (a strand, in tests) has its own timer, made on first
  // use.
  Clock::time_point presence_written_{};
  Clock::time_point presence_sent_{};  // the last presence write or the welcome's snapshot
  Clock::duration presence_wait_{};
  Clock::time_point presence_due_{};
  PresenceFlusher* presence_flusher_ = nullptr;  // this thread's, looked up on first use
  std::unique_ptr<asio::steady_timer> presence_timer_;
  bool presence_burst_ = false;  // a snapshot, or several changes, went into one write

  // The writer.
  Outbox outbox_;
  enum class Writer : std::uint8_t {
    running,       // composing, or about to
    parked,        // waiting on wake_
    flush_queued,  // parked, and flush_now is due when this thread's hand-off batch is flushed
    writing,       // a write is in flight (also one flush_now began and the writer finishes)
  };
  Writer writer_ = Writer::running;
  Clock::time_point write_started_{};  // when the write in flight began
  // A direct write (flush_now) left part of the composed write unsent: the writer sends the
  // rest, from this offset, before it composes anew.
  std::optional<std::size_t> resume_at_;

  // Liveness: the watchdog judges the peer and gives idle connections' buffers back.
  Clock::time_point started_;
  wire::Keepalive keepalive_;           // what the read loop saw of the client
  wire::StallDetector watchdog_ticks_;  // whether this relay itself was stalled since the last tick
  bool wrote_since_tick_ = false;
  bool read_since_tick_ = false;
  bool release_read_block_ = false;  // idle for a tick: the read loop lets its block go
};

}  // namespace switchboard::core::net
