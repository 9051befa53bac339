// A native connection: owns its transport, frame reader, write queue and the streams it carries.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "net/fifo.hpp"
#include "net/handler_slot.hpp"
#include "registry/fanout.hpp"
#include "registry/peer.hpp"
#include "relay/relay_context.hpp"
#include "relay/streams.hpp"
#include "switchboard/wire/buffer.hpp"
#include "transport/transport.hpp"

namespace switchboard::core::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

class Session;
template <typename List>
class ListPool;

enum class StreamRole : std::uint8_t {
  requester,         // our client opened a Send; the counterpart is the responder
  responder,         // the relay opened a request to our client
  broadcast_source,  // our client broadcasts; the counterparts are the receivers
  broadcast_sink,    // the relay delivers someone's broadcast to our client
};

/// One stream on this connection, and the Endpoint its counterparts deliver to. Every field is
/// touched only on the session's executor; the Endpoint methods post there.
class SessionStream final : public Endpoint, public std::enable_shared_from_this<SessionStream> {
public:
  SessionStream(std::shared_ptr<Session> session, StreamRole stream_role) noexcept
      : session_(std::move(session)), role(stream_role) {}

  void deliver_data(wire::Slice payload, bool fin) override;
  void deliver_end(wire::End end) override;
  void deliver_reset(wire::Reset reset) override;
  void deliver_credit(std::uint32_t bytes, std::uint32_t sink) override;
  void deliver_sink_done(std::uint32_t sink, Status status) override;

  std::shared_ptr<Session> session_;
  const StreamRole role;
  std::uint32_t id = 0;  // 0 until registered on the executor
  bool registered = false;
  bool removed = false;
  Status outcome = Status::ok;  // the status this end finished with, for the metrics

  // The counterpart (requester/responder/sink) or the receivers (source).
  std::shared_ptr<Endpoint> counterpart;
  std::uint32_t sink_index = 0;
  Fanout fanout;

  // Client -> relay direction.
  std::int64_t in_credit = 0;
  std::uint32_t in_release_pending = 0;
  bool in_done = false;

  // Relay -> client direction.
  std::optional<wire::Open> open_pending;  // relay-initiated: OPEN not yet written
  Fifo<wire::Slice, 2> out_queue;          // inline: a one-frame stream queues without allocating
  std::uint64_t out_queued = 0;
  std::int64_t out_credit = 0;
  bool out_fin_pending = false;
  std::optional<wire::End> out_end_pending;
  bool out_done = false;
  bool in_ready_list = false;

  // Time limits (opener side) and slow-consumer watch (broadcast receivers).
  Clock::time_point deadline = Clock::time_point::max();
  Clock::duration idle_timeout{};
  Clock::time_point last_activity{};
  // Broadcast receivers: since when the relay has held bytes for this client of which none has
  // left (queued, or in a write the socket has not taken). Only a completed write is progress:
  // neither credit the client grants nor a write that never completes resets it, so a receiver
  // that stalls by credit, by socket or by both is dropped after the slow-consumer timeout.
  std::optional<Clock::time_point> stalled_since;
  bool timer_armed = false;  // the session's timer queue holds an entry for this stream
};

/// The native door's per-connection session. Kept alive by its own coroutines and by the
/// registry while joined; all state lives on the transport's executor (one thread, or a strand).
class Session final : public Peer, public std::enable_shared_from_this<Session> {
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
  std::shared_ptr<Endpoint> accept_stream(StreamOffer offer) override;
  bool has_capacity() const override;

private:
  friend class SessionStream;
  using StreamPtr = std::shared_ptr<SessionStream>;

  // Each loop returns whether the other must be stopped (it ended on its own).
  asio::awaitable<bool> read_loop();
  asio::awaitable<bool> write_loop();
  void spawn_loop(asio::awaitable<bool> (Session::*loop)());
  void on_loop_done(bool stop_other);
  void stop_io() noexcept;
  Clock::duration watchdog_tick() const;
  void arm_watchdog();
  void on_watchdog();

