// Test support for the cluster tests: waiting for a condition with a bounded deadline.
#pragma once

#include <chrono>
#include <thread>

namespace switchboard::test {

/// Polls `condition` every 20 ms until it holds (true) or `timeout` passes (false).
template <typename Condition>
bool eventually(Condition&& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace switchboard::test
