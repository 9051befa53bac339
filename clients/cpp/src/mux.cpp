// Shared connections: lanes, the TCP or TLS connection that carries them, and the group choosing
// it.
#include "mux.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <tuple>

#include "switchboard/wire/codec.hpp"

namespace switchboard::client {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
// One read of the shared connection takes many lanes' bytes at once.
constexpr std::size_t kReadSize = 256 * 1024;
// A shared connection we closed waits this long for the relay to close its side.
constexpr auto kLinger = std::chrono::seconds(2);
// ERROR's payload: status, message length, message.
constexpr std::size_t kMaxErrorPayload = 4 + wire::kMaxMessageSize;
// A lane's emptied inbound buffer is kept up to this capacity; a larger one (a burst the
// Connection was slow to take) is freed, so that thousands of lanes do not each hold one.
constexpr std::size_t kKeptInbound = 256 * 1024;
}  // namespace

std::shared_ptr<ConnectionSharing> share_connections(asio::any_io_executor executor) {
  return std::make_shared<ConnectionSharing>(std::move(executor));
}

namespace detail {

bool SharedAddress::operator<(const SharedAddress& other) const noexcept {
  if (std::tie(host, port, tls.enabled) != std::tie(other.host, other.port, other.tls.enabled)) {
    return std::tie(host, port, tls.enabled) < std::tie(other.host, other.port, other.tls.enabled);
  }
  if (!tls.enabled) return false;  // plain TCP: the TLS fields mean nothing
  return std::tie(tls.ca_file, tls.cert_file, tls.key_file, tls.server_name) <
         std::tie(other.tls.ca_file, other.tls.cert_file, other.tls.key_file,
                  other.tls.server_name);
}

// ---- Lane ----

Lane::Lane(const asio::any_io_executor& executor)
    : signal_(executor, asio::steady_timer::time_point::max()) {}

Lane::~Lane() {
  // Only a teardown drops a lane without close(): its executor may be going away as well, so
  // nothing is written.
  if (auto shared = std::move(shared_)) shared->release(*this, true);
}

asio::awaitable<void> Lane::wait() {
  waiting_ = true;
  woken_ = false;
  co_await signal_.async_wait(kUseTuple);
  waiting_ = false;
}

void Lane::wake() {
  // A cancel takes the reactor's lock and queues a completion: once per wait.
  if (!waiting_ || woken_) return;
  woken_ = true;
  signal_.cancel();
}

asio::awaitable<Lane::IoResult> Lane::read_some(asio::mutable_buffer buffer) {
  for (;;) {
    if (inbound_head_ < inbound_.size()) co_return IoResult{error_code{}, take(buffer)};
    if (closed_) co_return IoResult{asio::error::operation_aborted, 0};
    if (failed_) co_return IoResult{asio::error::connection_aborted, 0};
    if (relay_done_) co_return IoResult{asio::error::eof, 0};
    if (buffer.size() == 0) co_return IoResult{error_code{}, 0};
    // The shared connection's reader fills the buffer itself, with every chunk for this lane
    // that it reads before this coroutine runs again.
    reader_ = buffer;
    filled_ = 0;
    reading_ = true;
    co_await wait();
    reading_ = false;
    if (filled_ > 0) co_return IoResult{error_code{}, filled_};
  }
}

std::size_t Lane::take(asio::mutable_buffer buffer) {
  const std::size_t n = std::min(buffer.size(), inbound_.size() - inbound_head_);
  std::memcpy(buffer.data(), inbound_.data() + inbound_head_, n);
  inbound_head_ += n;
  if (inbound_head_ == inbound_.size()) {
    inbound_head_ = 0;
    if (inbound_.capacity() > kKeptInbound) {
      inbound_ = {};
    } else {
      inbound_.clear();
    }
  }
  return n;
}

void Lane::deliver(const std::uint8_t* data, std::size_t size) {
  // After our close the relay's bytes have nobody to go to; after its FIN it sends none.
  if (closed_ || relay_done_ || failed_) return;
  if (reading_ && inbound_head_ == inbound_.size()) {
    const std::size_t n = std::min(size, reader_.size() - filled_);
    if (n > 0) {
      std::memcpy(static_cast<std::uint8_t*>(reader_.data()) + filled_, data, n);
      filled_ += n;
      data += n;
      size -= n;
      wake();
    }
    if (size == 0) return;
  }
  if (inbound_head_ > 0 && inbound_head_ >= inbound_.size() / 2) {
    inbound_.erase(inbound_.begin(), inbound_.begin() + static_cast<std::ptrdiff_t>(inbound_head_));
    inbound_head_ = 0;
  }
  inbound_.insert(inbound_.end(), data, data + size);
}

void Lane::end_input() {
  relay_done_ = true;
  wake();
}

void Lane::fail(const std::string& text) {
  if (closed_ || failed_) return;
  failed_ = true;
  failure_ = text;
  wake();
}

asio::awaitable<Lane::IoResult> Lane::write_all(asio::const_buffer buffer) {
  const auto* data = static_cast<const std::uint8_t*>(buffer.data());
  std::size_t done = 0;
  while (done < buffer.size()) {
    if (closed_) co_return IoResult{asio::error::operation_aborted, done};
    if (failed_ || !shared_) co_return IoResult{asio::error::connection_aborted, done};
    const std::size_t n = std::min(shared_->room(), buffer.size() - done);
    if (n == 0) {
      // Held here: a close() during the wait lets go of the lane's reference.
      const auto shared = shared_;
      awaiting_room_ = true;
      co_await shared->wait_for_room();
      awaiting_room_ = false;
      continue;
    }
    shared_->append(*this, data + done, n);
    done += n;
  }
  co_return IoResult{error_code{}, done};
}

std::size_t Lane::try_send(asio::const_buffer buffer, error_code& ec) {
  if (closed_) {
    ec = asio::error::operation_aborted;
    return 0;
  }
  if (failed_ || !shared_) {
    ec = asio::error::connection_aborted;
    return 0;
  }
  const std::size_t n = std::min(shared_->room(), buffer.size());
  if (n > 0) shared_->append(*this, static_cast<const std::uint8_t*>(buffer.data()), n);
  return n;
}

void Lane::close() {
  if (closed_) return;
  closed_ = true;
  wake();
  if (auto shared = std::move(shared_)) shared->release(*this, false);
}

std::string Lane::failure_text() const {
  if (failed_) return failure_;
  return closed_ ? "connection closed" : "relay closed the connection";
}

// ---- SharedLink ----

SharedLink::SharedLink(const asio::any_io_executor& executor,
                       std::weak_ptr<ConnectionSharing> group, Address address,
                       const Uuid& placement, std::optional<std::uint32_t> shard,
                       std::chrono::milliseconds timeout)
    : executor_(executor),
      group_(std::move(group)),
      address_(std::move(address)),
      placement_(placement),
      shard_(shard),
      socket_(executor),
      deadline_(executor),
      timeout_(timeout),
      wake_(executor, asio::steady_timer::time_point::max()),
      room_(executor, asio::steady_timer::time_point::max()) {}

void SharedLink::start() {
  // Lanes waiting for the answer each give up at their own connect timeout; this bound makes
  // a relay that never answers fail the connection, so that later lanes do not wait on it.
  deadline_.expires_after(timeout_);
  deadline_.async_wait([weak = weak_from_this()](error_code ec) {
    const auto self = weak.lock();
    if (ec || !self || !self->pending()) return;
    self->fail_handshake(Outcome{Status::deadline_exceeded, 0, "connect timed out"}, false);
  });
  asio::co_spawn(
      executor_, [self = shared_from_this()] { return self->run(); }, asio::detached);
}

asio::awaitable<void> SharedLink::run() {
  const auto self = shared_from_this();
  const std::string& host = address_.host;
  const std::uint16_t port = address_.port;
  error_code connect_error;
  error_code not_literal;
  const auto literal = asio::ip::make_address(host, not_literal);
  if (!not_literal) {
    std::tie(connect_error) =
        co_await socket_.async_connect(tcp::endpoint(literal, port), kUseTuple);
  } else {
    auto& resolver = resolver_.emplace(executor_);
    auto [resolve_error, endpoints] =
        co_await resolver.async_resolve(host, std::to_string(port), kUseTuple);
    resolver_.reset();
    if (state_ != State::connecting) co_return;
    if (resolve_error) {
      Outcome failure{Status::peer_gone, 0,
                      "cannot resolve " + host + ": " + resolve_error.message()};
      failure.unreachable = true;
      fail_handshake(std::move(failure), false);
      co_return;
    }
    std::tie(connect_error, std::ignore) =
        co_await asio::async_connect(socket_, endpoints, kUseTuple);
  }
  if (state_ != State::connecting) co_return;
  if (connect_error) {
    Outcome failure{
        Status::peer_gone, 0,
        "cannot connect to " + host + ":" + std::to_string(port) + ": " + connect_error.message()};
    failure.unreachable = true;
    fail_handshake(std::move(failure), false);
    co_return;
  }
  error_code ignored;
  socket_.set_option(tcp::no_delay(true), ignored);
  if (address_.tls.enabled) {
    auto outcome = co_await start_client_tls(socket_, address_.tls, host, port, tls_context_, tls_);
    if (state_ != State::connecting) co_return;
    if (!outcome.ok()) {
      fail_handshake(std::move(outcome), false);
      co_return;
    }
  }
  wire::MuxHello hello;
  hello.placement = placement_;
  wire::append_mux_hello(outbuf_, hello);
  state_ = State::awaiting;
  asio::co_spawn(
      executor_, [self] { return self->write_loop(); }, asio::detached);

  inbuf_.resize(kReadSize);
  for (;;) {
    auto [ec, n] = tls_ ? co_await tls_->async_read_some(asio::buffer(inbuf_), kUseTuple)
                        : co_await socket_.async_read_some(asio::buffer(inbuf_), kUseTuple);
    if (state_ == State::failed || state_ == State::closed) co_return;
    if (ec) {
      if (state_ == State::closing) {
        state_ = State::closed;
        close_socket();
      } else if (pending() && tls_ && ec != asio::error::eof &&
                 ec.category() == asio::error::get_ssl_category()) {
        // The relay's refusal of our certificate arrives here, as an alert, as it does on a
        // connection of a Connection's own.
        fail_handshake(Outcome{Status::unauthenticated, 0,
                               "relay ended the TLS session during handshake: " + ec.message()},
                       false);
      } else if (pending()) {
        fail_handshake(Outcome{Status::peer_gone, 0, "relay closed during handshake"}, false);
      } else {
        fail_lanes(ec == asio::error::eof ? "relay closed the shared connection"
                                          : "shared connection: " + ec.message());
      }
      co_return;
    }
    if (!parse(inbuf_.data(), n)) co_return;
  }
}

asio::awaitable<void> SharedLink::write_loop() {
  const auto self = shared_from_this();
  for (;;) {
    if (state_ == State::failed || state_ == State::closed) co_return;
    if (outbuf_.empty()) {
      if (state_ == State::closing) {
        // Everything, FINs included, has gone: the relay ends its side once it reads our end
        // (over TLS too: the TCP end, since a close_notify's reply would race the reader).
        error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_send, ignored);
        deadline_.expires_after(kLinger);
        deadline_.async_wait([weak = weak_from_this()](error_code ec) {
          const auto late = weak.lock();
          if (ec || !late || late->state_ != State::closing) return;
          late->state_ = State::closed;
          late->close_socket();
        });
        co_return;
      }
      writer_parked_ = true;
      co_await wake_.async_wait(kUseTuple);
      writer_parked_ = false;
      continue;
    }
    // Everything every lane queued since the last write leaves in one send.
    writing_.clear();
    writing_.swap(outbuf_);
    last_frame_at_ = kNoFrame;
    error_code ec;
    std::size_t sent = 0;
    if (tls_) {
      std::tie(ec, std::ignore) =
          co_await asio::async_write(*tls_, asio::buffer(writing_), kUseTuple);
    } else {
      // A direct send first: it spares the event loop pass an asynchronous write costs.
      const auto n = ::send(socket_.native_handle(), writing_.data(), writing_.size(),
                            MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0) {
        sent = static_cast<std::size_t>(n);
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        ec.assign(errno, asio::error::get_system_category());
      }
      if (!ec && sent < writing_.size()) {
        auto [write_error, written] =
            co_await asio::async_write(socket_, asio::buffer(writing_) + sent, kUseTuple);
        ec = write_error;
      }
    }
    if (state_ == State::failed || state_ == State::closed) co_return;
    if (ec) {
      if (pending()) {
        fail_handshake(Outcome{Status::peer_gone, 0, "relay closed during handshake"}, false);
      } else {
        fail_lanes("shared connection write failed: " + ec.message());
      }
      co_return;
    }
    if (room_waiters_ > 0) room_.cancel();
  }
}

