// Hand-offs between sessions: the Delivery a counterpart makes to a stream, and each thread's
// batch of the deliveries (and writer wake-ups) made while it handles one read or one write.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <variant>
#include <vector>

#include "registry/peer.hpp"
#include "switchboard/wire/buffer.hpp"

namespace switchboard::core::net {

class Session;
class SessionStream;

namespace delivery {
struct Incoming {
  StreamOffer offer;
};
struct Data {
  wire::Slice payload;
  bool fin = false;
};
struct End {
  wire::End end;
};
struct Reset {
  wire::Reset reset;
};
struct Credit {
  std::uint32_t bytes = 0;
  std::uint32_t sink = 0;
};
struct SinkDone {
  std::uint32_t sink = 0;
  Status status = Status::ok;
};
// Session-level: a whole message for the session's client, and the end of one of its own.
struct Message {
  MessageDelivery message;
};
struct Settled {
  Settlement settlement;
};
}  // namespace delivery

/// What a counterpart hands a stream (or, for Message and Settled, a session itself), on the
/// way to the session. The stream holds its session, so a queued delivery keeps its target
/// alive.
struct Delivery {
  std::shared_ptr<SessionStream> stream;  // null for a session-level delivery
  std::variant<delivery::Incoming, delivery::Data, delivery::End, delivery::Reset, delivery::Credit,
               delivery::SinkDone, delivery::Message, delivery::Settled>
      what;
  std::shared_ptr<Session> session;  // a session-level delivery's target

  Session& target() const noexcept;
};
using DeliveryList = std::vector<Delivery>;

/// The hand-offs one thread makes while it handles one read or one completed write, gathered per
/// target session so that a read that carried many small messages wakes each target once, not
/// once per message. Used only by its own thread (it is thread-local).
///
/// flush() runs the batch: hand-offs to sessions of this same thread run there and then (unless
/// earlier ones posted to that session are still queued: order is kept), the others are posted,
/// each target's in call order; then sessions whose parked writer was woken meanwhile write at
/// once, so a message crosses the relay in one pass of the event loop.
class HandoffBatch {
public:
  /// Marks this thread's batch open. Scopes nest; only the outermost one's flush() runs the
  /// batch. Its destructor only closes the batch: a scope left without flush() (an exception)
  /// leaves what it gathered to this thread's next flush.
  class Scope {
  public:
    Scope() noexcept;
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

    void flush();

  private:
    bool owner_;
  };

  static HandoffBatch& this_thread() noexcept;

  /// Hands `delivery` to its stream's session: into this thread's batch while a scope is open,
  /// else posted at once.
  static void hand_off(Delivery delivery);
  /// A list for a batch to post, reused: a steady flow of hand-offs allocates nothing.
  static DeliveryList take_list();
  static void give_back(DeliveryList list);

  bool is_open() const noexcept { return open_; }
  /// `session`'s parked writer was woken inside the scope: it writes when the batch is flushed.
  void queue_flush(std::shared_ptr<Session> session) { flushes_.push_back(std::move(session)); }

private:
  using Targets = std::vector<std::pair<Session*, DeliveryList>>;

  HandoffBatch();
  void add(Delivery delivery);
  void flush();

  bool open_ = false;
  // Target sessions in first-delivery order, each with its deliveries in call order.
  Targets targets_;
  Targets running_;  // the targets being run by flush(); kept for its capacity
  // Sessions whose parked writer was woken inside the scope, in wake order.
  std::vector<std::shared_ptr<Session>> flushes_;
  std::vector<std::shared_ptr<Session>> flushing_;
};

}  // namespace switchboard::core::net
