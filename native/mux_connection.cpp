// A shared native connection: demultiplexes LANE frames into lanes, gathers the lanes' writes
// into one outbound buffer, and gives each lane a Transport for its Session.
#include "native/mux_connection.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstring>
#include <utility>

#include "switchboard/wire/codec.hpp"

namespace switchboard::core::net {

namespace {

using boost::system::error_code;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

// One read of the shared connection: enough for many lanes' frames at once.
constexpr std::size_t kReadSize = 256 * 1024;
// Bytes that arrived for a lane and that its session has not read yet, above which the shared
// connection stops reading until it has: a lane's session pauses its reads only while the
// cluster directory answers its HELLO, and the client sends nothing more until WELCOME.
constexpr std::size_t kLaneInboundLimit = 256 * 1024;

void complete(const asio::any_io_executor& executor, MuxConnection::IoHandler handler,
              error_code ec, std::size_t bytes) {
  asio::post(executor, [handler = std::move(handler), ec, bytes]() mutable {
    std::move(handler)(ec, bytes);
  });
}

}  // namespace

struct MuxConnection::Lane {
  explicit Lane(std::uint32_t lane_id) : id(lane_id) {}
  std::uint32_t id;
  std::vector<std::uint8_t> inbound;  // arrived and not read yet, from inbound_head on
  std::size_t inbound_head = 0;
  bool client_done = false;  // the client's FIN arrived: eof after `inbound`
  bool relay_done = false;   // our FIN is queued
  bool closed = false;       // the session let the lane go: its bytes are dropped
  error_code failure;        // the shared connection ended
  asio::mutable_buffer reader_buffer;
  // Boost 1.81's any_completion_handler move-assignment recurses: only move-construct it.
  std::optional<IoHandler> reader;
  std::optional<IoHandler> writer;  // waiting for outbound room
};

namespace {

// The Transport a lane's Session reads and writes: bytes go through the shared connection.
class LaneTransport final : public Transport {
public:
  LaneTransport(std::shared_ptr<MuxConnection> mux, std::shared_ptr<MuxConnection::Lane> lane,
                asio::any_io_executor executor)
      : mux_(std::move(mux)), lane_(std::move(lane)), executor_(std::move(executor)) {}
  ~LaneTransport() override { close(); }

  asio::any_io_executor get_executor() override { return executor_; }

  asio::awaitable<IoResult> read_some(asio::mutable_buffer buffer) override {
    auto& lane = *lane_;
    if (lane.inbound_head < lane.inbound.size()) {
      co_return IoResult{error_code{}, mux_->take_inbound(lane, buffer)};
    }
    if (lane.closed) co_return IoResult{asio::error::operation_aborted, 0};
    if (lane.failure) co_return IoResult{lane.failure, 0};
    if (lane.client_done) co_return IoResult{asio::error::eof, 0};
    co_return co_await asio::async_initiate<decltype(kUseTuple), void(error_code, std::size_t)>(
        [&lane](auto handler, asio::mutable_buffer target) {
          lane.reader_buffer = target;
          lane.reader.emplace(std::move(handler));
        },
        kUseTuple, buffer);
  }

  asio::awaitable<IoResult> write(std::span<const asio::const_buffer> buffers) override {
    std::size_t total = 0;
    for (const auto& buffer : buffers) total += buffer.size();
    std::size_t done = 0;
    for (;;) {
      auto& lane = *lane_;
      if (lane.closed || lane.relay_done) co_return IoResult{asio::error::broken_pipe, done};
      if (lane.failure) co_return IoResult{lane.failure, done};
      done += mux_->append(lane, buffers, done);
      if (done == total) co_return IoResult{error_code{}, total};
      auto [ec, ignored] =
          co_await asio::async_initiate<decltype(kUseTuple), void(error_code, std::size_t)>(
              [this](auto handler) {
                mux_->wait_for_room(*lane_, MuxConnection::IoHandler(std::move(handler)));
              },
              kUseTuple);
      if (ec) co_return IoResult{ec, done};
    }
  }

