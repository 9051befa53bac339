// Unit tests for HandlerSlots (net/handler_slot.hpp): the slots are reused, a third pending
// operation comes from the heap, and an Asio timer re-armed many times keeps to the slots.
#include "native/handler_slot.hpp"

#include <gtest/gtest.h>

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>

namespace switchboard::core::net {
namespace {

namespace asio = boost::asio;

bool inside(const HandlerSlots& slots, const void* pointer) {
  const std::less<const void*> before;
  const auto* begin = reinterpret_cast<const unsigned char*>(&slots);
  return !before(pointer, begin) && before(pointer, begin + sizeof(slots));
}

TEST(HandlerSlots, TwoOperationsUseTheSlotsAndAThirdTheHeap) {
  HandlerSlots slots;
  void* first = slots.allocate(100);
  void* second = slots.allocate(100);
  void* third = slots.allocate(100);
  EXPECT_TRUE(inside(slots, first));
  EXPECT_TRUE(inside(slots, second));
  EXPECT_NE(first, second);
  EXPECT_FALSE(inside(slots, third));
  slots.deallocate(third);  // back to the heap (ASan checks it)
  slots.deallocate(first);
  EXPECT_EQ(slots.allocate(100), first);  // a freed slot is taken again
  void* too_big = slots.allocate(4096);
  EXPECT_FALSE(inside(slots, too_big));
  slots.deallocate(too_big);
  slots.deallocate(first);
  slots.deallocate(second);
}

// A timer re-armed before its wait completes (the cancelled wait and the new one pending at
// once), again and again: both waits live in the slots, and the slots are free after each round.
TEST(HandlerSlots, ARearmedAsioTimerWaitsInTheSlots) {
  asio::io_context io;
  asio::steady_timer timer(io);
  HandlerSlots slots;
  int aborted = 0;
  int fired = 0;
  auto wait = [&] {
    timer.async_wait(
        asio::bind_allocator(SlotAllocator<void>(slots), [&](boost::system::error_code ec) {
          ++(ec == asio::error::operation_aborted ? aborted : fired);
        }));
  };
  for (int round = 0; round < 100; ++round) {
    timer.expires_after(std::chrono::hours(1));
    wait();
    timer.expires_after(std::chrono::milliseconds(0));  // cancels the first wait
    wait();
    void* probe = slots.allocate(8);
    EXPECT_FALSE(inside(slots, probe)) << "round " << round << ": a wait is not in a slot";
    slots.deallocate(probe);
    io.run();
    io.restart();
    void* first = slots.allocate(8);
    void* second = slots.allocate(8);
    EXPECT_TRUE(inside(slots, first) && inside(slots, second)) << "round " << round;
    slots.deallocate(first);
    slots.deallocate(second);
  }
  EXPECT_EQ(aborted, 100);
  EXPECT_EQ(fired, 100);
}

}  // namespace
}  // namespace switchboard::core::net