void SharedLink::kick() {
  // The writer runs in a later turn of the event loop: what other lanes queue meanwhile goes
  // with it.
  if (!writer_parked_) return;
  writer_parked_ = false;
  wake_.cancel();
}

asio::awaitable<void> SharedLink::wait_answer(Lane& lane) {
  const auto self = shared_from_this();
  {
    // Leaves the list however the wait ends, also when its coroutine is destroyed.
    struct Waiting {
      std::vector<Lane*>& waiters;
      Lane* lane;
      ~Waiting() { std::erase(waiters, lane); }
    } waiting{waiters_, &lane};
    waiters_.push_back(&lane);
    co_await lane.wait();
  }
  if (lane.closed()) maybe_close_idle();
}

void SharedLink::attach(Lane& lane) {
  lane.shared_ = shared_from_this();
  members_.insert(&lane);
  ++in_use_;
}

asio::awaitable<void> SharedLink::wait_for_room() {
  const auto self = shared_from_this();
  ++room_waiters_;
  co_await room_.async_wait(kUseTuple);
  --room_waiters_;
}

void SharedLink::append(Lane& lane, const std::uint8_t* data, std::size_t size) {
  if (lane.id_ == 0) {
    // The id is taken with the lane's first bytes, so that ids go out in increasing order
    // whatever the order in which attached lanes first write.
    lane.id_ = ++last_lane_;
    lanes_.emplace(lane.id_, &lane);
  }
  append_frames(lane.id_, data, size);
  kick();
}

