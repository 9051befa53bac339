// The session's writer: control frames first, then bulk streams round-robin, in gathered writes.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "net/session.hpp"

namespace switchboard::core::net {
namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
// One write carries at most this much payload and this many pieces, so control frames queued
// meanwhile wait at most one write, and iovec stays within IOV_MAX.
constexpr std::size_t kMaxWriteBytes = 512 * 1024;
constexpr std::size_t kMaxPieces = 512;
// A write of this many pieces marks a bulk connection (see compose_write).
constexpr std::size_t kBulkPieces = 8;
// Bytes one stream may put in a write before the next ready stream gets its turn.
constexpr std::uint32_t kQuantum = 64 * 1024;
// Control bytes a bulk connection's buffers are sized for; up to this much queued control is
// copied into the write's arena, and more (a presence snapshot) is swapped in instead.
constexpr std::size_t kBulkControlBytes = 4096;
// Streams whose bytes or end one write of a bulk connection carries, sized for up front.
constexpr std::size_t kBulkStreamsPerWrite = 64;
// A writer going idle keeps byte buffers up to this size; a burst (a presence snapshot of a big
// channel) does not stay allocated on a quiet connection.
constexpr std::size_t kIdleBufferBytes = 1024;

}  // namespace

void Session::wake_writer() noexcept {
  // Cancelling the timer takes the reactor's lock and queues a completion: only do it when the
  // writer is actually parked on it.
  if (!writer_parked_ || flush_queued_) return;
  auto& batch = this_thread_batch();
  if (batch.open && !closing_ && !io_stopped_ && runs_on_this_thread()) {
    // Inside a delivery scope: write when the scope ends, straight from this thread, instead
    // of a round through the event loop to resume the writer and another for its completion.
    flush_queued_ = true;
    batch.flushes.push_back(shared_from_this());
    return;
  }
  writer_parked_ = false;
  wake_.cancel();
}

void Session::flush_now() {
  if (!writer_parked_) return;  // the writer is running: it composes again before it parks
  if (closing_ || io_stopped_) {
    writer_parked_ = false;
    wake_.cancel();
    return;
  }
  compose_write();
  if (pieces_.empty()) return;
  fill_gather(0);
  std::size_t total = 0;
  for (const auto& buffer : gather_) total += buffer.size();
  boost::system::error_code ec;
  const std::size_t n = transport_->try_write(gather_, ec);
  if (n == total) {
    context_.counters.native.bytes_out.fetch_add(n, std::memory_order_relaxed);
    wrote_since_tick_ = true;
    complete_write();
    // A write takes at most kMaxPieces pieces and kMaxWriteBytes: the rest is the writer's,
    // and nothing else would wake it when no further stream becomes ready.
    if (writer_parked_ && (!ready_.empty() || !control_.empty())) {
      writer_parked_ = false;
      wake_.cancel();
    }
    return;
  }
  // The socket took part of it, or none, or failed: the writer tries the rest (and meets the
  // error, if any) and completes this write as usual. Until then a write is in flight.
  context_.counters.native.bytes_out.fetch_add(n, std::memory_order_relaxed);
  resume_at_ = n;
  write_started_ = Clock::now();
  writing_ = true;
  writer_parked_ = false;
  wake_.cancel();
}

void Session::fill_gather(std::size_t skip) {
  gather_.clear();
  for (const auto& piece : pieces_) {
    const std::uint8_t* base = piece.data ? piece.data : arena_.data() + piece.offset;
    if (skip >= piece.size) {
      skip -= piece.size;
      continue;
    }
    gather_.emplace_back(base + skip, piece.size - skip);
    skip = 0;
  }
}

void Session::release_idle_buffers() noexcept {
  if (writing_) return;
  // Buffers grown by a burst (a presence snapshot, a batch of frames) are not kept by a
  // connection that has gone quiet: thousands of idle peers must stay cheap.
  std::vector<std::uint8_t>().swap(arena_);
  if (control_.empty()) std::vector<std::uint8_t>().swap(control_);
  std::vector<Piece>().swap(pieces_);
  std::vector<asio::const_buffer>().swap(gather_);
  std::vector<wire::Slice>().swap(in_flight_);
  std::vector<std::pair<StreamPtr, std::uint32_t>>().swap(written_);
  std::vector<StreamPtr>().swap(finished_out_);
  decltype(broadcast_targets_)().swap(broadcast_targets_);
  if (ready_.empty()) ready_.release();
  if (streams_.empty()) {
    decltype(streams_)().swap(streams_);
    std::vector<TimerEntry>().swap(timer_heap_);
  }
}

void Session::queue_control_done() {
  if (control_.size() > limits_.max_connection_buffer && !closing_) {
    // The client does not read what it is sent; it is not allowed to hold relay memory.
    context_.counters.native.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    close_reason_ = "slow consumer";
    control_.clear();
    wire::append_error(control_, wire::Error{Status::slow_consumer, "outbound buffer limit"});
    auto streams = streams_;
    for (auto& [id, stream] : streams) {
      reset_stream(stream, Status::peer_gone, "peer too slow", false, true);
    }
    begin_close();
    return;
  }
  wake_writer();
}