  std::size_t try_write(std::span<const asio::const_buffer> buffers,
                        error_code& ec) noexcept override {
    auto& lane = *lane_;
    if (lane.closed || lane.relay_done) {
      ec = asio::error::broken_pipe;
      return 0;
    }
    if (lane.failure) {
      ec = lane.failure;
      return 0;
    }
    const std::size_t n = mux_->append(lane, buffers, 0);
    ec = n == 0 ? error_code(asio::error::would_block) : error_code{};
    return n;
  }

  void shutdown_send() noexcept override {
    if (!lane_->relay_done && !lane_->closed) mux_->finish_lane(*lane_);
  }

  void close() noexcept override {
    if (!lane_->closed) mux_->close_lane(*lane_);
  }

  std::string remote() const override { return mux_->lane_remote(*lane_); }

private:
  std::shared_ptr<MuxConnection> mux_;
  std::shared_ptr<MuxConnection::Lane> lane_;
  asio::any_io_executor executor_;
};

}  // namespace

MuxConnection::MuxConnection(std::unique_ptr<Transport> transport, RelayContext& context,
                             StartLane start_lane, AtLimit at_limit, Clock::time_point accepted_at,
                             std::uint16_t placement_shards)
    : transport_(std::move(transport)),
      executor_(transport_->get_executor()),
      context_(context),
      start_lane_(std::move(start_lane)),
      at_limit_(std::move(at_limit)),
      remote_(transport_->remote()),
      accepted_at_(accepted_at),
      placement_shards_(placement_shards),
      watchdog_(executor_),
      resume_(executor_, Clock::time_point::max()),
      idle_since_(accepted_at) {
  // The shared connection counts as a connection (so an idle one is bounded too), and so does
  // each of its lanes, through its session.
  context_.counters.native.connections_total.fetch_add(1, std::memory_order_relaxed);
  context_.counters.native.connections_open.fetch_add(1, std::memory_order_relaxed);
}

MuxConnection::~MuxConnection() {
  context_.counters.native.connections_open.fetch_sub(1, std::memory_order_relaxed);
}

void MuxConnection::start() {
  // Accepted on one thread, placed on another: the timer belongs to the socket's thread.
  asio::dispatch(executor_, [self = shared_from_this()] {
    spdlog::debug("shared connection open remote={}", self->remote_);
    self->in_.resize(kReadSize);
    asio::co_spawn(
        self->executor_, [self] { return self->read_loop(); }, asio::detached);
    self->arm_watchdog();
  });
}

void MuxConnection::drain() {
  asio::post(executor_, [self = shared_from_this()] {
    self->draining_ = true;
    if (self->lanes_.empty()) self->close_now();
  });
}

void MuxConnection::terminate() {
  asio::post(executor_, [self = shared_from_this()] { self->close_now(); });
}

asio::awaitable<void> MuxConnection::read_loop() {
  while (!closed_) {
    if (paused_for_ != nullptr) {
      resume_.expires_at(Clock::time_point::max());
      co_await resume_.async_wait(kUseTuple);
      if (closed_) break;
      // The bytes read before the pause come first.
      if (paused_for_ == nullptr && !parse()) break;
      continue;
    }
    auto [ec, n] =
        co_await transport_->read_some(asio::buffer(in_.data() + in_end_, in_.size() - in_end_));
    if (closed_) break;
    if (ec) {
      end_all(ec);
      close_now();
      break;
    }
    in_end_ += n;
    if (!parse()) break;
  }
}

bool MuxConnection::parse() {
  std::size_t pos = 0;
  bool go_on = true;
  while (go_on) {
    if (chunk_left_ > 0) {
      const std::size_t take = std::min<std::size_t>(chunk_left_, in_end_ - pos);
      if (take == 0) break;
      if (chunk_lane_) deliver(*chunk_lane_, in_.data() + pos, take);
      pos += take;
      chunk_left_ -= static_cast<std::uint32_t>(take);
      if (chunk_left_ == 0 && chunk_fin_ && chunk_lane_) end_input(*chunk_lane_);
      if (chunk_left_ == 0) chunk_lane_.reset();
      if (paused_for_ != nullptr) break;
      continue;
    }
    if (in_end_ - pos < wire::kHeaderSize) break;
    const auto header = wire::read_header(in_.data() + pos);
    const auto type = static_cast<std::uint8_t>(header.type);
    if (!welcomed_) {
      if (type != wire::kMuxFrameType) {
        fail(Status::protocol_error, "a shared connection starts with MUX");
        return false;
      }
      if (header.stream != 0 || header.length != wire::kMuxHelloSize) {
        fail(Status::protocol_error, "malformed MUX: stream " + std::to_string(header.stream) +
                                         ", length " + std::to_string(header.length) +
                                         " (0 and 24 expected)");
        return false;
      }
      if (in_end_ - pos < wire::kHeaderSize + header.length) break;
      go_on = handle_mux(std::span(in_.data() + pos + wire::kHeaderSize, header.length));
      pos += wire::kHeaderSize + header.length;
      continue;
    }
    if (type == static_cast<std::uint8_t>(wire::FrameType::error) && header.stream == 0) {
      // The client reports an error and closes: its lanes end with the connection.
      end_all(asio::error::connection_reset);
      close_now();
      return false;
    }
    if (type != wire::kLaneFrameType) {
      fail(Status::protocol_error, "only LANE frames follow MUX on a shared connection");
      return false;
    }
    if (header.stream == 0 || header.length > wire::kMaxLaneChunk ||
        (header.flags & ~wire::kLaneFin) != 0) {
      fail(Status::protocol_error,
           header.stream == 0 ? "LANE on lane 0" : "malformed LANE (length or flags)");
      return false;
    }
    pos += wire::kHeaderSize;
    chunk_left_ = header.length;
    chunk_fin_ = (header.flags & wire::kLaneFin) != 0;
    if (header.stream > last_lane_) {
      last_lane_ = header.stream;
      open_lane(header.stream);
    }
    const auto it = lanes_.find(header.stream);
    chunk_lane_ = it == lanes_.end() ? nullptr : it->second;
    if (chunk_left_ == 0) {
      if (chunk_fin_ && chunk_lane_) end_input(*chunk_lane_);
      chunk_lane_.reset();
    }
    if (paused_for_ != nullptr) break;
  }
  if (closed_) return false;
  // What is left is part of a header (or of the MUX frame): move it to the front.
  if (pos > 0) {
    std::memmove(in_.data(), in_.data() + pos, in_end_ - pos);
    in_end_ -= pos;
  }
  return go_on;
}

bool MuxConnection::handle_mux(std::span<const std::uint8_t> payload) {
  wire::MuxHello hello;
  if (const auto error = wire::parse_mux_hello(payload, hello); error != wire::DecodeError::none) {
    fail(Status::protocol_error,
         error == wire::DecodeError::unsupported_version
             ? "unsupported shared-connection version " + std::to_string(hello.version) +
                   " (this relay speaks 4 and 5)"
             : "malformed MUX: " + std::string(wire::decode_error_name(error)));
    return false;
  }
  welcomed_ = true;
  // Answered in the client's version; a version-4 client is told no shards.
  wire::append_mux_welcome(out_, wire::MuxWelcome{hello.version, placement_shards_,
                                                  context_.limits.max_lanes_per_connection});
  schedule_flush();
  return true;
}

void MuxConnection::open_lane(std::uint32_t id) {
  if (draining_) return refuse_lane(id, Status::refused, "relay draining");
  if (lanes_.size() >= context_.limits.max_lanes_per_connection) {
    return refuse_lane(id, Status::resource_exhausted,
                       "shared connection at its lane limit (" +
                           std::to_string(context_.limits.max_lanes_per_connection) + ")");
  }
  if (at_limit_ && at_limit_()) {
    context_.counters.native.connections_refused.fetch_add(1, std::memory_order_relaxed);
    return refuse_lane(id, Status::resource_exhausted, "relay at its connection limit");
  }
  auto lane = std::make_shared<Lane>(id);
  lanes_.emplace(id, lane);
  start_lane_(std::make_unique<LaneTransport>(shared_from_this(), lane, executor_));
}

// The lane's handshake reads the refusal as it would on a connection of its own.
void MuxConnection::refuse_lane(std::uint32_t id, Status status, std::string message) {
  std::vector<std::uint8_t> refusal;
  wire::append_error(refusal, wire::Error{status, std::move(message)});
  const auto at = out_.size();
  out_.resize(at + wire::kHeaderSize);
  wire::encode_lane_header(id, static_cast<std::uint32_t>(refusal.size()), true, out_.data() + at);
  out_.insert(out_.end(), refusal.begin(), refusal.end());
  schedule_flush();
}

void MuxConnection::deliver(Lane& lane, const std::uint8_t* data, std::size_t size) {
  if (lane.closed) return;
  if (lane.reader && lane.inbound_head == lane.inbound.size()) {
    const std::size_t n = std::min(size, lane.reader_buffer.size());
    std::memcpy(lane.reader_buffer.data(), data, n);
    IoHandler handler(std::move(*lane.reader));
    lane.reader.reset();
    complete(executor_, std::move(handler), {}, n);
    data += n;
    size -= n;
  }
  if (size == 0) return;
  if (lane.inbound_head == lane.inbound.size()) {
    lane.inbound.clear();
    lane.inbound_head = 0;
  }
  lane.inbound.insert(lane.inbound.end(), data, data + size);
  if (lane.inbound.size() - lane.inbound_head > kLaneInboundLimit) paused_for_ = &lane;
}

std::size_t MuxConnection::take_inbound(Lane& lane, asio::mutable_buffer buffer) {
  const std::size_t n = std::min(buffer.size(), lane.inbound.size() - lane.inbound_head);
  std::memcpy(buffer.data(), lane.inbound.data() + lane.inbound_head, n);
  lane.inbound_head += n;
  if (lane.inbound_head == lane.inbound.size()) {
    lane.inbound.clear();
    lane.inbound_head = 0;
  }
  if (paused_for_ == &lane && lane.inbound.size() - lane.inbound_head <= kLaneInboundLimit / 2) {
    paused_for_ = nullptr;
    resume_.cancel();
  }
  return n;
}

void MuxConnection::end_input(Lane& lane) {
  lane.client_done = true;
  if (lane.reader && lane.inbound_head == lane.inbound.size()) {
    IoHandler handler(std::move(*lane.reader));
    lane.reader.reset();
    complete(executor_, std::move(handler), asio::error::eof, 0);
  }
}

void MuxConnection::end_all(error_code reason) {
  for (auto& [id, lane] : lanes_) {
    lane->failure = reason;
    if (lane->reader) {
      IoHandler handler(std::move(*lane->reader));
      lane->reader.reset();
      complete(executor_, std::move(handler), reason, 0);
    }
    if (lane->writer) {
      IoHandler handler(std::move(*lane->writer));
      lane->writer.reset();
      complete(executor_, std::move(handler), reason, 0);
    }
  }
  room_waiters_.clear();
}

void MuxConnection::fail(Status status, std::string message) {
  spdlog::info("shared connection failed remote={} status={} reason=\"{}\"", remote_,
               status_name(status), message);
  wire::append_error(out_, wire::Error{status, std::move(message)});
  end_all(asio::error::connection_aborted);
  close_after_flush_ = true;
  schedule_flush();
}

std::size_t MuxConnection::room() const noexcept {
  // Sessions bound what they queue themselves; this bounds what waits here for the socket.
  const std::size_t limit = context_.limits.stream_window;
  return out_.size() >= limit ? 0 : limit - out_.size();
}

std::size_t MuxConnection::append(Lane& lane, std::span<const asio::const_buffer> buffers,
                                  std::size_t offset) {
  if (closed_ || close_after_flush_) return 0;
  std::size_t total = 0;
  for (const auto& buffer : buffers) total += buffer.size();
  std::size_t left = std::min(total - offset, room());
  const std::size_t taken = left;
  // Skip to `offset` in the gathered buffers.
  std::size_t index = 0;
  std::size_t within = offset;
  while (index < buffers.size() && within >= buffers[index].size()) {
    within -= buffers[index].size();
    ++index;
  }
  while (left > 0) {
    const auto chunk = static_cast<std::uint32_t>(std::min<std::size_t>(left, wire::kMaxLaneChunk));
    const auto at = out_.size();
    out_.resize(at + wire::kHeaderSize + chunk);
    wire::encode_lane_header(lane.id, chunk, false, out_.data() + at);
    std::uint8_t* to = out_.data() + at + wire::kHeaderSize;
    std::size_t need = chunk;
    while (need > 0) {
      const auto& buffer = buffers[index];
      const std::size_t n = std::min(need, buffer.size() - within);
      std::memcpy(to, static_cast<const std::uint8_t*>(buffer.data()) + within, n);
      to += n;
      need -= n;
      within += n;
      if (within == buffer.size()) {
        ++index;
        within = 0;
      }
    }
    left -= chunk;
  }
  if (taken > 0) schedule_flush();
  return taken;
}

void MuxConnection::wait_for_room(Lane& lane, IoHandler handler) {
  const auto it = lanes_.find(lane.id);
  if (closed_ || lane.failure || lane.closed || it == lanes_.end()) {
    complete(executor_, std::move(handler),
             lane.failure ? lane.failure : error_code(asio::error::broken_pipe), 0);
    return;
  }
  lane.writer.emplace(std::move(handler));
  if (std::none_of(room_waiters_.begin(), room_waiters_.end(),
                   [&lane](const auto& waiter) { return waiter.get() == &lane; })) {
    room_waiters_.push_back(it->second);
  }
}

void MuxConnection::wake_room_waiters() {
  if (room_waiters_.empty() || room() == 0) return;
  auto waiters = std::move(room_waiters_);
  room_waiters_.clear();
  for (auto& lane : waiters) {
    if (!lane->writer) continue;
    IoHandler handler(std::move(*lane->writer));
    lane->writer.reset();
    complete(executor_, std::move(handler), {}, 0);
  }
}

void MuxConnection::finish_lane(Lane& lane) {
  lane.relay_done = true;
  if (closed_ || close_after_flush_) return;
  const auto at = out_.size();
  out_.resize(at + wire::kHeaderSize);
  wire::encode_lane_header(lane.id, 0, true, out_.data() + at);
  schedule_flush();
}

void MuxConnection::close_lane(Lane& lane) {
  if (!lane.relay_done) finish_lane(lane);
  lane.closed = true;
  lane.inbound.clear();
  lane.inbound.shrink_to_fit();
  lane.inbound_head = 0;
  if (paused_for_ == &lane) {
    paused_for_ = nullptr;
    resume_.cancel();
  }
  if (lane.reader) {
    IoHandler handler(std::move(*lane.reader));
    lane.reader.reset();
    complete(executor_, std::move(handler), asio::error::operation_aborted, 0);
  }
  if (lane.writer) {
    IoHandler handler(std::move(*lane.writer));
    lane.writer.reset();
    complete(executor_, std::move(handler), asio::error::operation_aborted, 0);
  }
  std::erase_if(room_waiters_, [&lane](const auto& waiter) { return waiter.get() == &lane; });
  if (chunk_lane_.get() == &lane) chunk_lane_.reset();
  lanes_.erase(lane.id);
  if (lanes_.empty()) {
    idle_since_ = Clock::now();
    if (draining_) close_after_flush_ = true;
    if (close_after_flush_) schedule_flush();
  }
}

std::string MuxConnection::lane_remote(const Lane& lane) const {
  return remote_ + " lane " + std::to_string(lane.id);
}

void MuxConnection::schedule_flush() {
  if (flush_posted_ || write_in_flight_ || closed_) return;
  flush_posted_ = true;
  // Posted, so every lane that writes in this turn of the event loop joins the one write.
  asio::post(executor_, [self = shared_from_this()] { self->flush(); });
}

void MuxConnection::flush() {
  flush_posted_ = false;
  if (write_in_flight_ || closed_) return;
  if (out_.empty()) {
    if (close_after_flush_) close_now();
    return;
  }
  error_code ec;
  const std::array<asio::const_buffer, 1> pieces{asio::buffer(out_)};
  const std::size_t sent = transport_->try_write(pieces, ec);
  if (ec && ec != asio::error::would_block) {
    end_all(ec);
    close_now();
    return;
  }
  if (sent == out_.size()) {
    out_.clear();
    wake_room_waiters();
    if (close_after_flush_) close_now();
    return;
  }
  writing_.swap(out_);
  out_.clear();
  write_in_flight_ = true;
  write_started_ = Clock::now();
  asio::co_spawn(
      executor_, [self = shared_from_this(), sent] { return self->write_rest(sent); },
      asio::detached);
  wake_room_waiters();
}

asio::awaitable<void> MuxConnection::write_rest(std::size_t offset) {
  const std::array<asio::const_buffer, 1> pieces{asio::buffer(writing_) + offset};
  auto [ec, n] = co_await transport_->write(pieces);
  write_in_flight_ = false;
  writing_.clear();
  if (closed_) co_return;
  if (ec) {
    end_all(ec);
    close_now();
    co_return;
  }
  wake_room_waiters();
  if (!out_.empty() || close_after_flush_) schedule_flush();
}

void MuxConnection::arm_watchdog() {
  const auto tick = std::max<Clock::duration>(
      std::chrono::milliseconds(5), std::min<Clock::duration>(context_.limits.keepalive_interval,
                                                              context_.limits.handshake_timeout) /
                                        4);
  watchdog_.expires_after(tick);
  watchdog_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec) self->on_watchdog();
  });
}