void SharedLink::append_frames(std::uint32_t lane, const std::uint8_t* data, std::size_t size) {
  // A lane that writes again before the writer has taken its last frame extends that frame:
  // a Connection queues frame by frame, and each would otherwise cost a LANE header.
  if (last_frame_at_ != kNoFrame && last_frame_lane_ == lane) {
    const std::size_t have = outbuf_.size() - last_frame_at_ - wire::kHeaderSize;
    const std::size_t more = std::min<std::size_t>(size, wire::kMaxLaneChunk - have);
    if (more > 0) {
      outbuf_.insert(outbuf_.end(), data, data + more);
      wire::encode_lane_header(lane, static_cast<std::uint32_t>(have + more), false,
                               outbuf_.data() + last_frame_at_);
      data += more;
      size -= more;
    }
  }
  while (size > 0) {
    const std::size_t chunk = std::min<std::size_t>(size, wire::kMaxLaneChunk);
    last_frame_at_ = outbuf_.size();
    last_frame_lane_ = lane;
    std::uint8_t header[wire::kHeaderSize];
    wire::encode_lane_header(lane, static_cast<std::uint32_t>(chunk), false, header);
    outbuf_.insert(outbuf_.end(), header, header + wire::kHeaderSize);
    outbuf_.insert(outbuf_.end(), data, data + chunk);
    data += chunk;
    size -= chunk;
  }
}