void Session::schedule(const StreamPtr& stream) {
  if (stream->in_ready_list || stream->removed) return;
  const bool has_data = stream->out_queued > 0 && stream->out_credit > 0;
  const bool has_tail =
      stream->out_queued == 0 && (stream->out_fin_pending || stream->out_end_pending.has_value());
  if (!(has_data || has_tail || stream->open_pending)) return;
  stream->in_ready_list = true;
  ready_.push_back(stream);
  wake_writer();
}

asio::awaitable<bool> Session::write_loop() {
  for (;;) {
    if (io_stopped_) co_return false;
    std::size_t skip = 0;
    const bool resumed = resume_at_.has_value();
    if (resumed) {
      skip = *resume_at_;  // finish what flush_now began, timed from when it began
      resume_at_.reset();
    } else {
      compose_write();
    }
    if (pieces_.empty()) {
      if (closing_) {
        transport_->shutdown_send();
        co_return true;
      }
      // A connection with no stream open has gone quiet (a presence snapshot was its burst):
      // it gives its byte buffers back now. One with streams keeps them for the next write;
      // the watchdog takes them once it has written nothing for a tick.
      if (streams_.empty()) {
        if (arena_.capacity() > kIdleBufferBytes) std::vector<std::uint8_t>().swap(arena_);
        if (control_.capacity() > kIdleBufferBytes && control_.empty()) {
          std::vector<std::uint8_t>().swap(control_);
        }
      }
      wake_.expires_at(Clock::time_point::max());
      writer_parked_ = true;
      co_await wake_.async_wait(kUseTuple);
      writer_parked_ = false;
      continue;
    }
    fill_gather(skip);
    if (!resumed) write_started_ = Clock::now();
    writing_ = true;
    // The socket usually takes the whole write at once: try that first, which saves a pass of
    // the event loop for the completion; wait for room only for what it did not take.
    std::size_t total = 0;
    for (const auto& buffer : gather_) total += buffer.size();
    boost::system::error_code ec;
    std::size_t n = transport_->try_write(gather_, ec);
    if (n < total && (!ec || ec == asio::error::would_block)) {
      fill_gather(skip + n);
      auto [write_error, written] = co_await transport_->write(gather_);
      ec = write_error;
      n += written;
    }
    writing_ = false;
    if (ec) {
      if (!io_stopped_) close_reason_ = "write failed: " + ec.message();
      co_return true;
    }
    context_.counters.native.bytes_out.fetch_add(n, std::memory_order_relaxed);
    wrote_since_tick_ = true;
    complete_write();
  }
}

void Session::compose_write() {
  arena_.clear();
  pieces_.clear();
  in_flight_.clear();
  written_.clear();
  finished_out_.clear();
  if (pieces_.capacity() >= kBulkPieces && pieces_.capacity() < kMaxPieces) {
    // Writes have begun to gather many frames: size the per-piece buffers for the largest write
    // once, rather than growing them each time a write gathers more than any before it.
    pieces_.reserve(kMaxPieces);
    gather_.reserve(kMaxPieces);
    in_flight_.reserve(kMaxPieces);
    arena_.reserve(kBulkControlBytes + kMaxPieces * wire::kHeaderSize);
    control_.reserve(kBulkControlBytes);
    written_.reserve(kBulkStreamsPerWrite);
    finished_out_.reserve(kBulkStreamsPerWrite);
  }
  if (control_.size() > kBulkControlBytes) {
    arena_.swap(control_);  // not copied; the buffers' capacities change places this once
    pieces_.push_back(Piece{nullptr, 0, arena_.size()});
  } else if (!control_.empty()) {
    // Copied rather than swapped, so that each buffer keeps the capacity it grew to.
    arena_.insert(arena_.end(), control_.begin(), control_.end());
    control_.clear();
    pieces_.push_back(Piece{nullptr, 0, arena_.size()});
  }
  if (closing_) {
    ready_.clear();
    return;
  }
  std::size_t budget = kMaxWriteBytes;
  std::size_t turns = ready_.size();
  while (turns-- > 0 && budget > 0 && pieces_.size() + 8 < kMaxPieces && !ready_.empty()) {
    auto stream = std::move(ready_.front());
    ready_.pop_front();
    stream->in_ready_list = false;
    if (stream->removed) continue;
    emit_stream(stream, budget);
    schedule(stream);  // back of the line if it still has something to send
    if (!ready_.empty() && turns == 0 && budget > 0) turns = ready_.size();
  }
}

