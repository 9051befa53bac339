// StreamTimers: one session's stream deadlines, idle and slow-consumer checks on a single timer.
#pragma once

#include <algorithm>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "native/handler_slot.hpp"

namespace switchboard::core::net {

/// A min-heap of (due, stream id) under one steady_timer: one entry per stream whose timer is
/// armed. Entries of streams removed meanwhile are dropped when they come due, or when they
/// outnumber the live streams. Used only on its session's executor.
class StreamTimers {
public:
  using Clock = std::chrono::steady_clock;

  explicit StreamTimers(const boost::asio::any_io_executor& executor) : timer_(executor) {}

  /// Whether the first wait was made (it is, with the session's first stream).
  bool started() const noexcept { return memory_ != nullptr; }

  /// Room for an entry per stream now, not when a stream's timer is first armed mid-flow.
  void reserve_for(std::size_t streams) {
    if (heap_.capacity() < streams) heap_.reserve(std::max<std::size_t>(8, 2 * streams));
  }

  /// Adds an entry for `stream` due at `due`; `live` streams remain and `stale(id)` says whether
  /// an entry is no longer wanted. Returns whether the pending wait must be re-armed earlier
  /// (then call wait(next_due(), ...)).
  template <typename Stale>
  bool add(Clock::time_point due, std::uint32_t stream, std::size_t live, Stale&& stale) {
    if (heap_.size() >= 2 * live + 64) {
      // Mostly entries of streams gone meanwhile: keep the queue proportional to live streams.
      std::erase_if(heap_, [&](const Entry& entry) { return stale(entry.stream); });
      std::make_heap(heap_.begin(), heap_.end(), later);
    }
    heap_.push_back(Entry{due, stream});
    std::push_heap(heap_.begin(), heap_.end(), later);
    return heap_.front().due < waiting_for_;
  }

  /// The earliest entry's due time ("never" when there is none).
  Clock::time_point next_due() const noexcept {
    return heap_.empty() ? Clock::time_point::max() : heap_.front().due;
  }

  /// Starts (or re-arms) the wait for `due`; `handler(ec)` runs when it fires or is cancelled.
  /// Re-arming cancels the pending wait, whose handler then sees operation_aborted. From the
  /// first stream on a wait is always pending until stop() (due "never" when no stream has a
  /// timer), in memory of its own: a broadcast receiver that runs out of credit arms it in the
  /// middle of a flow, which then neither allocates an operation nor grows the reactor's heap of
  /// pending timers.
  template <typename Handler>
  void wait(Clock::time_point due, Handler&& handler) {
    if (!memory_) memory_ = std::make_unique<HandlerSlots>();
    waiting_for_ = due;
    timer_.expires_at(due);
    timer_.async_wait(
        boost::asio::bind_allocator(SlotAllocator<void>(*memory_), std::forward<Handler>(handler)));
  }

  /// The wait fired: no wait is pending until the next wait().
  void fired() noexcept { waiting_for_ = Clock::time_point::max(); }
  /// Whether a wait for something other than "never" is pending.
  bool waiting() const noexcept { return waiting_for_ != Clock::time_point::max(); }

  /// Takes the earliest entry if it is due by `now`.
  bool pop_due(Clock::time_point now, std::uint32_t& stream) {
    if (heap_.empty() || heap_.front().due > now) return false;
    stream = heap_.front().stream;
    std::pop_heap(heap_.begin(), heap_.end(), later);
    heap_.pop_back();
    return true;
  }

  /// Gives the heap's memory back (no stream is left).
  void release() noexcept { std::vector<Entry>().swap(heap_); }

  /// Cancels the wait (which holds the session) and forgets every entry.
  void stop() noexcept {
    timer_.cancel();
    release();
  }

private:
  struct Entry {
    Clock::time_point due;
    std::uint32_t stream;
  };
  static bool later(const Entry& a, const Entry& b) noexcept { return a.due > b.due; }

  std::vector<Entry> heap_;
  // Made with the first wait (an idle peer does without). A pending wait holds the session, so
  // this outlives every wait; declared before the timer, it is also destroyed after it.
  std::unique_ptr<HandlerSlots> memory_;
  boost::asio::steady_timer timer_;
  Clock::time_point waiting_for_ = Clock::time_point::max();
};

}  // namespace switchboard::core::net
