// Test support for the cluster tests: a thread that polls what every relay of a cluster serves
// (its admin /channels) and counts the moments two relays both serve one channel.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/child_server.hpp"
#include "switchboard/wire/uuid.hpp"

namespace switchboard::test {

class ServingChecker {
public:
  using Clock = std::chrono::steady_clock;

  /// A channel seen served by `relay` at two reads in a row, and by `other` in between.
  struct DoubleServe {
    std::size_t channel = 0;  ///< index into the channels given
    std::size_t relay = 0;    ///< indexes into the admin ports given
    std::size_t other = 0;
    Clock::time_point at{};
  };

  struct Options {
    /// Bounds a read; a relay that does not answer in time (stopped, frozen) serves nothing.
    std::chrono::milliseconds read_timeout{5000};
    std::chrono::milliseconds pause{0};  ///< between rounds
    int max_rounds = 2000;               ///< the thread stops by itself after this many
  };

  /// Starts polling the relays whose admin endpoints are on `admin_ports` (127.0.0.1) at once.
  ServingChecker(std::vector<std::uint16_t> admin_ports, std::vector<Uuid> channels,
                 Options options)
      : admin_ports_(std::move(admin_ports)),
        channels_(std::move(channels)),
        options_(options),
        thread_([this] { run(); }) {}
  ~ServingChecker() { stop(); }
  ServingChecker(const ServingChecker&) = delete;
  ServingChecker& operator=(const ServingChecker&) = delete;

  void stop() {
    running_ = false;
    if (thread_.joinable()) thread_.join();
  }
  int rounds() const { return rounds_.load(); }
  std::size_t double_serves() const {
    std::lock_guard lock(mutex_);
    return found_.size();
  }
  std::vector<DoubleServe> found() const {
    std::lock_guard lock(mutex_);
    return found_;
  }
  /// How many relays served `channel` (an index) at the last completed round; -1 before one.
  int serving(std::size_t channel) const {
    std::lock_guard lock(mutex_);
    if (last_.empty()) return -1;
    int count = 0;
    for (const auto& relay : last_) count += relay[channel] ? 1 : 0;
    return count;
  }

private:
  // Whether each channel is listed with at least one peer; all false when there is no answer.
  std::vector<bool> read(std::uint16_t admin) const {
    std::vector<bool> out(channels_.size(), false);
    const auto response = http_request(admin, "GET", "/channels", options_.read_timeout);
    if (response.status != 200) return out;
    for (std::size_t c = 0; c < channels_.size(); ++c) {
      const auto key = "\"id\":\"" + channels_[c].to_string() + "\",\"peers\":";
      const auto at = response.body.find(key);
      out[c] = at != std::string::npos &&
               std::strtoul(response.body.c_str() + at + key.size(), nullptr, 10) > 0;
    }
    return out;
  }

  void run() {
    // Relays are read one after another, not at one instant: a channel moving between two
    // polls would look served twice. So a relay counts as serving between two of its reads
    // that both saw peers, and a double serve is another relay seen serving in between.
    std::vector<std::vector<bool>> previous;
    for (int round = 0; running_.load() && round < options_.max_rounds; ++round) {
      std::vector<std::vector<bool>> current;
      for (const auto port : admin_ports_) current.push_back(read(port));
      std::vector<DoubleServe> found;
      for (std::size_t i = 0; !previous.empty() && i < current.size(); ++i) {
        for (std::size_t c = 0; c < channels_.size(); ++c) {
          if (!previous[i][c] || !current[i][c]) continue;
          for (std::size_t j = 0; j < current.size(); ++j) {
            // Read after i's first read and before its second: j's read of this round if it
            // comes earlier in the order, else of the previous round.
            if (j != i && (j < i ? current[j][c] : previous[j][c])) {
              found.push_back({c, i, j, Clock::now()});
            }
          }
        }
      }
      {
        std::lock_guard lock(mutex_);
        found_.insert(found_.end(), found.begin(), found.end());
        last_ = current;
      }
      previous = std::move(current);
      rounds_.fetch_add(1);
      if (options_.pause.count() > 0) std::this_thread::sleep_for(options_.pause);
    }
  }

  const std::vector<std::uint16_t> admin_ports_;
  const std::vector<Uuid> channels_;
  const Options options_;
  std::atomic<bool> running_{true};
  std::atomic<int> rounds_{0};
  mutable std::mutex mutex_;
  std::vector<DoubleServe> found_;
  std::vector<std::vector<bool>> last_;
  std::thread thread_;  // last: starts once everything it reads is in place
};

}  // namespace switchboard::test
