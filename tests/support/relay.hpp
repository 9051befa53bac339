// Test support: an in-process relay on an ephemeral loopback port, and helpers to drive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "server/server.hpp"

namespace switchboard::test {

/// A relay started in this process on 127.0.0.1:0; shut down (drained) on destruction.
class InProcessRelay {
public:
  explicit InProcessRelay(core::Limits limits = {}, unsigned threads = 2);
  /// A relay with `config` (its listen addresses replaced by 127.0.0.1:0).
  explicit InProcessRelay(core::ServerConfig config);
  ~InProcessRelay();

  std::uint16_t port() const { return server_->core_endpoint().port(); }
  core::Server& server() { return *server_; }
  core::Counters& counters() { return server_->context().counters; }
  core::Registry& registry() { return server_->context().registry; }
  /// Drains and waits for the relay to stop.
  void shutdown();

private:
  std::unique_ptr<core::Server> server_;
  bool stopped_ = false;
};

/// Limits with short timers so time-based behaviour is testable quickly.
core::Limits fast_limits();

/// Polls `condition` until it holds or `timeout` passes; returns whether it held. For state
/// that has no event to wait on (a counter on the relay), never as a stand-in for an event.
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

/// Resident set size of this process or of `pid`, in bytes.
std::size_t resident_bytes(int pid = 0);

}  // namespace switchboard::test