void SharedLink::append_fin(std::uint32_t lane) {
  if (last_frame_at_ != kNoFrame && last_frame_lane_ == lane) {
    const std::size_t have = outbuf_.size() - last_frame_at_ - wire::kHeaderSize;
    wire::encode_lane_header(lane, static_cast<std::uint32_t>(have), true,
                             outbuf_.data() + last_frame_at_);
  } else {
    std::uint8_t header[wire::kHeaderSize];
    wire::encode_lane_header(lane, 0, true, header);
    outbuf_.insert(outbuf_.end(), header, header + wire::kHeaderSize);
  }
  last_frame_at_ = kNoFrame;  // nothing may follow a FIN
  kick();
}

void SharedLink::release(Lane& lane, bool quietly) {
  members_.erase(&lane);
  if (state_ == State::failed || state_ == State::closed) return;
  if (lane.id_ == 0) {
    --in_use_;  // never on the wire: nothing to end
  } else if (quietly) {
    lanes_[lane.id_] = nullptr;
  } else {
    append_fin(lane.id_);
    // Gone once both sides sent FIN; until the relay's arrives it still counts toward
    // max_lanes, and bytes for it are dropped.
    if (lane.relay_done_) {
      lanes_.erase(lane.id_);
      --in_use_;
    } else {
      lanes_[lane.id_] = nullptr;
    }
  }
  if (quietly) return;
  if (lane.awaiting_room_ && room_waiters_ > 0) room_.cancel();
  maybe_close_idle();
}

