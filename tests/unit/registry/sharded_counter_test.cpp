// Unit tests for ShardedCounter (relay/sharded_counter.hpp): exact sums from many writers, with
// and without slots of their own, and slots given back when their threads end.
#include "relay/sharded_counter.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

namespace switchboard::core {
namespace {

TEST(ShardedCounter, SumsEveryUpdateOfThreadsWithAndWithoutSlots) {
  ShardedCounter<std::uint64_t> total;
  ShardedCounter<std::int64_t> open;
  constexpr int kThreads = 6;
  constexpr int kUpdates = 100'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      if (t % 2 == 0) CounterShard::claim();  // the others add to the shared slot
      for (int i = 0; i < kUpdates; ++i) {
        total.fetch_add(2);
        open.fetch_add(1);
        if (i % 2 == 1) open.fetch_sub(2);
      }
    });
  }
  // Read while they count: a sum never exceeds what was added.
  while (total.load() < std::uint64_t{2} * kThreads * kUpdates) {
    ASSERT_LE(total.load(), std::uint64_t{2} * kThreads * kUpdates);
    std::this_thread::yield();
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(total.load(), std::uint64_t{2} * kThreads * kUpdates);
  EXPECT_EQ(open.load(), 0);
}

TEST(ShardedCounter, UnsignedCountersGoDownExactlyAcrossSlots) {
  ShardedCounter<std::uint64_t> counter;
  std::thread up([&] {
    CounterShard::claim();
    counter.fetch_add(10);
  });
  up.join();
  counter.fetch_sub(3);  // this thread's update lands in another slot
  EXPECT_EQ(counter.load(), 7u);
}

TEST(ShardedCounter, ThreadsThatEndGiveTheirSlotsBack) {
  ShardedCounter<std::uint64_t> counter;
  // More threads than slots, one after another: each finds a slot free and keeps what its
  // predecessors in that slot counted.
  for (std::size_t round = 0; round < 3 * CounterShard::kSlots; ++round) {
    std::size_t slot = CounterShard::kSlots;
    std::thread worker([&] {
      CounterShard::claim();
      slot = CounterShard::current();
      counter.fetch_add(1);
    });
    worker.join();
    ASSERT_LT(slot, CounterShard::kSlots) << "round " << round;
  }
  EXPECT_EQ(counter.load(), 3 * CounterShard::kSlots);
}

TEST(ShardedCounter, ClaimingIsIdempotentAndThreadsWithoutASlotSayNone) {
  std::size_t first = CounterShard::kSlots;
  std::size_t second = CounterShard::kSlots;
  std::size_t unclaimed = 0;
  std::thread([&] {
    unclaimed = CounterShard::current();
    CounterShard::claim();
    first = CounterShard::current();
    CounterShard::claim();
    second = CounterShard::current();
  }).join();
  EXPECT_EQ(unclaimed, CounterShard::kSlots);
  EXPECT_LT(first, CounterShard::kSlots);
  EXPECT_EQ(first, second);
}

}  // namespace
}  // namespace switchboard::core