  // Inbound frames (session.cpp, session_streams.cpp).
  bool handle_frame(const wire::Frame& frame);
  bool handle_hello(const wire::Frame& frame);
  bool handle_open(const wire::Frame& frame);
  bool handle_data(const wire::Frame& frame);
  bool handle_end(const wire::Frame& frame);
  bool handle_reset(const wire::Frame& frame);
  bool handle_window(const wire::Frame& frame);
  StreamPtr find_stream(std::uint32_t id, wire::FrameType type);
  void open_request(std::uint32_t id, const StreamRequest& request, wire::Open open,
                    wire::Slice body, bool fin);
  void open_broadcast(std::uint32_t id, const StreamRequest& request, wire::Open open,
                      wire::Slice body, bool fin);

  // Deliveries from counterparts, on the session's executor.
  // Hand-offs to other sessions made while this thread handles one read or one completed write
  // are gathered and posted once per target session when that handling ends, so a read that
  // carried many small messages wakes each target once, not once per message.
  struct Delivery {
    enum class Kind : std::uint8_t { incoming, data, end, reset, credit, sink_done };
    Kind kind = Kind::data;
    StreamPtr stream;  // the target stream; it holds its session
    StreamOffer offer;
    wire::Slice payload;
    bool fin = false;
    wire::End end;
    wire::Reset reset;
    std::uint32_t bytes = 0;
    std::uint32_t sink = 0;
    Status status = Status::ok;
  };
  // When the outermost scope ends, hand-offs to sessions of this same thread run there and
  // then (unless earlier ones posted to that session are still queued: order is kept), the
  // others are posted; and sessions whose parked writer was woken meanwhile write at once
  // (flush_now), so a message crosses the relay in one pass of the event loop.
  class DeliveryScope {
  public:
    DeliveryScope() noexcept;
    ~DeliveryScope();
    DeliveryScope(const DeliveryScope&) = delete;
    DeliveryScope& operator=(const DeliveryScope&) = delete;

  private:
    bool owner_;  // the outermost scope of this thread runs or posts the gathered hand-offs
  };
  struct PendingBatch {
    using Targets = std::vector<std::pair<Session*, std::vector<Delivery>>>;
    PendingBatch();
    bool open = false;
    // Target sessions in first-delivery order, each with its deliveries in call order.
    Targets targets;
    Targets running;  // the targets being run when the scope ends; kept for its capacity
    // Sessions whose parked writer was woken inside the scope, in wake order.
    std::vector<std::shared_ptr<Session>> flushes;
    std::vector<std::shared_ptr<Session>> flushing;
  };
  static PendingBatch& this_thread_batch();
  static ListPool<std::vector<Delivery>>& delivery_lists();
  static void hand_off(Delivery delivery);
  static void post_deliveries(Session* target, std::vector<Delivery> deliveries);
  void run_delivery(Delivery& delivery);
  bool runs_on_this_thread() const noexcept;

  void on_incoming(const StreamPtr& stream, StreamOffer offer);
  void on_data(const StreamPtr& stream, wire::Slice payload, bool fin);
  void on_end(const StreamPtr& stream, wire::End end);
  void on_reset(const StreamPtr& stream, wire::Reset reset);
  void on_credit(const StreamPtr& stream, std::uint32_t bytes, std::uint32_t sink);
  void on_sink_done(const StreamPtr& stream, std::uint32_t sink, Status status);

  // Stream bookkeeping.
  void register_stream(const StreamPtr& stream);
  void release_inbound(SessionStream& stream, std::uint64_t bytes);
  void reset_stream(const StreamPtr& stream, Status status, std::string message, bool tell_client,
                    bool tell_counterpart);
  void maybe_finish(const StreamPtr& stream);
  void maybe_send_summary(const StreamPtr& stream);
  void remove_stream(const StreamPtr& stream);
  void schedule(const StreamPtr& stream);
  void arm_timer(const StreamPtr& stream, Clock::time_point when);
  void on_timer(const StreamPtr& stream);
  void arm_stream_timer();
  void wait_stream_timer(Clock::time_point due);
  void on_stream_timer();
  void touch(SessionStream& stream) noexcept;
  void watch_stall(const StreamPtr& stream);

