// The process's counter slots: which are claimed, and their return when a claiming thread ends.
#include "relay/sharded_counter.hpp"

namespace switchboard::core {

namespace {
static_assert(CounterShard::kSlots <= 32);
std::atomic<std::uint32_t> claimed_slots{0};
}  // namespace

// Gives the thread's slot back when the thread ends, so relays started one after another in a
// process (tests, tools) find slots free.
struct CounterShardRelease {
  ~CounterShardRelease() {
    if (CounterShard::slot_ < CounterShard::kSlots) {
      const auto slot = CounterShard::slot_;
      // Whatever the thread still counts while it ends goes to the shared slot, not to a slot
      // another thread may claim from here on.
      CounterShard::slot_ = CounterShard::kSlots;
      claimed_slots.fetch_and(~(std::uint32_t{1} << slot), std::memory_order_acq_rel);
    }
  }
};

void CounterShard::claim() noexcept {
  if (slot_ < kSlots) return;
  auto claimed = claimed_slots.load(std::memory_order_relaxed);
  for (;;) {
    std::size_t free = 0;
    while (free < kSlots && (claimed & (std::uint32_t{1} << free)) != 0) ++free;
    if (free == kSlots) return;
    if (claimed_slots.compare_exchange_weak(claimed, claimed | (std::uint32_t{1} << free),
                                            std::memory_order_acq_rel)) {
      slot_ = free;
      thread_local CounterShardRelease release;
      return;
    }
  }
}

}  // namespace switchboard::core