bool SharedLink::parse(const std::uint8_t* data, std::size_t size) {
  while (size > 0) {
    if (payload_left_ > 0) {
      const std::size_t n = std::min(payload_left_, size);
      if (in_control_) {
        control_.insert(control_.end(), data, data + n);
      } else if (const auto it = lanes_.find(frame_.stream); it != lanes_.end() && it->second) {
        it->second->deliver(data, n);
      }
      data += n;
      size -= n;
      payload_left_ -= n;
      if (payload_left_ == 0 && !end_frame()) return false;
      continue;
    }
    const std::size_t n = std::min(wire::kHeaderSize - header_have_, size);
    std::memcpy(header_ + header_have_, data, n);
    header_have_ += n;
    data += n;
    size -= n;
    if (header_have_ < wire::kHeaderSize) break;
    header_have_ = 0;
    frame_ = wire::read_header(header_);
    if (!begin_frame()) return false;
    if (payload_left_ == 0 && !end_frame()) return false;
  }
  return true;
}

bool SharedLink::begin_frame() {
  const auto type = static_cast<std::uint8_t>(frame_.type);
  if (type == wire::kLaneFrameType && state_ != State::awaiting) {
    if (frame_.stream == 0 || frame_.length > wire::kMaxLaneChunk ||
        (frame_.flags & ~wire::kLaneFin) != 0) {
      fail_lanes("malformed LANE frame from the relay");
      return false;
    }
    if (frame_.stream > last_lane_) {
      fail_lanes("LANE frame from the relay for a lane never opened");
      return false;
    }
    payload_left_ = frame_.length;
    return true;
  }
  const bool mux = type == wire::kMuxFrameType && state_ == State::awaiting;
  const bool error = type == static_cast<std::uint8_t>(wire::FrameType::error);
  if ((mux || error) && frame_.stream == 0 &&
      frame_.length <= (mux ? wire::kMuxWelcomeSize : kMaxErrorPayload)) {
    in_control_ = true;
    control_.clear();
    payload_left_ = frame_.length;
    return true;
  }
  if (pending()) {
    fail_handshake(Outcome{Status::protocol_error, 0, "relay answered MUX with something else"},
                   true);
  } else {
    fail_lanes("unexpected frame (type " + std::to_string(type) +
               ") from the relay on the shared connection");
  }
  return false;
}

bool SharedLink::end_frame() {
  if (in_control_) {
    in_control_ = false;
    return control_frame();
  }
  if ((frame_.flags & wire::kLaneFin) != 0) {
    if (const auto it = lanes_.find(frame_.stream); it != lanes_.end()) {
      if (it->second != nullptr) {
        it->second->end_input();
      } else {
        lanes_.erase(it);  // we had sent our FIN: the lane is gone
        --in_use_;
      }
    }
  }
  return true;
}

bool SharedLink::control_frame() {
  const wire::Bytes payload(control_.data(), control_.size());
  if (static_cast<std::uint8_t>(frame_.type) == wire::kMuxFrameType) {
    wire::MuxWelcome welcome;
    if (wire::parse_mux_welcome(payload, welcome) != wire::DecodeError::none) {
      fail_handshake(Outcome{Status::protocol_error, 0, "malformed MUX answer"}, true);
      return false;
    }
    answered(welcome);
    return true;
  }
  wire::Error error;
  const bool parsed = wire::parse_error(payload, error) == wire::DecodeError::none;
  if (pending()) {
    // A relay that predates shared connections refuses MUX as it refuses any frame it does not
    // know: PROTOCOL_ERROR. Anything else (its connect throttle, a drain) is what a connection
    // of its own would have met too.
    if (!parsed || error.status == Status::protocol_error) {
      fail_handshake(Outcome{Status::protocol_error, 0, error.message}, true);
    } else {
      fail_handshake(Outcome{error.status, 0, error.message}, false);
    }
    return false;
  }
  fail_lanes("relay ended the shared connection: " +
             (parsed ? std::string(status_name(error.status)) + ": " + error.message
                     : std::string("malformed ERROR")));
  return false;
}

void SharedLink::answered(const wire::MuxWelcome& welcome) {
  state_ = State::ready;
  max_lanes_ = welcome.max_lanes;
  // A relay of version 4 tells no shards: one shared connection serves every channel.
  const std::uint32_t shards = std::max<std::uint32_t>(welcome.shards, 1);
  shard_ = wire::placement_shard(placement_, shards);
  deadline_.cancel();
  if (const auto group = group_.lock()) {
    group->shares_.insert(address_);
    group->shard_counts_[address_] = shards;
  }
  wake_waiters();
}

