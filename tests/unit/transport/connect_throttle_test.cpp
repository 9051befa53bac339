// The per-address connect throttle on a controlled clock: budget, refill, eviction and its cap.
#include "transport/connect_throttle.hpp"

#include <gtest/gtest.h>

namespace switchboard::core::transport {
namespace {

using namespace std::chrono_literals;
using boost::asio::ip::make_address;

const ConnectThrottle::Clock::time_point kStart = ConnectThrottle::Clock::time_point{} + 1h;

TEST(ConnectThrottle, BurstThenRateThenRefill) {
  ConnectThrottle throttle(10, 3);  // a token every 100 ms
  const auto a = make_address("10.0.0.1");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(throttle.admit(a, kStart)) << i;
  EXPECT_FALSE(throttle.admit(a, kStart));
  EXPECT_FALSE(throttle.admit(a, kStart + 99ms));
  EXPECT_TRUE(throttle.admit(a, kStart + 100ms));
  EXPECT_FALSE(throttle.admit(a, kStart + 100ms));
  // Other addresses have their own buckets.
  EXPECT_TRUE(throttle.admit(make_address("10.0.0.2"), kStart + 100ms));
  EXPECT_TRUE(throttle.admit(make_address("::1"), kStart + 100ms));
}

TEST(ConnectThrottle, RateZeroIsOff) {
  ConnectThrottle throttle(0, 1);
  const auto a = make_address("10.0.0.1");
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(throttle.admit(a, kStart));
  EXPECT_EQ(throttle.tracked(), 0u);
}

TEST(ConnectThrottle, IdleAddressesAreForgottenAndTheTableIsCapped) {
  ConnectThrottle throttle(10, 2, 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(throttle.admit(make_address("10.0.0." + std::to_string(i)), kStart));
  }
  EXPECT_EQ(throttle.tracked(), 4u);
  // At the cap with every bucket mid-burst: a new address is admitted but not tracked.
  EXPECT_TRUE(throttle.admit(make_address("10.0.1.1"), kStart + 1ms));
  EXPECT_EQ(throttle.tracked(), 4u);
  // Once refilled (idle), the old buckets are swept away.
  EXPECT_TRUE(throttle.admit(make_address("10.0.1.2"), kStart + 2s));
  EXPECT_EQ(throttle.tracked(), 1u);
}

}  // namespace
}  // namespace switchboard::core::transport
