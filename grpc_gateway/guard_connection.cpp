// The gRPC door's per-connection relay: client bytes through the guard to gRPC, gRPC's bytes
// back, GOAWAY and refusals of our own written between server frames.
#include "grpc_gateway/guard_connection.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace switchboard::gateway {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
// Bytes read at once each way: 16 KiB while little moves, doubled after each read that fills
// the buffer up to 256 KiB (a bulk stream then moves in a quarter of the system calls), halved
// again after many reads that use less than a quarter.
constexpr std::size_t kMinRelayBuffer = 16 * 1024;
constexpr std::size_t kMaxRelayBuffer = 256 * 1024;
constexpr int kSmallReadsBeforeShrink = 64;

// Refusals (13 bytes each) waiting for the client: a client that opens streams beyond the limit
// and does not read its socket is cut off here rather than queued for.
constexpr std::size_t kMaxPendingFrames = 4096;
// How long a client that broke the rules may go on sending after its GOAWAY.
constexpr auto kLinger = std::chrono::seconds(1);
}  // namespace

// One direction's read buffer, sized by what the reads bring.
class RelayBuffer {
public:
  RelayBuffer() : bytes_(kMinRelayBuffer) {}
  asio::mutable_buffer space() { return asio::buffer(bytes_); }
  std::uint8_t* data() { return bytes_.data(); }
  /// Call after each read of `n` bytes, once they have been used.
  void read(std::size_t n) {
    if (n == bytes_.size() && bytes_.size() < kMaxRelayBuffer) {
      bytes_.resize(bytes_.size() * 2);
      small_reads_ = 0;
    } else if (n < bytes_.size() / 4 && bytes_.size() > kMinRelayBuffer &&
               ++small_reads_ >= kSmallReadsBeforeShrink) {
      bytes_.resize(bytes_.size() / 2);
      bytes_.shrink_to_fit();
      small_reads_ = 0;
    }
  }

private:
  std::vector<std::uint8_t> bytes_;
  int small_reads_ = 0;
};

GuardConnection::GuardConnection(std::unique_ptr<core::transport::Transport> client,
                                 GrpcSocket grpc, H2GuardLimits limits,
                                 std::chrono::milliseconds handshake_timeout,
                                 core::DoorCounters& door, TransportCounters& transport,
                                 std::uint64_t id)
    : client_(std::move(client)),
      grpc_(std::move(grpc)),
      guard_(limits, H2Guard::Clock::now()),
      door_counters_(door),
      transport_counters_(transport),
      handshake_timeout_(handshake_timeout),
      id_(id),
      remote_(client_->remote()) {}

void GuardConnection::start(std::function<void()> on_closed) {
  on_closed_ = std::move(on_closed);
  asio::co_spawn(
      client_->get_executor(), [self = shared_from_this()] { return self->run(); },
      [](std::exception_ptr error) {
        if (!error) return;
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          spdlog::error("grpc connection failed error=\"{}\"", e.what());
        }
      });
}

void GuardConnection::close() {
  asio::post(client_->get_executor(), [self = shared_from_this()] { self->close_now(); });
}

void GuardConnection::close_now() {
  if (closed_) return;
  closed_ = true;
  client_->close();
  error_code ignored;
  grpc_.close(ignored);
}

asio::awaitable<void> GuardConnection::run() {
  using namespace asio::experimental::awaitable_operators;
  spdlog::debug("grpc connection opened conn={} remote={}", id_, remote_);
  co_await ((client_to_grpc() && grpc_to_client()) || preface_deadline());
  close_now();
  spdlog::debug("grpc connection closed conn={} violation={}", id_,
                violation_ ? violation_name(violation_->violation) : "none");
  if (on_closed_) on_closed_();
}

// Ends (closing the connection) at the handshake timeout unless the preface came; otherwise
// waits for ever, so that `||` in run() leaves the relay to the other two.
asio::awaitable<void> GuardConnection::preface_deadline() {
  asio::steady_timer timer(client_->get_executor(), handshake_timeout_);
  co_await timer.async_wait(kUseTuple);
  if (guard_.preface_done() || closed_) {
    timer.expires_at(asio::steady_timer::time_point::max());
    co_await timer.async_wait(kUseTuple);
    co_return;
  }
  spdlog::debug("grpc connection closed conn={} remote={} reason=handshake_timeout", id_, remote_);
  close_now();
}

