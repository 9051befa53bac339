// The progress display of long transfers on stderr: bytes, rate, elapsed time, ETA.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace switchboard::cli {

/// --progress / --no-progress as given on the command line.
struct ProgressFlags {
  bool force_on = false;
  bool force_off = false;
  /// On when forced on; off when forced off; else on exactly when stderr is a terminal.
  bool enabled() const;
};

/// The bytes left to read from `fd` when it is a regular file (a redirected file: its size
/// from the current offset); nullopt for a pipe, a terminal or a socket.
std::optional<std::uint64_t> remaining_input_size(int fd);

/// One transfer's progress. On a terminal, a live line on stderr refreshed at most four times a
/// second ("\r", cleared at the end); on anything else only the final line. The final line,
/// written by finish(), reads e.g. "switchboard: sent 10485760 bytes, received 10485760 bytes in
/// 1.204 s (8.3 MiB/s)". Nothing is ever written to stdout. A disabled Progress does nothing.
/// Thread-safety: add_sent and add_received may be called from any thread; finish from one.
class Progress {
public:
  /// `total`: the bytes to send when known (then the line shows a percentage and an ETA).
  /// `sends`/`receives`: which counts the lines show.
  Progress(bool enabled, bool sends, bool receives, std::optional<std::uint64_t> total);
  /// finish(), if not done yet.
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void add_sent(std::uint64_t bytes) noexcept { sent_.fetch_add(bytes, std::memory_order_relaxed); }
  void add_received(std::uint64_t bytes) noexcept {
    received_.fetch_add(bytes, std::memory_order_relaxed);
  }
  /// Stops refreshing, clears the live line and writes the final one. Idempotent.
  void finish();

private:
  using Clock = std::chrono::steady_clock;
  void refresh_loop();
  std::string live_line() const;
  std::string final_line() const;

  const bool enabled_;
  const bool live_;  // stderr is a terminal: the line is redrawn in place
  const bool sends_;
  const bool receives_;
  const std::optional<std::uint64_t> total_;
  const Clock::time_point started_ = Clock::now();
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> received_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool finished_ = false;
  std::thread refresher_;
};

}  // namespace switchboard::cli