void Session::emit_stream(const StreamPtr& stream, std::size_t& budget) {
  SessionStream& s = *stream;
  std::uint32_t sent = 0;
  auto add_header = [&](wire::FrameType type, std::uint8_t frame_flags, std::uint32_t length) {
    const std::size_t at = arena_.size();
    arena_.resize(at + wire::kHeaderSize);
    wire::encode_header(wire::FrameHeader{type, frame_flags, s.id, length}, arena_.data() + at);
    pieces_.push_back(Piece{nullptr, at, wire::kHeaderSize});
  };
  auto add_slice = [&](wire::Slice slice) {
    pieces_.push_back(Piece{slice.data, 0, slice.size});
    in_flight_.push_back(std::move(slice));
  };
  auto available = [&]() -> std::uint32_t {
    const auto credit = static_cast<std::uint64_t>(std::max<std::int64_t>(s.out_credit, 0));
    return static_cast<std::uint32_t>(
        std::min<std::uint64_t>({credit, s.out_queued, kQuantum - std::min(sent, kQuantum)}));
  };

  if (s.open_pending) {
    const std::size_t prefix = wire::open_prefix_size(*s.open_pending);
    const std::size_t room = client_max_frame_ > prefix ? client_max_frame_ - prefix : 0;
    std::uint32_t body = 0;
    if (!s.out_queue.empty()) {
      body = static_cast<std::uint32_t>(
          std::min<std::size_t>({available(), s.out_queue.front().size, room}));
    }
    const bool fin = s.out_fin_pending && body == s.out_queued && !s.out_end_pending;
    const std::size_t at = arena_.size();
    wire::append_open(arena_, s.id, *s.open_pending, {}, fin);
    // append_open wrote the length without the body; patch it to include the gathered body.
    wire::encode_header(
        wire::FrameHeader{wire::FrameType::open, fin ? wire::flags::kFin : std::uint8_t{0}, s.id,
                          static_cast<std::uint32_t>(prefix + body)},
        arena_.data() + at);
    pieces_.push_back(Piece{nullptr, at, arena_.size() - at});
    if (body > 0) {
      add_slice(s.out_queue.front().take_front(body));
      if (s.out_queue.front().size == 0) s.out_queue.pop_front();
      s.out_queued -= body;
      s.out_credit -= body;
      sent += body;
    }
    s.open_pending.reset();
    if (fin) {
      s.out_fin_pending = false;
      finished_out_.push_back(stream);
    }
  }
  while (s.out_queued > 0 && pieces_.size() + 2 < kMaxPieces) {
    const std::uint32_t n = std::min<std::uint32_t>(
        {available(), s.out_queue.front().size, client_max_frame_,
         static_cast<std::uint32_t>(std::min<std::size_t>(budget, UINT32_MAX))});
    if (n == 0) break;
    const bool last = n == s.out_queued;
    const bool fin = last && s.out_fin_pending && !s.out_end_pending;
    add_header(wire::FrameType::data, fin ? wire::flags::kFin : 0, n);
    add_slice(s.out_queue.front().take_front(n));
    if (s.out_queue.front().size == 0) s.out_queue.pop_front();
    s.out_queued -= n;
    s.out_credit -= n;
    sent += n;
    budget -= std::min<std::size_t>(budget, n);
    if (fin) {
      s.out_fin_pending = false;
      finished_out_.push_back(stream);
    }
  }
  if (s.out_queued == 0 && !s.out_done) {
    if (s.out_end_pending) {
      wire::End end = std::move(*s.out_end_pending);
      s.out_end_pending.reset();
      if (s.role == StreamRole::requester) s.outcome = end.status;
      s.out_fin_pending = false;
      const std::size_t at = arena_.size();
      wire::append_end(arena_, s.id, end);
      pieces_.push_back(Piece{nullptr, at, arena_.size() - at});
      finished_out_.push_back(stream);
    } else if (s.out_fin_pending) {
      s.out_fin_pending = false;
      add_header(wire::FrameType::data, wire::flags::kFin, 0);
      finished_out_.push_back(stream);
    }
  }
  if (sent > 0) {
    context_.counters.native.payload_bytes_out.fetch_add(sent, std::memory_order_relaxed);
    if (s.out_queued > 0 && s.out_credit <= 0) {
      context_.counters.native.credit_stalls.fetch_add(1, std::memory_order_relaxed);
    }
    written_.emplace_back(stream, sent);
    context_.counters.queued_bytes.fetch_sub(sent, std::memory_order_relaxed);
  }
}

void Session::complete_write() {
  const DeliveryScope gather;
  in_flight_.clear();
  for (auto& stream : finished_out_) stream->out_done = true;
  std::optional<Clock::time_point> now;
  for (auto& [stream, bytes] : written_) {
    if (stream->stalled_since) {
      // Bytes left: a receiver still holding more is judged from now on.
      if (stream->out_queued == 0) {
        stream->stalled_since.reset();
      } else {
        if (!now) now = Clock::now();
        stream->stalled_since = now;
      }
    }
    // A receiver that has now written the whole broadcast reports done below, which releases
    // its share of the credit too: one hand-off instead of two.
    if (stream->role == StreamRole::broadcast_sink && stream->out_done) continue;
    if (stream->counterpart) stream->counterpart->deliver_credit(bytes, stream->sink_index);
  }
  written_.clear();
  for (auto& stream : finished_out_) {
    if (stream->role == StreamRole::broadcast_sink && stream->counterpart && !stream->removed) {
      stream->counterpart->deliver_sink_done(stream->sink_index, Status::ok);
    }
    maybe_finish(stream);
  }
  finished_out_.clear();
}

}  // namespace switchboard::core::net