asio::awaitable<void> GuardConnection::client_to_grpc() {
  RelayBuffer buffer;
  for (;;) {
    auto [ec, n] = co_await client_->read_some(buffer.space());
    if (ec) break;  // the client closed or went away: gRPC reads its end of the stream
    door_counters_.bytes_in.fetch_add(n, std::memory_order_relaxed);
    std::span<const std::uint8_t> rest(buffer.data(), n);
    while (!rest.empty()) {
      auto step = guard_.client_bytes(rest, H2Guard::Clock::now());
      if (step.kind == GuardStep::Kind::violation) {
        on_violation(step);
        co_return;
      }
      if (step.consumed > 0) {
        auto [write_error, written] =
            co_await asio::async_write(grpc_, asio::buffer(rest.data(), step.consumed), kUseTuple);
        if (write_error) co_return;
      }
      rest = rest.subspan(step.consumed);
      if (step.kind != GuardStep::Kind::refuse) {
        if (rest.empty()) buffer.read(n);
        continue;
      }
      // gRPC has parsed the header block (its HPACK state stays in step with the client's) and
      // forgets the stream at once; the client learns it may retry elsewhere.
      transport_counters_.refused_streams.fetch_add(1, std::memory_order_relaxed);
      const auto reset = rst_stream_frame(step.stream, H2Error::refused_stream);
      auto [write_error, written] =
          co_await asio::async_write(grpc_, asio::buffer(reset), kUseTuple);
      if (write_error) co_return;
      if (to_client_.size() + reset.size() > kMaxPendingFrames) {
        GuardStep flood;
        flood.kind = GuardStep::Kind::violation;
        flood.violation = GuardViolation::refusals_pending;
        flood.code = H2Error::enhance_your_calm;
        flood.detail = "too many refused streams waiting for the client to read";
        on_violation(flood);
        co_return;
      }
      to_client_.insert(to_client_.end(), reset.begin(), reset.end());
      wake_writer();
    }
  }
  error_code ignored;
  grpc_.shutdown(GrpcSocket::shutdown_send, ignored);
}

void GuardConnection::on_violation(const GuardStep& step) {
  violation_ = step;
  transport_counters_.guard_violations[static_cast<std::size_t>(step.violation)].fetch_add(
      1, std::memory_order_relaxed);
  spdlog::warn("grpc connection closed conn={} remote={} reason={} code={} detail=\"{}\"", id_,
               remote_, violation_name(step.violation), static_cast<std::uint32_t>(step.code),
               step.detail);
  // gRPC sees the end of its input and drops the connection and its calls.
  error_code ignored;
  grpc_.shutdown(GrpcSocket::shutdown_send, ignored);
  wake_writer();
}

void GuardConnection::wake_writer() {
  if (!writer_reading_ || !guard_.server_at_frame_boundary()) return;
  error_code ignored;
  grpc_.cancel(ignored);
}

asio::awaitable<bool> GuardConnection::write_client(std::span<const std::uint8_t> bytes) {
  const std::array buffers{asio::const_buffer(bytes.data(), bytes.size())};
  auto [ec, n] = co_await client_->write(buffers);
  if (ec) co_return false;
  door_counters_.bytes_out.fetch_add(n, std::memory_order_relaxed);
  co_return true;
}

// Reads and drops what the client still sends for a moment before closing: closing a socket with
// unread input resets the connection, and the client could lose the GOAWAY with it.
asio::awaitable<void> GuardConnection::linger(RelayBuffer& buffer) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(client_->get_executor(), kLinger);
  auto drain = [this, &buffer]() -> asio::awaitable<void> {
    for (;;) {
      auto [ec, n] = co_await client_->read_some(buffer.space());
      if (ec) co_return;
    }
  };
  co_await (drain() || timer.async_wait(kUseTuple));
}

asio::awaitable<void> GuardConnection::grpc_to_client() {
  RelayBuffer buffer;
  for (;;) {
    if (closed_) co_return;
    const bool boundary = guard_.server_at_frame_boundary();
    if (boundary && !to_client_.empty()) {
      const auto frames = std::move(to_client_);
      to_client_.clear();
      if (!co_await write_client(frames)) break;
      continue;
    }
    if (violation_ && boundary) {
      const auto goaway =
          goaway_frame(guard_.last_client_stream(), violation_->code, violation_->detail);
      if (co_await write_client(goaway)) co_await linger(buffer);
      break;
    }
    if (grpc_done_) break;
    writer_reading_ = true;
    auto [ec, n] = co_await grpc_.async_read_some(buffer.space(), kUseTuple);
    writer_reading_ = false;
    if (ec == asio::error::operation_aborted && !closed_) continue;  // woken by wake_writer
    if (ec) {
      grpc_done_ = true;
      continue;
    }
    guard_.server_bytes(std::span<std::uint8_t>(buffer.data(), n));
    if (!co_await write_client(std::span<const std::uint8_t>(buffer.data(), n))) break;
    buffer.read(n);
  }
  // gRPC ended the connection (it had sent its own GOAWAY), or we did, or the client went away.
  client_->shutdown_send();
  close_now();
}

}  // namespace switchboard::gateway
