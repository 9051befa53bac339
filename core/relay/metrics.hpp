// The Prometheus text exposition the admin endpoint serves, written by the relay and its doors.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "relay/sharded_counter.hpp"

namespace switchboard::core {

/// Builds the text exposition format (version 0.0.4): a family's HELP and TYPE, then its samples.
/// Not thread-safe; one writer per scrape.
class MetricsWriter {
public:
  /// Starts a metric family: its HELP and TYPE lines.
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void sample(std::string_view name, std::string_view labels, std::int64_t value) {
    if (labels.empty()) {
      out_ += fmt::format("{} {}\n", name, value);
    } else {
      out_ += fmt::format("{}{{{}}} {}\n", name, labels, value);
    }
  }
  std::string take() { return std::move(out_); }

  static std::int64_t load(const std::atomic<std::uint64_t>& value) {
    return static_cast<std::int64_t>(value.load(std::memory_order_relaxed));
  }
  static std::int64_t load(const std::atomic<std::int64_t>& value) {
    return value.load(std::memory_order_relaxed);
  }
  static std::int64_t load(const ShardedCounter<std::uint64_t>& value) {
    return static_cast<std::int64_t>(value.load());
  }
  static std::int64_t load(const ShardedCounter<std::int64_t>& value) { return value.load(); }

private:
  std::string out_;
};

}  // namespace switchboard::core
