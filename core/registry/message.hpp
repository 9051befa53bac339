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

/// The sender of messages, told (from any thread) how its messages ended. It stays alive until
/// every message it sent has settled (its tickets and shares point to it without owning it).
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

  void add(MessageSource* source, const Settlement& settlement) {
    for (auto& [known, total] : entries_) {
      if (known == source) {
        total.bytes += settlement.bytes;
        total.messages += settlement.messages;
        total.delivered += settlement.delivered;
        total.dropped += settlement.dropped;
        return;
      }
    }
    entries_.emplace_back(source, settlement);
  }
  /// Tells each source what it gathered.
  void flush() {
    for (auto& [source, total] : entries_) source->messages_settled(total);
    entries_.clear();
  }

private:
  boost::container::small_vector<std::pair<MessageSource*, Settlement>, 2> entries_;
};

/// A message in flight to several receivers: one share each; each share settles exactly once,
/// and the last one tells the source. (A message with one receiver needs no ticket: its share
/// tells the source itself.)
class MessageTicket {
public:
  /// `shares` settlements are expected before the source is told.
  static MessageTicket* make(MessageSource* source, std::uint32_t bytes, std::uint32_t shares) {
    return new MessageTicket(source, bytes, shares);
  }
  /// Any thread. The last settlement tells the source, through `batch` when given.
  void settle(bool delivered, SettleBatch* batch) noexcept {
    (delivered ? delivered_ : dropped_).fetch_add(1, std::memory_order_relaxed);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    const Settlement settlement{bytes_, 1, delivered_.load(std::memory_order_relaxed),
                                dropped_.load(std::memory_order_relaxed)};
    if (batch != nullptr) {
      batch->add(source_, settlement);
    } else {
      source_->messages_settled(settlement);
    }
    delete this;
  }

private:
  MessageTicket(MessageSource* source, std::uint32_t bytes, std::uint32_t shares)
      : source_(source), bytes_(bytes), pending_(shares) {}

  MessageSource* const source_;
  const std::uint32_t bytes_;
  std::atomic<std::uint32_t> pending_;
  std::atomic<std::uint32_t> delivered_{0};
  std::atomic<std::uint32_t> dropped_{0};
};

/// One receiver's share of a message: move-only; settles as dropped when destroyed unsettled.
class TicketShare {
public:
  TicketShare() noexcept = default;
  /// A share of a ticket (a message with several receivers).
  explicit TicketShare(MessageTicket* ticket) noexcept : ticket_(ticket) {}
  /// The only share of a message of `bytes` body bytes from `source`.
  TicketShare(MessageSource* source, std::uint32_t bytes) noexcept
      : source_(source), bytes_(bytes) {}
  TicketShare(TicketShare&& other) noexcept
      : ticket_(std::exchange(other.ticket_, nullptr)),
        source_(std::exchange(other.source_, nullptr)),
        bytes_(other.bytes_) {}
  TicketShare& operator=(TicketShare&& other) noexcept {
    if (this != &other) {
      settle(false);
      ticket_ = std::exchange(other.ticket_, nullptr);
      source_ = std::exchange(other.source_, nullptr);
      bytes_ = other.bytes_;
    }
    return *this;
  }
  TicketShare(const TicketShare&) = delete;
  TicketShare& operator=(const TicketShare&) = delete;
  ~TicketShare() { settle(false); }

  void settle(bool delivered, SettleBatch* batch = nullptr) noexcept {
    if (auto* ticket = std::exchange(ticket_, nullptr)) {
      ticket->settle(delivered, batch);
    } else if (auto* source = std::exchange(source_, nullptr)) {
      const Settlement settlement{bytes_, 1, delivered ? 1U : 0U, delivered ? 0U : 1U};
      if (batch != nullptr) {
        batch->add(source, settlement);
      } else {
        source->messages_settled(settlement);
      }
    }
  }
  explicit operator bool() const noexcept { return ticket_ != nullptr || source_ != nullptr; }

private:
  MessageTicket* ticket_ = nullptr;
  MessageSource* source_ = nullptr;
  std::uint32_t bytes_ = 0;
};

/// A message for one receiver.
struct MessageDelivery {
  Uuid sender;
  wire::StreamKind kind = wire::StreamKind::broadcast;  ///< to_peer or broadcast
  wire::Slice body;
  TicketShare share;
};

}  // namespace switchboard::core