void SharedLink::fail_handshake(Outcome outcome, bool not_shared) {
  if (state_ == State::failed || state_ == State::closed) return;
  const auto self = shared_from_this();
  state_ = State::failed;
  failure_ = std::move(outcome);
  not_shared_ = not_shared;
  if (not_shared) {
    if (const auto group = group_.lock()) group->does_not_share_.insert(address_);
  }
  forget();
  close_socket();
  wake_waiters();
}

void SharedLink::fail_lanes(const std::string& text) {
  if (state_ == State::failed || state_ == State::closed) return;
  const auto self = shared_from_this();
  state_ = State::failed;
  failure_ = Outcome{Status::peer_gone, 0, text};
  forget();
  close_socket();
  // Each lane's Connection reads the end as the loss of its link.
  const auto members = std::move(members_);
  members_.clear();
  lanes_.clear();
  in_use_ = 0;
  for (Lane* lane : members) lane->fail(text);
  wake_waiters();
}

void SharedLink::maybe_close_idle() {
  if (!members_.empty() || !waiters_.empty()) return;
  if (pending()) {
    // Every lane that waited for it gave up: nobody needs it any more.
    fail_handshake(Outcome{Status::cancelled, 0, "no lane waits for it"}, false);
    return;
  }
  if (state_ != State::ready) return;
  state_ = State::closing;
  forget();
  kick();
}

void SharedLink::wake_waiters() {
  for (Lane* lane : waiters_) lane->wake();
}

void SharedLink::forget() {
  const auto group = group_.lock();
  if (!group) return;
  const auto it = group->links_.find(address_);
  if (it == group->links_.end()) return;
  std::erase_if(it->second, [this](const auto& link) { return link.get() == this; });
  if (it->second.empty()) group->links_.erase(it);
}

void SharedLink::close_socket() {
  if (resolver_) resolver_->cancel();
  deadline_.cancel();
  error_code ignored;
  socket_.close(ignored);
  if (writer_parked_) {
    writer_parked_ = false;
    wake_.cancel();
  }
  if (room_waiters_ > 0) room_.cancel();
}

}  // namespace detail

// ---- ConnectionSharing ----

asio::awaitable<ConnectionSharing::Attached> ConnectionSharing::attach(
    detail::Lane& lane, const std::string& host, std::uint16_t port, const TlsOptions& tls,
    const Uuid& placement, std::chrono::milliseconds timeout, Outcome& failure) {
  const auto self = shared_from_this();
  const Address address{host, port, tls};
  for (;;) {
    if (lane.closed()) {
      failure = Outcome{Status::cancelled, 0, "connection closed"};
      co_return Attached::failed;
    }
    if (does_not_share_.contains(address)) co_return Attached::not_shared;
    // A lane goes on a shared connection that runs on its channel's relay thread, so that a
    // request and its answer, from programs that share connections, stay on one thread. Until
    // the relay's first answer tells its thread count, every lane waits for that answer.
    std::optional<std::uint32_t> shard;
    if (const auto known = shard_counts_.find(address); known != shard_counts_.end()) {
      shard = wire::placement_shard(placement, known->second);
    }
    std::shared_ptr<detail::SharedLink> link;
    auto& links = links_[address];
    for (const auto& candidate : links) {
      if (!candidate->has_room()) continue;
      if (shard && candidate->shard() && *candidate->shard() != *shard) continue;
      link = candidate;
      break;
    }
    if (!link) {
      // None yet for its thread, or every one is full: another shared connection, placed by
      // this lane's channel.
      link = std::make_shared<detail::SharedLink>(executor_, weak_from_this(), address, placement,
                                                  shard, timeout);
      links.push_back(link);
      link->start();
    }
    if (link->ready()) {
      link->attach(lane);
      co_return Attached::yes;
    }
    co_await link->wait_answer(lane);
    if (lane.closed() || !link->failed()) continue;
    if (link->not_shared()) co_return Attached::not_shared;
    failure = link->failure();
    co_return Attached::failed;
  }
}

ConnectionSharing::Known ConnectionSharing::known(const std::string& host, std::uint16_t port,
                                                  const TlsOptions& tls) const {
  const Address address{host, port, tls};
  if (does_not_share_.contains(address)) return Known::does_not_share;
  if (shares_.contains(address)) return Known::shares;
  return Known::unknown;
}

}  // namespace switchboard::client
