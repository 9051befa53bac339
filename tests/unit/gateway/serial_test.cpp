// Serial: handlers run one at a time, in order, inline when idle.
#include "grpc_gateway/serial.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <future>
#include <thread>
#include <vector>

namespace switchboard::gateway {
namespace {

namespace asio = boost::asio;

TEST(Serial, AHandlerDispatchedWhileIdleRunsAtOnceOnTheCallersThread) {
  asio::io_context io;
  Serial serial(io.get_executor());
  const auto owner = std::make_shared<int>(0);
  std::thread::id ran_on;
  serial.dispatch([&] { ran_on = std::this_thread::get_id(); }, owner);
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_EQ(io.poll(), 0U);  // nothing was left for the executor
}

TEST(Serial, ADispatchQueuesBehindAPostedHandlerThatHasNotRunYet) {
  asio::io_context io;
  Serial serial(io.get_executor());
  const auto owner = std::make_shared<int>(0);
  std::vector<int> order;
  serial.post([&] { order.push_back(1); }, owner);
  serial.dispatch([&] { order.push_back(2); }, owner);
  EXPECT_TRUE(order.empty());
  io.run();
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST(Serial, AHandlerHandedInByARunningOneRunsAfterItAndIsDrainedHere) {
  asio::io_context io;
  Serial serial(io.get_executor());
  const auto owner = std::make_shared<int>(0);
  std::vector<int> order;
  serial.dispatch(
      [&] {
        order.push_back(1);
        serial.dispatch([&] { order.push_back(3); }, owner);
        serial.post([&] { order.push_back(4); }, owner);
        order.push_back(2);
      },
      owner);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(io.poll(), 0U);
}

TEST(Serial, APostedDrainHoldsTheOwnerUntilItRuns) {
  asio::io_context io;
  Serial serial(io.get_executor());
  auto owner = std::make_shared<int>(0);
  const std::weak_ptr<int> watch = owner;
  std::vector<int> order;
  serial.post([&] { order.push_back(1); }, owner);
  serial.dispatch([&] { order.push_back(2); }, owner);
  EXPECT_TRUE(order.empty());
  owner.reset();
  EXPECT_FALSE(watch.expired());  // the posted drain holds the owner
  io.run();
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_TRUE(watch.expired());
}

TEST(Serial, AHandlerKnowsItsSerialAndAnotherIdleSerialRunsInsideIt) {
  asio::io_context io;
  Serial a(io.get_executor());
  Serial b(io.get_executor());
  const auto owner = std::make_shared<int>(0);
  EXPECT_FALSE(a.running_here());
  std::vector<int> order;
  a.dispatch(
      [&] {
        a.assert_here();
        order.push_back(1);
        b.dispatch(
            [&] {
              b.assert_here();
              EXPECT_FALSE(a.running_here());
              order.push_back(2);
            },
            owner);
        EXPECT_TRUE(a.running_here());  // restored once b's handler returned
        order.push_back(3);
      },
      owner);
  EXPECT_FALSE(a.running_here());
  EXPECT_FALSE(b.running_here());
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(io.poll(), 0U);
}

// A delivers to B, which answers A at once: the answer waits until A's handler is over and
// runs on this thread before A's dispatch returns, never inside A's handler.
TEST(Serial, ADeliveryBackToARunningSerialIsQueuedAndDrainedBeforeItLetsGo) {
  asio::io_context io;
  Serial a(io.get_executor());
  Serial b(io.get_executor());
  const auto owner = std::make_shared<int>(0);
  std::vector<int> order;
  bool inside_a = false;
  a.dispatch(
      [&] {
        inside_a = true;
        order.push_back(1);
        b.dispatch(
            [&] {
              order.push_back(2);
              a.dispatch(
                  [&] {
                    EXPECT_FALSE(inside_a);
                    a.assert_here();
                    order.push_back(4);
                  },
                  owner);
            },
            owner);
        order.push_back(3);
        inside_a = false;
      },
      owner);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(io.poll(), 0U);
}

// Run inside A's handler, B runs the handed-in handler only: what B queued meanwhile is left to
// its executor, and A's thread goes back to A's handler.
TEST(Serial, InsideAnotherSerialWhatQueuedMeanwhileGoesToTheExecutor) {
  asio::io_context io;
  Serial a(io.get_executor());
  Serial b(io.get_executor());
  auto owner = std::make_shared<int>(0);
  const std::weak_ptr<int> watch = owner;
  std::vector<int> order;
  a.dispatch(
      [&] {
        b.dispatch(
            [&] {
              order.push_back(1);
              b.post([&] { order.push_back(3); }, owner);
            },
            owner);
        order.push_back(2);
      },
      owner);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  owner.reset();
  EXPECT_FALSE(watch.expired());  // the posted drain holds the owner
  EXPECT_EQ(io.poll(), 1U);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(watch.expired());
}

// A delivery runs only its own handler, even from outside any Serial: its caller (a native
// session) may hold back what the handler forwards until its own handler ends, so the call's
// other work must not run there.
TEST(Serial, ADeliveryLeavesWhatQueuedMeanwhileToTheExecutor) {
  asio::io_context io;
  Serial serial(io.get_executor());
  const auto owner = std::make_shared<int>(0);
  std::vector<int> order;
  serial.deliver(
      [&] {
        serial.assert_here();
        order.push_back(1);
        serial.dispatch([&] { order.push_back(2); }, owner);
      },
      owner);
  EXPECT_EQ(order, (std::vector<int>{1}));
  EXPECT_FALSE(serial.running_here());
  EXPECT_EQ(io.poll(), 1U);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST(SerialDeathTest, AssertHereAbortsOutsideTheSerial) {
  asio::io_context io;
  Serial a(io.get_executor());
  Serial b(io.get_executor());
  const auto owner = std::make_shared<int>(0);
  EXPECT_DEATH(a.assert_here(), "outside its Serial");
  EXPECT_DEATH(b.dispatch([&] { a.assert_here(); }, owner), "outside its Serial");
}

// Producers on four threads and two executor threads: every handler runs once, never two at a
// time, and each producer's handlers run in the order it handed them in.
TEST(Serial, ConcurrentProducersKeepTheirOrderAndNeverOverlap) {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 20'000;
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::vector<std::thread> runners;
  for (int i = 0; i < 2; ++i) runners.emplace_back([&] { io.run(); });

  Serial serial(io.get_executor());
  const auto owner = std::make_shared<int>(0);
  std::atomic<bool> inside{false};
  std::atomic<int> overlaps{0};
  long total = 0;  // only ever touched by handlers: the Serial is its lock
  std::vector<int> last(kProducers, -1);
  int out_of_order = 0;
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        auto handler = [&, p, i] {
          if (inside.exchange(true)) overlaps.fetch_add(1);
          ++total;
          if (last[static_cast<std::size_t>(p)] != i - 1) ++out_of_order;
          last[static_cast<std::size_t>(p)] = i;
          inside.store(false);
        };
        switch (i % 3) {
          case 0:
            serial.dispatch(handler, owner);
            break;
          case 1:
            serial.deliver(handler, owner);
            break;
          default:
            serial.post(handler, owner);
            break;
        }
      }
    });
  }
  for (auto& producer : producers) producer.join();
  std::promise<void> flushed;
  serial.post([&] { flushed.set_value(); }, owner);
  flushed.get_future().wait();
  guard.reset();
  for (auto& runner : runners) runner.join();

  EXPECT_EQ(total, static_cast<long>(kProducers) * kPerProducer);
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(out_of_order, 0);
}

}  // namespace
}  // namespace switchboard::gateway
