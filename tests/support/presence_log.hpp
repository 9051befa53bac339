// Test support: the presence changes a client receives on its I/O thread, waited for in order.
// Declare a log before the client it is attached to, so it outlives the thread that feeds it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

#include "switchboard/blocking.hpp"

namespace switchboard::test {

class PresenceLog {
public:
  void attach(client::BlockingClient& client) {
    client.on_presence([this](const client::PresenceChange& change) {
      std::lock_guard lock(mutex_);
      changes_.push_back(change);
      cv_.notify_all();
    });
  }
  std::optional<client::PresenceChange> next(
      std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [&] { return !changes_.empty(); })) return std::nullopt;
    auto change = changes_.front();
    changes_.pop_front();
    return change;
  }

private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<client::PresenceChange> changes_;
};

}  // namespace switchboard::test