  // Outbound (session_write.cpp).
  void queue_control_done();
  void compose_write();
  void emit_stream(const StreamPtr& stream, std::size_t& budget);
  void complete_write();
  void wake_writer() noexcept;
  void flush_now();
  void fill_gather(std::size_t skip);
  void release_idle_buffers() noexcept;

  // Token expiry (session.cpp).
  void arm_token_expiry();
  void expire_token();

  // Closing.
  void fail_connection(Status status, std::string message);
  void begin_close();
  void cleanup();

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

  // Identity, set by the handshake.
  bool joined_ = false;
  Uuid channel_;
  Uuid peer_id_;
  std::uint32_t client_max_frame_ = wire::kMinMaxFrame;
  std::uint32_t client_window_ = 0;
  auth::Grant grant_;  // what the HELLO's token allows (everything on an open relay)
  asio::steady_timer token_expiry_;

  // Streams.
  boost::unordered_flat_map<std::uint32_t, StreamPtr> streams_;
  // Every stream's deadline, idle and slow-consumer checks share one timer: a min-heap of
  // (due, stream id), one entry per stream with timer_armed. Entries of streams removed
  // meanwhile are dropped when they come due, or when they outnumber the live streams.
  struct TimerEntry {
    Clock::time_point due;
    std::uint32_t stream;
  };
  std::vector<TimerEntry> timer_heap_;
  asio::steady_timer stream_timer_;
  // Made with the first stream (an idle peer does without): a pending wait holds the session,
  // so this outlives it.
  std::unique_ptr<HandlerSlots> stream_timer_memory_;
  Clock::time_point stream_timer_due_ = Clock::time_point::max();
  std::uint32_t last_client_stream_ = 0;
  std::uint32_t next_relay_stream_ = 2;
  std::uint32_t client_streams_open_ = 0;
  std::atomic<std::uint32_t> incoming_open_{0};
  Fifo<StreamPtr> ready_;
  // Scratch list of a broadcast's receivers, kept for its capacity (empty between broadcasts).
  BroadcastTargets broadcast_targets_;

  // Outbound.
  std::vector<std::uint8_t> control_;
  std::vector<std::uint8_t> arena_;
  struct Piece {
    const std::uint8_t* data;  // nullptr: arena_ + offset
    std::size_t offset;
    std::size_t size;
  };
  std::vector<Piece> pieces_;
  std::vector<asio::const_buffer> gather_;
  std::vector<wire::Slice> in_flight_;
  std::vector<std::pair<StreamPtr, std::uint32_t>> written_;
  std::vector<StreamPtr> finished_out_;
  bool writing_ = false;
  Clock::time_point write_started_{};  // when the write in flight (writing_) began
  bool writer_parked_ = false;         // the writer waits on wake_
  bool flush_queued_ = false;          // flush_now is due when this thread's delivery scope ends
  // A direct write (flush_now) left part of the composed write unsent: the writer sends the
  // rest, from this offset, before it composes anew.
  std::optional<std::size_t> resume_at_;
  bool wrote_since_tick_ = false;    // the watchdog gives idle connections' buffers back
  bool read_since_tick_ = false;     // and their full-size read blocks
  bool release_read_block_ = false;  // idle for a tick: the read loop lets its block go

  // Liveness and closing.
  Clock::time_point started_;
  Clock::time_point last_read_;
  Clock::time_point last_tick_;  // the watchdog's previous run
  bool last_tick_late_ = false;
  Clock::time_point ping_sent_{};
  bool ping_outstanding_ = false;
  bool draining_ = false;
  bool closing_ = false;
  bool closed_ = false;
  Clock::time_point closing_since_{};
  std::string close_reason_ = "eof";
};

}  // namespace switchboard::core::net
