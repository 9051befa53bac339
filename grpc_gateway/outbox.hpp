// Outbox: what one call writes to its gRPC client, one write at a time, then its final status.
#pragma once

#include <grpcpp/support/server_callback.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <utility>

#include "grpc_gateway/serial.hpp"
#include "relay/relay_context.hpp"

namespace switchboard::gateway {

/// The messages a call has queued for its client, with their bytes counted (payload plus the
/// message's size) until gRPC has written them. At most one write is in flight: the message is
/// gRPC's until OnWriteDone, and a late OnWriteDone is how a slow reader holds the relay back.
/// Once the final status is decided it leaves with the last message (StartWriteAndFinish: no
/// OnWriteDone trip before the trailers), or alone when nothing is queued. `Tag` tells the call,
/// when a write is done, which stream to credit. Lives on its call's Serial.
template <class Request, class Response, class Tag>
class Outbox {
public:
  using Reactor = grpc::ServerBidiReactor<Request, Response>;

  /// What a finished write meant: the call credits `bytes` of payload to its `tag`'s stream.
  struct Written {
    Tag tag{};
    std::uint32_t bytes = 0;
  };

  Outbox(Reactor& reactor, const Serial& serial, core::DoorCounters& counters)
      : reactor_(reactor), serial_(serial), counters_(counters) {}

  /// Queues `message`, carrying `bytes` of stream payload; `pump` starts its write. `urgent`
  /// messages (credit for the client) go ahead of the others. Returns the bytes now queued or
  /// in flight.
  std::size_t push(Response message, Tag tag, std::uint32_t bytes, bool urgent = false) {
    serial_.assert_here();
    Item item{std::move(message), tag, bytes, 0};
    item.size = bytes + static_cast<std::size_t>(item.message.ByteSizeLong());
    queued_bytes_ += item.size;
    (urgent ? urgent_ : queue_).push_back(std::move(item));
    return queued_bytes_;
  }

  /// An urgent message not written yet that `match` accepts, to merge into; or nullptr.
  template <class Match>
  Response* find_urgent(Match match) {
    auto found = std::find_if(urgent_.begin(), urgent_.end(),
                              [&](const Item& item) { return match(item.message); });
    return found == urgent_.end() ? nullptr : &found->message;
  }

  /// Drops the messages not written yet whose tag `match` accepts.
  template <class Match>
  void erase_if(Match match) {
    const auto erase = [&](std::deque<Item>& queue) {
      std::erase_if(queue, [&](const Item& item) {
        if (!match(item.tag, item.message)) return false;
        queued_bytes_ -= item.size;
        return true;
      });
    };
    erase(urgent_);
    erase(queue_);
  }

  /// Decides the final status; the first one decided wins. With `flush` what is queued is
  /// written first; without, it is dropped: the client is gone, stopped reading or broke the
  /// protocol.
  void finish(grpc::Status status, bool flush) {
    serial_.assert_here();
    if (final_status_ || closed_) return;
    final_status_ = std::move(status);
    if (!flush) clear();
    pump();
  }

  /// Replaces a final status not written yet (an abort overrides a graceful end still queued)
  /// and drops what is queued.
  void abort(grpc::Status status) {
    serial_.assert_here();
    if (finished_ || closed_) return;
    final_status_ = std::move(status);
    clear();
    pump();
  }

  /// A write completed: returns what it carried, counted out if the client got it. The call
  /// acts on it, then calls `pump` to start the next write.
  Written write_done(bool ok) {
    serial_.assert_here();
    writing_ = false;
    queued_bytes_ -= std::min(queued_bytes_, in_flight_.size);
    if (ok) counters_.payload_bytes_out.fetch_add(in_flight_.bytes, std::memory_order_relaxed);
    return Written{in_flight_.tag, in_flight_.bytes};
  }

  /// Starts the next write, or the final status once nothing is queued.
  void pump() {
    serial_.assert_here();
    if (writing_ || finished_ || closed_) return;
    auto& queue = urgent_.empty() ? queue_ : urgent_;
    if (!queue.empty()) {
      in_flight_ = std::move(queue.front());
      queue.pop_front();
      if (final_status_ && urgent_.empty() && queue_.empty()) {
        // Nothing follows: the client's credit for these bytes is not needed.
        finished_ = true;
        counters_.payload_bytes_out.fetch_add(in_flight_.bytes, std::memory_order_relaxed);
        reactor_.StartWriteAndFinish(&in_flight_.message, grpc::WriteOptions(), *final_status_);
        return;
      }
      writing_ = true;
      reactor_.StartWrite(&in_flight_.message);
      return;
    }
    if (final_status_) {
      finished_ = true;
      reactor_.Finish(*final_status_);
    }
  }

  /// The call is done (OnDone ran): nothing is written any more.
  void close() {
    closed_ = true;
    clear();
  }

  /// The final status is decided: nothing new should be queued.
  bool ending() const noexcept { return final_status_.has_value() || closed_; }
  /// Finish (or StartWriteAndFinish) was called: the call's context may already be gone.
  bool finished() const noexcept { return finished_ || closed_; }
  std::size_t queued_bytes() const noexcept { return queued_bytes_; }

private:
  struct Item {
    Response message;
    Tag tag{};
    std::uint32_t bytes = 0;
    std::size_t size = 0;  // as counted in queued_bytes_
  };

  void clear() {
    for (const auto& item : urgent_) queued_bytes_ -= item.size;
    for (const auto& item : queue_) queued_bytes_ -= item.size;
    urgent_.clear();
    queue_.clear();
  }

  Reactor& reactor_;
  const Serial& serial_;
  core::DoorCounters& counters_;
  std::deque<Item> urgent_;
  std::deque<Item> queue_;
  Item in_flight_;  // gRPC's while a write is in flight
  std::size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool finished_ = false;
  bool closed_ = false;
  std::optional<grpc::Status> final_status_;
};

}  // namespace switchboard::gateway
