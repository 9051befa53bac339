// Unit tests for Fifo (net/fifo.hpp): order, wrap-around, storage reuse and inline items.
#include "native/fifo.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "switchboard/wire/buffer.hpp"

namespace switchboard::core::net {
namespace {

template <typename Queue>
bool stored_inside(const Queue& queue, const void* item) {
  const std::less<const void*> before;
  const auto* begin = reinterpret_cast<const std::uint8_t*>(&queue);
  return !before(item, begin) && before(item, begin + sizeof(queue));
}

template <typename Queue>
void expect_first_in_first_out(Queue& queue) {
  int next_out = 0;
  int next_in = 0;
  // Uneven pushes and pops wrap around the ring and grow it several times.
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 7; ++i) queue.push_back(next_in++);
    for (int i = 0; i < 5; ++i) {
      ASSERT_FALSE(queue.empty());
      EXPECT_EQ(queue.front(), next_out++);
      queue.pop_front();
    }
  }
  EXPECT_EQ(queue.size(), static_cast<std::size_t>(next_in - next_out));
  while (!queue.empty()) {
    EXPECT_EQ(queue.front(), next_out++);
    queue.pop_front();
  }
  EXPECT_EQ(next_out, next_in);
}

TEST(Fifo, KeepsOrderAcrossWrapsAndGrowth) {
  Fifo<int> queue;
  expect_first_in_first_out(queue);
  Fifo<int, 2> small;
  expect_first_in_first_out(small);
}

TEST(Fifo, BoundedDepthStopsGrowingOnceReached) {
  Fifo<int> queue;
  int next_out = 0;
  int next_in = 0;
  std::size_t reached = 0;
  // Depth cycles between 1 and 6 while the ring's start walks all the way round many times.
  for (int round = 0; round < 1000; ++round) {
    while (queue.size() < 6) queue.push_back(next_in++);
    while (queue.size() > 1) {
      ASSERT_EQ(queue.front(), next_out++);
      queue.pop_front();
    }
    if (round == 0) reached = queue.capacity();
    ASSERT_EQ(queue.capacity(), reached) << "round " << round;
  }
  EXPECT_EQ(reached, 8U);
}

TEST(Fifo, InlineItemsLiveInTheQueueUntilItOutgrowsThem) {
  Fifo<int, 2> queue;
  queue.push_back(1);
  queue.push_back(2);
  EXPECT_TRUE(stored_inside(queue, &queue.front()));
  queue.push_back(3);  // a third item moves everything to the heap
  EXPECT_FALSE(stored_inside(queue, &queue.front()));
  EXPECT_EQ(queue.front(), 1);
  queue.release();
  EXPECT_TRUE(queue.empty());
  queue.push_back(4);
  EXPECT_TRUE(stored_inside(queue, &queue.front()));  // back to the inline storage
  EXPECT_EQ(queue.front(), 4);
}

TEST(Fifo, ReserveGrowsOnceAndKeepsTheOrderOfAWrappedRing) {
  Fifo<int, 2> queue;
  for (int i = 0; i < 4; ++i) queue.push_back(i);
  queue.pop_front();
  queue.pop_front();
  queue.push_back(4);
  queue.push_back(5);  // wrapped: the ring holds 2 3 | 4 5 from its middle
  queue.reserve(32);
  EXPECT_EQ(queue.capacity(), 32U);
  const int* storage = &queue.front();
  for (int i = 6; i < 32 + 2; ++i) queue.push_back(i);  // fills it without growing
  EXPECT_EQ(queue.capacity(), 32U);
  for (int expected = 2; expected < 34; ++expected) {
    ASSERT_EQ(queue.front(), expected);
    if (expected == 2) {
      EXPECT_EQ(&queue.front(), storage);
    }
    queue.pop_front();
  }
  EXPECT_TRUE(queue.empty());
  queue.reserve(8);  // smaller than it has: nothing changes
  EXPECT_EQ(queue.capacity(), 32U);
}

TEST(Fifo, PopDropsTheItemsReferenceAtOnce) {
  Fifo<wire::Slice, 2> queue;
  const wire::Slice slice = wire::Slice::copy_of(std::vector<std::uint8_t>{1, 2, 3});
  queue.push_back(slice);
  queue.push_back(slice);
  EXPECT_EQ(slice.block.use_count(), 3);
  queue.pop_front();
  EXPECT_EQ(slice.block.use_count(), 2);
  queue.clear();
  EXPECT_EQ(slice.block.use_count(), 1);
}

}  // namespace
}  // namespace switchboard::core::net
