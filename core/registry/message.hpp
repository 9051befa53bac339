// Whole messages (protocol MESSAGE): the ticket that settles one message with its sender once
// every receiver has written or dropped it, and its delivery to a peer.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

#include "switchboard/wire/buffer.hpp"
#include "switchboard/wire/frame.hpp"

namespace switchboard::core {

/// The sender of messages, told (from any thread) how each one ended: its body bytes no longer
/// occupy relay memory, and how many receivers were written it or missed it.
class MessageSource {
public:
  virtual ~MessageSource() = default;
  virtual void message_settled(std::uint32_t bytes, std::uint32_t delivered,
                               std::uint32_t dropped) = 0;
};

/// One message in flight to its receivers. Made by the sender with one share per receiver plus
/// one for itself; each share settles exactly once, and the last one tells the source. Shares
/// are held through TicketShare, which settles as dropped if it is let go unsettled.
class MessageTicket {
public:
  /// `shares` settlements are expected before the source is told.
  static MessageTicket* make(std::shared_ptr<MessageSource> source, std::uint32_t bytes,
                             std::uint32_t shares) {
    return new MessageTicket(std::move(source), bytes, shares);
  }
  /// Any thread.
  void settle(bool delivered) noexcept {
    (delivered ? delivered_ : dropped_).fetch_add(1, std::memory_order_relaxed);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    source_->message_settled(bytes_, delivered_.load(std::memory_order_relaxed),
                             dropped_.load(std::memory_order_relaxed));
    delete this;
  }

private:
  MessageTicket(std::shared_ptr<MessageSource> source, std::uint32_t bytes, std::uint32_t shares)
      : source_(std::move(source)), bytes_(bytes), pending_(shares) {}

  std::shared_ptr<MessageSource> source_;
  const std::uint32_t bytes_;
  std::atomic<std::uint32_t> pending_;
  std::atomic<std::uint32_t> delivered_{0};
  std::atomic<std::uint32_t> dropped_{0};
};

/// One receiver's share of a ticket: move-only; settles as dropped when destroyed unsettled.
class TicketShare {
public:
  TicketShare() noexcept = default;
  explicit TicketShare(MessageTicket* ticket) noexcept : ticket_(ticket) {}
  TicketShare(TicketShare&& other) noexcept : ticket_(std::exchange(other.ticket_, nullptr)) {}
  TicketShare& operator=(TicketShare&& other) noexcept {
    if (this != &other) {
      settle(false);
      ticket_ = std::exchange(other.ticket_, nullptr);
    }
    return *this;
  }
  TicketShare(const TicketShare&) = delete;
  TicketShare& operator=(const TicketShare&) = delete;
  ~TicketShare() { settle(false); }

  void settle(bool delivered) noexcept {
    if (auto* ticket = std::exchange(ticket_, nullptr)) ticket->settle(delivered);
  }
  explicit operator bool() const noexcept { return ticket_ != nullptr; }

private:
  MessageTicket* ticket_ = nullptr;
};

/// A message for one receiver.
struct MessageDelivery {
  Uuid sender;
  wire::StreamKind kind = wire::StreamKind::broadcast;  ///< to_peer or broadcast
  wire::Slice body;
  TicketShare share;
};

}  // namespace switchboard::core
