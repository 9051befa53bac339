// The session's writer: when it wakes, what it writes (composed by the Outbox) and what a
// completed write releases.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "native/session.hpp"

namespace switchboard::core::net {
namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

}  // namespace

void Session::wake_writer() noexcept {
  // Cancelling the timer takes the reactor's lock and queues a completion: only do it when the
  // writer is actually parked on it.
  if (writer_ != Writer::parked) return;
  auto& handoffs = HandoffBatch::this_thread();
  if (handoffs.is_open() && !closing() && !io_stopped_ && home_ &&
      home_->running_in_this_thread()) {
    // Inside a hand-off batch: write when it is flushed, straight from this thread, instead
    // of a round through the event loop to resume the writer and another for its completion.
    writer_ = Writer::flush_queued;
    handoffs.queue_flush(shared_from_this());
    return;
  }
  writer_ = Writer::running;
  wake_.cancel();
}

void Session::flush_woken_writer(bool write_now) {
  if (writer_ == Writer::flush_queued) writer_ = Writer::parked;
  if (write_now) {
    flush_now();
  } else if (writer_ == Writer::parked) {  // wake it the ordinary way
    writer_ = Writer::running;
    wake_.cancel();
  }
}

void Session::flush_now() {
  if (writer_ != Writer::parked) return;  // the writer runs: it composes again before it parks
  if (closing() || io_stopped_) {
    writer_ = Writer::running;
    wake_.cancel();
    return;
  }
  compose_write();
  if (outbox_.empty()) return;
  const auto& buffers = outbox_.gather(0);
  const std::size_t total = outbox_.gathered_bytes();
  boost::system::error_code ec;
  const std::size_t n = transport_->try_write(buffers, ec);
  if (n == total) {
    context_.counters.native.bytes_out.fetch_add(n, std::memory_order_relaxed);
    wrote_since_tick_ = true;
    complete_write();
    // A write takes at most a piece and a byte budget: the rest is the writer's, and nothing
    // else would wake it when no further stream becomes ready.
    // (A flush of this writer queued meanwhile then finds it running and does nothing.)
    if ((writer_ == Writer::parked || writer_ == Writer::flush_queued) && outbox_.has_queued()) {
      writer_ = Writer::running;
      wake_.cancel();
    } else if (presence_burst_ && streams_.empty() && writer_ != Writer::writing) {
      // As the writer does when it parks after such a write (a storm's last presence changes
      // are written from here): every idle peer of a storm would keep the grown buffers.
      presence_burst_ = false;
      outbox_.release_idle();
    }
    return;
  }
  // The socket took part of it, or none, or failed: the writer tries the rest (and meets the
  // error, if any) and completes this write as usual. Until then a write is in flight.
  context_.counters.native.bytes_out.fetch_add(n, std::memory_order_relaxed);
  resume_at_ = n;
  write_started_ = Clock::now();
  writer_ = Writer::writing;
  wake_.cancel();
}

void Session::release_idle_buffers() noexcept {
  if (writer_ == Writer::writing) return;
  outbox_.release_idle();
  if (streams_.empty()) {
    decltype(streams_)().swap(streams_);
    timers_.release();
  }
}

void Session::queue_control_done() {
  if (outbox_.control().size() > limits_.max_connection_buffer && !closing()) {
    // The client does not read what it is sent; it is not allowed to hold relay memory.
    context_.counters.native.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
    close_reason_ = "slow consumer";
    outbox_.discard_control();
    wire::append_error(outbox_.control(),
                       wire::Error{Status::slow_consumer, "outbound buffer limit"});
    reset_all(Status::peer_gone, "peer too slow", false);
    begin_close();
    return;
  }
  wake_writer();
}

