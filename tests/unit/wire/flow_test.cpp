// The shared flow rules: credit return at a quarter window, keepalive verdicts, stall detection.
#include "switchboard/wire/flow.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "switchboard/wire/frame.hpp"

namespace switchboard::wire {
namespace {

using namespace std::chrono_literals;
using Clock = FlowClock;

constexpr Clock::time_point kStart = Clock::time_point{} + 1h;

static_assert(credit_return_threshold(1024 * 1024) == 256 * 1024);
static_assert(credit_due(256 * 1024, 1024 * 1024));
static_assert(!credit_due(256 * 1024 - 1, 1024 * 1024));

TEST(CreditDue, AtAQuarterOfTheWindow) {
  EXPECT_FALSE(credit_due(0, 1000));
  EXPECT_FALSE(credit_due(249, 1000));
  EXPECT_TRUE(credit_due(250, 1000));
  EXPECT_TRUE(credit_due(1000, 1000));
  EXPECT_EQ(credit_return_threshold(1003), 250u);  // rounds down
  EXPECT_TRUE(credit_due(kMaxWindow / 4, kMaxWindow));
}

TEST(CreditDue, TinyWindowsReturnEveryByte) {
  // Windows below four bytes are legal on the wire; every consumption is due at once.
  EXPECT_EQ(credit_return_threshold(3), 0u);
  EXPECT_TRUE(credit_due(1, 3));
  EXPECT_TRUE(credit_due(1, 1));
}

TEST(CreditDue, BatchesChunksIntoFewGrants) {
  // A receiver consuming 100-byte chunks of a 1000-byte window grants 300 bytes every third
  // chunk: one WINDOW frame per quarter window, carrying all that is pending.
  constexpr std::uint32_t kWindow = 1000;
  std::uint32_t pending = 0;
  std::vector<std::uint32_t> grants;
  for (int chunk = 0; chunk < 10; ++chunk) {
    pending += 100;
    if (credit_due(pending, kWindow)) {
      grants.push_back(pending);
      pending = 0;
    }
  }
  EXPECT_EQ(grants, (std::vector<std::uint32_t>{300, 300, 300}));
  EXPECT_EQ(pending, 100u);
}

constexpr KeepaliveTiming kTiming{100ms, 200ms};

TEST(Keepalive, WaitsWhileBytesArrive) {
  Keepalive keepalive(kStart);
  EXPECT_EQ(keepalive.judge(kStart, kTiming), KeepaliveVerdict::wait);
  EXPECT_EQ(keepalive.judge(kStart + 100ms, kTiming), KeepaliveVerdict::wait);  // not more than
  keepalive.on_read(kStart + 90ms);
  EXPECT_EQ(keepalive.judge(kStart + 150ms, kTiming), KeepaliveVerdict::wait);
  EXPECT_EQ(keepalive.last_read(), kStart + 90ms);
  EXPECT_FALSE(keepalive.ping_outstanding());
}

TEST(Keepalive, PingsAfterAnIntervalOfSilence) {
  Keepalive keepalive(kStart);
  EXPECT_EQ(keepalive.judge(kStart + 101ms, kTiming), KeepaliveVerdict::send_ping);
  // A side that stalled still probes: only the dead verdict waits for a normal tick.
  EXPECT_EQ(keepalive.judge(kStart + 101ms, kTiming, true), KeepaliveVerdict::send_ping);
}

TEST(Keepalive, OnePingInFlightAtATime) {
  Keepalive keepalive(kStart);
  keepalive.on_ping_sent(kStart + 101ms);
  EXPECT_TRUE(keepalive.ping_outstanding());
  EXPECT_EQ(keepalive.ping_sent(), kStart + 101ms);
  EXPECT_EQ(keepalive.judge(kStart + 150ms, kTiming), KeepaliveVerdict::wait);
  EXPECT_EQ(keepalive.judge(kStart + 301ms, kTiming), KeepaliveVerdict::wait);  // not more than
}

TEST(Keepalive, DeadWhenThePingStaysUnanswered) {
  Keepalive keepalive(kStart);
  keepalive.on_ping_sent(kStart + 101ms);
  EXPECT_EQ(keepalive.judge(kStart + 302ms, kTiming), KeepaliveVerdict::dead);
}

TEST(Keepalive, AnyReadAnswersThePing) {
  Keepalive keepalive(kStart);
  keepalive.on_ping_sent(kStart + 101ms);
  keepalive.on_read(kStart + 250ms);
  EXPECT_FALSE(keepalive.ping_outstanding());
  EXPECT_EQ(keepalive.judge(kStart + 302ms, kTiming), KeepaliveVerdict::wait);
  EXPECT_EQ(keepalive.judge(kStart + 351ms, kTiming), KeepaliveVerdict::send_ping);
}

TEST(Keepalive, AStalledSideDoesNotJudge) {
  // The answer may be in the socket, unread, because this side was not running.
  Keepalive keepalive(kStart);
  keepalive.on_ping_sent(kStart + 101ms);
  EXPECT_EQ(keepalive.judge(kStart + 900ms, kTiming, true), KeepaliveVerdict::wait);
  EXPECT_EQ(keepalive.judge(kStart + 900ms, kTiming, false), KeepaliveVerdict::dead);
}

TEST(Keepalive, RelayAndClientTimings) {
  // The relay gives a PING one interval; the client gives the relay two.
  const KeepaliveTiming relay{1s, 1s};
  const KeepaliveTiming client{1s, 2s};
  Keepalive keepalive(kStart);
  keepalive.on_ping_sent(kStart + 1001ms);
  EXPECT_EQ(keepalive.judge(kStart + 2500ms, relay), KeepaliveVerdict::dead);
  EXPECT_EQ(keepalive.judge(kStart + 2500ms, client), KeepaliveVerdict::wait);
  EXPECT_EQ(keepalive.judge(kStart + 3002ms, client), KeepaliveVerdict::dead);
}

TEST(Keepalive, VerdictNames) {
  EXPECT_STREQ(keepalive_verdict_name(KeepaliveVerdict::wait), "wait");
  EXPECT_STREQ(keepalive_verdict_name(KeepaliveVerdict::send_ping), "send_ping");
  EXPECT_STREQ(keepalive_verdict_name(KeepaliveVerdict::dead), "dead");
}

TEST(StallDetector, OnTimeTicksAreNotStalled) {
  StallDetector ticks(kStart);
  EXPECT_FALSE(ticks.on_tick(kStart + 50ms, 100ms));
  EXPECT_FALSE(ticks.on_tick(kStart + 150ms, 100ms));  // exactly late_after: on time
}

TEST(StallDetector, OnlyTheFirstLateTickInARowIsStalled) {
  StallDetector ticks(kStart);
  EXPECT_TRUE(ticks.on_tick(kStart + 500ms, 100ms));
  // Still late: a process that stays slow judges again.
  EXPECT_FALSE(ticks.on_tick(kStart + 1000ms, 100ms));
  EXPECT_FALSE(ticks.on_tick(kStart + 1050ms, 100ms));
  EXPECT_TRUE(ticks.on_tick(kStart + 2000ms, 100ms));
}

TEST(StallDetector, SkippedTicksRestartTheMeasure) {
  StallDetector ticks(kStart);
  ticks.skip(kStart + 400ms);
  EXPECT_FALSE(ticks.on_tick(kStart + 450ms, 100ms));
  EXPECT_TRUE(ticks.on_tick(kStart + 800ms, 100ms));
  // A skip keeps whether the last judged tick was late.
  ticks.skip(kStart + 900ms);
  EXPECT_FALSE(ticks.on_tick(kStart + 1200ms, 100ms));
}

}  // namespace
}  // namespace switchboard::wire