// A shared connection that never says MUX, that keeps no lane open, or whose socket does not
// take a write, holds a connection slot for nothing: each is closed after its limit.
void MuxConnection::on_watchdog() {
  if (closed_) return;
  const auto now = Clock::now();
  const auto& limits = context_.limits;
  if (!welcomed_ && now - accepted_at_ > limits.handshake_timeout) {
    context_.counters.native.count_handshake_failure(HandshakeFailure::timeout);
    fail(Status::protocol_error, "handshake timeout");
  } else if (write_in_flight_ && now - write_started_ > limits.write_timeout) {
    spdlog::info("shared connection closed remote={} reason=\"write timeout\"", remote_);
    end_all(asio::error::timed_out);
    close_now();
    return;
  } else if (welcomed_ && lanes_.empty() && now - idle_since_ > 2 * limits.keepalive_interval) {
    close_after_flush_ = true;
    schedule_flush();
  }
  if (close_after_flush_ && now - idle_since_ > limits.write_timeout) {
    close_now();
    return;
  }
  arm_watchdog();
}

void MuxConnection::close_now() {
  if (closed_) return;
  closed_ = true;
  if (!lanes_.empty()) end_all(asio::error::connection_aborted);
  watchdog_.cancel();
  resume_.cancel();
  transport_->close();
  spdlog::debug("shared connection closed remote={}", remote_);
}

}  // namespace switchboard::core::net