void Session::compose_write() {
  // Since a connection gives its buffers back once its welcome is written, one that then
  // carries streams sizes them here, once.
  if (!streams_.empty()) outbox_.size_for_streams();
  // A stream that goes back in line wakes the writer as schedule() would: inside a batch that
  // queues another direct write.
  if (outbox_.compose(client_max_frame_, closing())) wake_writer();
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
    if (outbox_.empty()) {
      if (closing()) {
        transport_->shutdown_send();
        co_return true;
      }
      // A connection with no stream open has gone quiet (a presence snapshot was its burst):
      // it gives its byte buffers back now. One with streams keeps them for the next write;
      // the watchdog takes them once it has written nothing for a tick.
      if (streams_.empty()) {
        if (presence_burst_) {
          // Changes written together (a storm of joins) grew the buffers past what a quiet
          // connection keeps: give them all back, or every idle peer of a storm keeps ~1 KiB.
          presence_burst_ = false;
          outbox_.release_idle();
        } else {
          outbox_.shrink_when_quiet();
        }
      }
      wake_.expires_at(Clock::time_point::max());
      writer_ = Writer::parked;
      co_await wake_.async_wait(kUseTuple);
      // Whoever woke it said why: to run, or to finish a write flush_now began.
      if (writer_ != Writer::writing) writer_ = Writer::running;
      continue;
    }
    const auto& buffers = outbox_.gather(skip);
    if (!resumed) write_started_ = Clock::now();
    writer_ = Writer::writing;
    // The socket usually takes the whole write at once: try that first, which saves a pass of
    // the event loop for the completion; wait for room only for what it did not take.
    const std::size_t total = outbox_.gathered_bytes();
    boost::system::error_code ec;
    std::size_t n = transport_->try_write(buffers, ec);
    if (n < total && (!ec || ec == asio::error::would_block)) {
      auto [write_error, written] = co_await transport_->write(outbox_.gather(skip + n));
      ec = write_error;
      n += written;
    }
    writer_ = Writer::running;
    if (ec) {
      if (!io_stopped_) close_reason_ = "write failed: " + ec.message();
      co_return true;
    }
    context_.counters.native.bytes_out.fetch_add(n, std::memory_order_relaxed);
    wrote_since_tick_ = true;
    complete_write();
  }
}

void Session::complete_write() {
  HandoffBatch::Scope handoffs;
  outbox_.release_payload();
  if (auto& sent = outbox_.sent_messages(); !sent.empty()) {
    context_.counters.native.messages_delivered.fetch_add(sent.size(), std::memory_order_relaxed);
    messages_written_ += sent.size();
    SettleBatch settled;
    for (auto& share : sent) share.settle(true, &settled);
    sent.clear();
    settled.flush();
  }
  if (messages_dropping_) {
    // The client takes writes again: messages flow to it again, and it learns what it lost.
    messages_dropping_ = false;
    if (report_.lost > 0) send_message_report();
  }
  auto& written = outbox_.written();
  auto& finished = outbox_.finished();
  for (auto& stream : finished) stream->out_done_ = true;
  std::optional<Clock::time_point> now;
  for (auto& [stream, bytes] : written) {
    if (stream->stalled_since()) {
      // Bytes left: a receiver still holding more is judged from now on.
      if (stream->outbound_queued() == 0) {
        stream->set_stalled_since(std::nullopt);
      } else {
        if (!now) now = Clock::now();
        stream->set_stalled_since(now);
      }
    }
    // A receiver that has now written the whole broadcast reports done below, which releases
    // its share of the credit too: one hand-off instead of two.
    if (stream->role() == StreamRole::broadcast_sink && stream->out_done_) continue;
    if (stream->counterpart_) stream->counterpart_->deliver_credit(bytes, stream->sink_index_);
  }
  written.clear();
  for (auto& stream : finished) {
    if (stream->role() == StreamRole::broadcast_sink && stream->counterpart_ && !stream->removed_) {
      stream->counterpart_->deliver_sink_done(stream->sink_index_, Status::ok);
    }
    maybe_finish(stream);
  }
  finished.clear();
  handoffs.flush();
}

}  // namespace switchboard::core::net
