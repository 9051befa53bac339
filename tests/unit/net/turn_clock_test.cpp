// Unit tests for TurnClock (native/session_stream.hpp): one time per turn, scopes that nest, and
// the clock itself outside a turn.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "native/session_stream.hpp"

namespace switchboard::core::net {
namespace {

TEST(TurnClock, InsideATurnEveryReadIsTheTurnsTime) {
  const auto turn_time = Clock::now() - std::chrono::seconds(5);
  TurnClock::Scope turn(turn_time);
  EXPECT_EQ(TurnClock::now(), turn_time);
  EXPECT_EQ(TurnClock::now(), turn_time);
}

TEST(TurnClock, ScopesNestAndRestoreTheOuterTime) {
  const auto outer_time = Clock::now() - std::chrono::seconds(10);
  const auto inner_time = Clock::now() - std::chrono::seconds(3);
  TurnClock::Scope outer(outer_time);
  {
    TurnClock::Scope inner(inner_time);
    EXPECT_EQ(TurnClock::now(), inner_time);
  }
  EXPECT_EQ(TurnClock::now(), outer_time);
}

TEST(TurnClock, OutsideATurnItIsTheClock) {
  { TurnClock::Scope turn(Clock::now() - std::chrono::hours(1)); }
  const auto before = Clock::now();
  const auto read = TurnClock::now();
  EXPECT_GE(read, before);
  EXPECT_LE(read, Clock::now());
}

TEST(TurnClock, ATurnBelongsToItsThread) {
  const auto turn_time = Clock::now() - std::chrono::hours(2);
  TurnClock::Scope turn(turn_time);
  Clock::time_point other{};
  std::thread([&] { other = TurnClock::now(); }).join();
  EXPECT_GT(other, turn_time + std::chrono::hours(1));
}

}  // namespace
}  // namespace switchboard::core::net
