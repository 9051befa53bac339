// Whole messages (protocol MESSAGE): the ticket that settles one message with its sender once
// every receiver has written or dropped it, and its delivery to a peer.
#pragma once

#include <atomic>
#include <boost/container/small_vector.hpp>
#include <cstdint>
#include <memory>
#include <utility>

#include "switchboard/wire/buffer.hpp"
#include "switchboard/wire/frame.hpp"

namespace switchboard::core {

/// How some of one sender's messages ended.
struct Settlement {
  std::uint32_t bytes = 0;      ///< their body bytes, which no longer occupy relay memory
  std::uint32_t messages = 0;   ///< how many ended
  std::uint32_t delivered = 0;  ///< receivers that were written one
  std::uint32_t dropped = 0;    ///< receivers that missed one
};

/// The sender of messages, told (from any thread) how its messages ended.
class MessageSource {
public:
  virtual ~MessageSource() = default;
  virtual void messages_settled(const Settlement& settlement) = 0;
};

/// Settlements gathered per source while a receiver settles many messages at once (one write),
/// so that each sender is told once per write, not once per message. Not thread-safe.
class SettleBatch {
public:
  SettleBatch() = default;
  SettleBatch(const SettleBatch&) = delete;
  SettleBatch& operator=(const SettleBatch&) = delete;
  ~SettleBatch() { flush(); }

  void add(std::shared_ptr<MessageSource> source, const Settlement& settlement) {
    for (auto& [known, total] : entries_) {
      if (known == source) {
        total.bytes += settlement.bytes;
        total.messages += settlement.messages;
        total.delivered += settlement.delivered;
        total.dropped += settlement.dropped;
        return;
      }
    }
    entries_.emplace_back(std::move(source), settlement);
  }
  /// Tells each source what it gathered.
  void flush() {
    for (auto& [source, total] : entries_) source->messages_settled(total);
    entries_.clear();
  }

private:
  boost::container::small_vector<std::pair<std::shared_ptr<MessageSource>, Settlement>, 2> entries_;
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
  /// Any thread. The last settlement tells the source, through `batch` when given.
  void settle(bool delivered, SettleBatch* batch) noexcept {
    (delivered ? delivered_ : dropped_).fetch_add(1, std::memory_order_relaxed);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    const Settlement settlement{bytes_, 1, delivered_.load(std::memory_order_relaxed),
                                dropped_.load(std::memory_order_relaxed)};
    if (batch != nullptr) {
      batch->add(std::move(source_), settlement);
    } else {
      source_->messages_settled(settlement);
    }
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

  void settle(bool delivered, SettleBatch* batch = nullptr) noexcept {
    if (auto* ticket = std::exchange(ticket_, nullptr)) ticket->settle(delivered, batch);
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
