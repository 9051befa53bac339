// A statistic that many threads add to: owns one slot per claiming thread and one shared slot.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace switchboard::core {

/// The counter slot the calling thread writes. A relay's I/O threads claim one each for their
/// life, so that what they count on the hot path is a plain load and store to a cache line no
/// other thread writes, instead of a locked read-modify-write on a line every thread shares.
/// Other threads (gRPC's, the main thread, tests) hold none and add to the shared slot.
class CounterShard {
public:
  static constexpr std::size_t kSlots = 16;

  /// Claims a free slot for the calling thread until it exits; without effect when the thread
  /// holds one already or all are taken (the thread then adds to the shared slot). Any thread.
  static void claim() noexcept;
  /// The calling thread's slot, or kSlots when it holds none.
  static std::size_t current() noexcept { return slot_; }

private:
  friend struct CounterShardRelease;
  static inline thread_local std::size_t slot_ = kSlots;
};

/// A relaxed counter with std::atomic's fetch_add, fetch_sub and load (which sums the slots).
/// Each slot has one writer, or is atomic (the shared one), so no update is lost; a load taken
/// while others count sees some of their updates, as a relaxed atomic would.
template <typename T>
class ShardedCounter {
public:
  void fetch_add(T n, std::memory_order /*ignored*/ = std::memory_order_relaxed) noexcept {
    const auto slot = CounterShard::current();
    if (slot < CounterShard::kSlots) {
      auto& value = slots_[slot].value;
      value.store(value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    } else {
      shared_.fetch_add(n, std::memory_order_relaxed);
    }
  }
  void fetch_sub(T n, std::memory_order order = std::memory_order_relaxed) noexcept {
    fetch_add(static_cast<T>(T{} - n), order);  // modular for unsigned T: sums stay exact
  }
  T load(std::memory_order /*ignored*/ = std::memory_order_relaxed) const noexcept {
    T sum = shared_.load(std::memory_order_relaxed);
    for (const auto& slot : slots_) sum += slot.value.load(std::memory_order_relaxed);
    return sum;
  }

private:
  struct alignas(64) Slot {
    std::atomic<T> value{0};
  };
  std::array<Slot, CounterShard::kSlots> slots_{};
  alignas(64) std::atomic<T> shared_{0};
};

}  // namespace switchboard::core
