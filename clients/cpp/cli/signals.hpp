// Signal handling for the CLI: SIGINT/SIGTERM blocked everywhere, taken by a sigwait() thread.
#pragma once

#include <atomic>
#include <functional>
#include <thread>

namespace switchboard::cli {

/// Call first in main(), before any thread exists: blocks SIGINT and SIGTERM (threads inherit
/// the mask, so only a SignalWatcher receives them) and ignores SIGPIPE (write errors instead).
void block_signals();

/// In a forked child, before exec: unblocks every signal and restores SIGPIPE's default.
/// Async-signal-safe.
void restore_signals_in_child() noexcept;

/// Waits for SIGINT/SIGTERM on its own thread. The first signal calls `on_signal` (on the
/// watcher thread); a second one exits the process at once with 128 + signal.
class SignalWatcher {
public:
  explicit SignalWatcher(std::function<void(int)> on_signal);
  /// Stops the watcher thread; `on_signal` is never called after this returns.
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  /// The signal received, or 0.
  int received() const noexcept { return received_.load(); }

private:
  void run();

  std::function<void(int)> on_signal_;
  std::atomic<int> received_{0};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace switchboard::cli
