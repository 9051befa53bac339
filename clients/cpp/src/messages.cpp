// Whole messages: sending within the relay's message window, receiving, and the tally the
// relay's reports keep.
#include <boost/asio/use_awaitable.hpp>

#include "connection_private.hpp"
#include "switchboard/wire/codec.hpp"

namespace switchboard::client::detail {

namespace asio = boost::asio;

namespace {
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
// Messages held for a handler that is not set yet (as broadcasts are).
constexpr std::size_t kMaxPendingMessages = 64;
}  // namespace

void ConnectionImpl::on_message(std::function<void(const Message&)> handler) {
  on_message_ = std::move(handler);
  if (!on_message_) return;
  auto pending = std::move(pending_messages_);
  pending_messages_.clear();
  for (const auto& message : pending) {
    if (!on_message_) break;  // the handler may clear itself
    on_message_(message);
  }
}

std::optional<Outcome> ConnectionImpl::message_refusal(std::size_t size) const {
  if (closed_) return Outcome{Status::peer_gone, 0, "connection closed"};
  if (state_ != ConnectionState::connected || link_->dead) {
    return Outcome{Status::peer_gone, 0, "not connected (reconnecting)"};
  }
  if (size > max_message_size()) {
    return Outcome{Status::resource_exhausted, 0,
                   "message of " + std::to_string(size) + " bytes exceeds the relay's largest (" +
                       std::to_string(max_message_size()) + " bytes)"};
  }
  return std::nullopt;
}

void ConnectionImpl::write_message(wire::StreamKind kind, const Uuid& peer,
                                   std::span<const std::uint8_t> bytes) {
  message_credit_ -= static_cast<std::int64_t>(bytes.size());
  ++tally_.sent;
  wire::append_message(outbuf(), wire::MessageHead{kind, peer}, bytes);
  queue_bytes();
}

bool ConnectionImpl::try_post_message(wire::StreamKind kind, const Uuid& peer,
                                      std::span<const std::uint8_t> bytes) {
  if (message_refusal(bytes.size())) return false;
  if (static_cast<std::int64_t>(bytes.size()) > message_credit_) return false;
  write_message(kind, peer, bytes);
  return true;
}

asio::awaitable<Outcome> ConnectionImpl::post_message(wire::StreamKind kind, Uuid peer,
                                                      std::span<const std::uint8_t> bytes) {
  auto self = shared_from_this();
  if (kind == wire::StreamKind::to_peer && peer.is_nil()) {
    co_return Outcome{Status::protocol_error, 0, "a message to a peer needs the peer's id"};
  }
  for (;;) {
    if (auto refusal = message_refusal(bytes.size())) co_return *refusal;
    if (static_cast<std::int64_t>(bytes.size()) <= message_credit_) break;
    // The relay gives the window back as our messages reach their receivers.
    ++message_waiters_;
    co_await message_signal_.async_wait(kUseTuple);
    --message_waiters_;
  }
  write_message(kind, peer, bytes);
  co_return Outcome{};
}

asio::awaitable<MessageTally> ConnectionImpl::flush_messages() {
  auto self = shared_from_this();
  while (!tally_.all_settled() && !closed_) {
    ++message_waiters_;
    co_await message_signal_.async_wait(kUseTuple);
    --message_waiters_;
  }
  co_return tally_;
}

void ConnectionImpl::notify_message_waiters() {
  // A cancel takes the reactor's lock and queues completions: only when somebody waits.
  if (message_waiters_ > 0) message_signal_.cancel();
}

void ConnectionImpl::receive_message(const wire::Frame& frame) {
  wire::MessageHead head;
  wire::Bytes body;
  if (wire::parse_message(frame.payload, head, body) != wire::DecodeError::none) return;
  Message message{head.peer, head.kind == wire::StreamKind::broadcast, link_->reader.share(body)};
  if (on_message_) {
    on_message_(message);
  } else if (pending_messages_.size() < kMaxPendingMessages) {
    pending_messages_.push_back(std::move(message));
  } else {
    ++tally_.discarded;
  }
}

void ConnectionImpl::receive_message_report(const wire::Frame& frame) {
  wire::MessageReport report;
  if (wire::parse_message_report(frame.payload, report) != wire::DecodeError::none) return;
  message_credit_ += report.credit;
  tally_.settled += report.messages;
  tally_.delivered += report.delivered;
  tally_.dropped += report.dropped;
  tally_.refused += report.refused;
  tally_.lost += report.lost;
  notify_message_waiters();
}

void ConnectionImpl::messages_link_lost() {
  // No report about the lost link's messages will come: whether they arrived is unknown.
  tally_.unknown = tally_.sent - tally_.settled;
  message_credit_ = 0;  // until the next link's WELCOME grants a window
  notify_message_waiters();
}

}  // namespace switchboard::client::detail
