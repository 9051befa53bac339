// Test support: limits and timing rules for tests of receivers that stop draining.
#pragma once

#include <gtest/gtest.h>

#include <chrono>

#include "support/receivers.hpp"
#include "support/relay.hpp"

namespace switchboard::test {

inline constexpr std::uint64_t kBroadcastBytes = 8 * 1024 * 1024;

/// Keepalive is long, so that only the slow-consumer rules can end a stall during a test; the
/// idle timeout bounds what a relay without them does (hold the broadcast until it), so a
/// regression fails instead of hanging.
inline core::Limits stall_limits() {
  using namespace std::chrono_literals;
  auto limits = fast_limits();
  limits.slow_consumer_timeout = 1s;
  limits.keepalive_interval = 60s;
  limits.default_idle_timeout = 20s;
  return limits;
}

struct TimedOutcome {
  client::Outcome outcome;
  std::chrono::steady_clock::duration elapsed;
};

inline TimedOutcome timed_broadcast(client::BlockingClient& sender, Checksum& sent) {
  const auto start = std::chrono::steady_clock::now();
  auto outcome = broadcast_pattern(sender, kBroadcastBytes, sent);
  return {std::move(outcome), std::chrono::steady_clock::now() - start};
}

/// A fresh channel with two healthy receivers and a sender, and how long one broadcast to them
/// takes there (the baseline a stalled receiver's delay is measured against).
struct BroadcastScene {
  explicit BroadcastScene(std::uint16_t port) : channel(Uuid::random()), sender(port, channel) {
    for (int i = 0; i < 2; ++i) receivers.push_back(std::make_unique<Receiver>(port, channel));
    sent.emplace_back();
    baseline = timed_broadcast(sender.client, sent.back());
  }
  Uuid channel;
  std::vector<std::unique_ptr<Receiver>> receivers;
  Receiver sender;
  std::vector<Checksum> sent;  // what each broadcast sent, the baseline's first
  TimedOutcome baseline;
};

/// A broadcast with one stalled receiver may take what the same broadcast took without it, plus
/// the slow-consumer timeout, plus a second: the rule, against a baseline measured in the same
/// run rather than a guess at how fast the machine is today.
inline void expect_within_bound(std::chrono::steady_clock::duration stalled,
                                std::chrono::steady_clock::duration baseline,
                                const core::Limits& limits) {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  const auto bound = baseline + limits.slow_consumer_timeout + std::chrono::seconds(1);
  EXPECT_LT(stalled, bound) << "stalled " << duration_cast<milliseconds>(stalled).count()
                            << " ms, bound " << duration_cast<milliseconds>(bound).count() << " ms";
}

}  // namespace switchboard::test
