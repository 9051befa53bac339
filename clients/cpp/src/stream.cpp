// Client stream: credit-paced writes, chunked reads with credit grants, and the final outcome.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "connection_private.hpp"

namespace switchboard::client {

namespace asio = boost::asio;
using detail::ConnectionImpl;
using detail::impl_of;
using detail::StreamImpl;
namespace {
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

std::unique_ptr<asio::steady_timer> make_signal(const asio::any_io_executor& executor) {
  return std::make_unique<asio::steady_timer>(executor, asio::steady_timer::time_point::max());
}
}  // namespace

// The public handle: every call goes to the state allocated with it.

const Uuid& Stream::peer() const noexcept { return impl_of(*this).peer_; }
Stream::Kind Stream::kind() const noexcept { return impl_of(*this).kind_; }
const wire::Metadata& Stream::metadata() const noexcept { return impl_of(*this).metadata_; }
std::chrono::milliseconds Stream::deadline() const noexcept { return impl_of(*this).deadline_; }
bool Stream::ended() const noexcept { return impl_of(*this).terminal_; }
asio::awaitable<Outcome> Stream::write(std::span<const std::uint8_t> bytes, bool last) {
  return impl_of(*this).write(bytes, last);
}
bool Stream::try_write(std::span<const std::uint8_t> bytes, bool last) {
  return impl_of(*this).try_write(bytes, last);
}
asio::awaitable<Outcome> Stream::finish() { return impl_of(*this).finish(); }
asio::awaitable<Outcome> Stream::fail(Status status, std::uint32_t app_code, std::string message) {
  return impl_of(*this).fail(status, app_code, std::move(message));
}
asio::awaitable<wire::Slice> Stream::read() { return impl_of(*this).read(); }
std::optional<wire::Slice> Stream::try_read() { return impl_of(*this).try_read(); }
asio::awaitable<Outcome> Stream::result() { return impl_of(*this).result(); }
void Stream::on_end(std::function<void(const Outcome&)> handler) {
  impl_of(*this).on_end(std::move(handler));
}
void Stream::reset(Status status, std::string message) {
  impl_of(*this).reset(status, std::move(message));
}

// The stream's state.

StreamImpl::StreamImpl(std::shared_ptr<Connection> owner, ConnectionImpl& connection, Kind kind,
                       std::uint32_t id)
    : owner_(std::move(owner)), connection_(&connection), kind_(kind), id_(id) {}

asio::awaitable<void> StreamImpl::wait_on(std::unique_ptr<asio::steady_timer>& signal) {
  // Signals never expire; cancel() wakes every waiter, which then re-checks its condition.
  // They are made on the first wait: most short streams never wait on some of them, and a
  // cancel costs a lock in the reactor.
  if (!signal) signal = make_signal(connection_->executor_);
  co_await signal->async_wait(kUseTuple);
}

void StreamImpl::notify(std::unique_ptr<asio::steady_timer>& signal) {
  if (signal) signal->cancel();
}
void StreamImpl::notify_readers() { notify(read_signal_); }
void StreamImpl::notify_writers() { notify(write_signal_); }

void StreamImpl::push(wire::Slice chunk, bool fin) {
  if (terminal_) return;
  if (recv_allowed_ < 0) {
    reset(Status::protocol_error, "relay exceeded our flow-control window");
    return;
  }
  if (chunk.size > 0) chunks_.push_back(std::move(chunk));
  if (fin) {
    recv_done_ = true;
    // Outgoing request: FIN on the response means OK; the stream ends once we are done too.
    if (send_done_) terminate(Outcome{});
  }
  notify_readers();
}

void StreamImpl::finish_inbound(const Outcome& outcome) {
  if (terminal_) return;
  recv_done_ = true;
  outcome_ = outcome;
  if (send_done_ || kind_ == Kind::outgoing_broadcast) {
    terminate(outcome);
    return;
  }
  notify_readers();
  notify(end_signal_);
}

void StreamImpl::terminate(const Outcome& outcome) {
  if (terminal_) return;
  terminal_ = true;
  recv_done_ = true;
  send_done_ = true;
  outcome_ = outcome;
  if (!connection_->closed_ && id_ != 0) connection_->forget(id_);
  notify_readers();
  notify_writers();
  notify(end_signal_);
  if (end_handler_) {
    auto handler = std::move(end_handler_);
    end_handler_ = nullptr;
    handler(outcome_);
  }
}

asio::awaitable<Outcome> StreamImpl::write(std::span<const std::uint8_t> bytes, bool last) {
  auto self = shared_from_this();
  auto& conn = *connection_;
  if (send_done_ || terminal_) {
    co_return terminal_ && !outcome_.ok()
        ? outcome_
        : Outcome{Status::protocol_error, 0, "write after the end of the stream"};
  }
  std::size_t offset = 0;
  for (;;) {
    if (!open_sent_ && !terminal_ && !conn.linked()) {
      // Not sent yet, so it may wait for the next connection (reconnect) without being a retry.
      const Outcome ready = co_await conn.wait_linked(*this);
      if (!ready.ok()) {
        terminate(ready);
        co_return outcome_;
      }
    }
    // Nothing sent yet: the credit is the current link's.
    if (!open_sent_) send_credit_ = conn.relay_window_;
    while (
        !terminal_ && !conn.closed_ && (open_sent_ || conn.linked()) &&
        ((send_credit_ <= 0 && offset < bytes.size()) || conn.outbuf().size() > kOutbufHighWater)) {
      co_await wait_on(write_signal_);
    }
    if (terminal_ || conn.closed_) co_return terminal_ ? outcome_ : conn.close_outcome_;
    if (!open_sent_ && !conn.linked()) continue;  // lost while waiting: wait for the next one
    offset += send_frame(bytes.subspan(offset),
                         static_cast<std::size_t>(std::max<std::int64_t>(send_credit_, 0)), last);
    if (offset >= bytes.size()) break;
  }
  if (send_done_ && recv_done_ && kind_ != Kind::outgoing_broadcast) terminate(outcome_);
  co_return Outcome{};
}

std::size_t StreamImpl::send_frame(std::span<const std::uint8_t> bytes, std::size_t credit,
                                   bool last) {
  auto& conn = *connection_;
  std::size_t n = std::min<std::size_t>({bytes.size(), credit, conn.relay_max_frame_});
  auto& out = conn.outbuf();
  if (!open_sent_) {
    const std::size_t prefix = wire::open_prefix_size(open_);
    n = std::min<std::size_t>(
        n, conn.relay_max_frame_ - std::min<std::size_t>(prefix, conn.relay_max_frame_));
    const bool fin = last && n == bytes.size();
    auto& link = *conn.link_;
    id_ = link.next_stream_id;
    link.next_stream_id += 2;
    conn.streams_.emplace(id_, self());
    wire::append_open(out, id_, open_, bytes.first(n), fin);
    open_sent_ = true;
    if (fin) send_done_ = true;
  } else {
    const bool fin = last && n == bytes.size();
    wire::append_data(out, id_, bytes.first(n), fin);
    if (fin) send_done_ = true;
  }
  send_credit_ -= static_cast<std::int64_t>(n);
  conn.queue_bytes();
  return n;
}

bool StreamImpl::try_write(std::span<const std::uint8_t> bytes, bool last) {
  auto& conn = *connection_;
  if (send_done_ || terminal_ || conn.closed_) return false;
  if (!open_sent_ && !conn.linked()) return false;
  if (conn.outbuf().size() > kOutbufHighWater) return false;
  const std::int64_t credit = open_sent_ ? send_credit_ : conn.relay_window_;
  std::size_t room = conn.relay_max_frame_;
  if (!open_sent_) room -= std::min<std::size_t>(wire::open_prefix_size(open_), room);
  if (static_cast<std::int64_t>(bytes.size()) > credit || bytes.size() > room) return false;
  send_credit_ = credit;
  send_frame(bytes, bytes.size(), last);
  if (send_done_ && recv_done_ && kind_ != Kind::outgoing_broadcast) terminate(outcome_);
  return true;
}

asio::awaitable<Outcome> StreamImpl::finish() { co_return co_await write({}, true); }

asio::awaitable<Outcome> StreamImpl::fail(Status status, std::uint32_t app_code,
                                          std::string message) {
  auto self = shared_from_this();
  auto& conn = *connection_;
  if (terminal_ || conn.closed_) co_return terminal_ ? outcome_ : conn.close_outcome_;
  if (send_done_) co_return Outcome{Status::protocol_error, 0, "fail after the end of the stream"};
  if (!open_sent_) {
    // An outgoing stream that never sent anything: opening it only to fail it means nothing.
    reset(status, message);
    co_return Outcome{};
  }
  wire::append_end(conn.outbuf(), id_, wire::End{status, app_code, 0, 0, std::move(message)});
  send_done_ = true;
  conn.queue_bytes();
  if (recv_done_ && kind_ != Kind::outgoing_broadcast) terminate(outcome_);
  co_return Outcome{};
}

std::optional<wire::Slice> StreamImpl::try_read() {
  if (chunk_head_ == chunks_.size()) {
    if (recv_done_ || terminal_) return wire::Slice{};
    return std::nullopt;
  }
  wire::Slice chunk = std::move(chunks_[chunk_head_++]);
  if (chunk_head_ == chunks_.size()) {
    chunks_.clear();
    chunk_head_ = 0;
  }
  connection_->grant(*this, chunk.size);
  return chunk;
}

asio::awaitable<wire::Slice> StreamImpl::read() {
  auto self = shared_from_this();
  for (;;) {
    if (auto chunk = try_read()) co_return std::move(*chunk);
    co_await wait_on(read_signal_);
  }
}

asio::awaitable<Outcome> StreamImpl::result() {
  auto self = shared_from_this();
  if (!terminal_ && id_ == 0 && connection_->closed_) co_return connection_->close_outcome_;
  while (!terminal_) {
    if (kind_ == Kind::outgoing_request && recv_done_ && !send_done_) break;
    co_await wait_on(end_signal_);
  }
  co_return outcome_;
}

void StreamImpl::on_end(std::function<void(const Outcome&)> handler) {
  if (!terminal_) {
    end_handler_ = std::move(handler);
    return;
  }
  if (handler) handler(outcome_);
}

void StreamImpl::reset(Status status, std::string message) {
  if (terminal_) return;
  auto& conn = *connection_;
  if (!conn.closed_ && open_sent_) {
    wire::append_reset(conn.outbuf(), id_, wire::Reset{status, 0, message});
    conn.queue_bytes();
  }
  terminate(Outcome{status, 0, std::move(message), 0, 0});
}

}  // namespace switchboard::client
