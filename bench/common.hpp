// Shared helpers of the benchmark programs: flags, JSON lines, percentiles, clocks, /proc reads.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

/// Nanoseconds on CLOCK_MONOTONIC (steady_clock on Linux): comparable across processes.
inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// `--key value` flags after the subcommand; unknown keys are an error when read with get().
class Args {
public:
  Args(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) {
      std::string key = argv[i];
      if (key.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument " + key);
      key = key.substr(2);
      if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
        values_[key] = argv[++i];
      } else {
        values_[key] = std::string(1, '1');
      }
    }
  }
  std::string str(const std::string& key, const std::string& fallback) const {
    auto it = values_.find(key);
    return it == values_.end() ? fallback : it->second;
  }
  std::uint64_t num(const std::string& key, std::uint64_t fallback) const {
    auto it = values_.find(key);
    if (it == values_.end()) return fallback;
    return parse_size(it->second);
  }
  bool has(const std::string& key) const { return values_.count(key) != 0; }

  /// "123", "64K"/"64KiB", "1M"/"1MiB", "1G"/"1GiB" (binary multiples).
  static std::uint64_t parse_size(const std::string& text) {
    std::size_t used = 0;
    const auto value = std::stoull(text, &used);
    std::string unit = text.substr(used);
    if (unit.empty()) return value;
    const char c = unit[0];
    if (c == 'K' || c == 'k') return value << 10;
    if (c == 'M' || c == 'm') return value << 20;
    if (c == 'G' || c == 'g') return value << 30;
    throw std::invalid_argument("bad size " + text);
  }

private:
  std::map<std::string, std::string> values_;
};

/// One flat JSON object, printed as one line.
class Json {
public:
  Json& add(const std::string& key, const std::string& value) {
    std::string escaped;
    for (char c : value) {
      if (c == '"' || c == '\\') escaped += '\\';
      escaped += c;
    }
    fields_.push_back("\"" + key + "\":\"" + escaped + "\"");
    return *this;
  }
  Json& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  Json& add(const std::string& key, double value) {
    char text[64];
    if (!std::isfinite(value)) value = 0;
    std::snprintf(text, sizeof text, "%.6g", value);
    fields_.push_back("\"" + key + "\":" + text);
    return *this;
  }
  Json& add(const std::string& key, std::uint64_t value) {
    fields_.push_back("\"" + key + "\":" + std::to_string(value));
    return *this;
  }
  Json& add(const std::string& key, std::int64_t value) {
    fields_.push_back("\"" + key + "\":" + std::to_string(value));
    return *this;
  }
  Json& add(const std::string& key, int value) { return add(key, std::int64_t{value}); }
  Json& add(const std::string& key, bool value) {
    fields_.push_back("\"" + key + "\":" + (value ? "true" : "false"));
    return *this;
  }
  std::string str() const {
    std::string out = "{";
    for (std::size_t i = 0; i < fields_.size(); ++i) out += (i ? "," : "") + fields_[i];
    return out + "}";
  }
  void print() const {
    std::printf("%s\n", str().c_str());
    std::fflush(stdout);
  }

private:
  std::vector<std::string> fields_;
};

/// Percentile (0..100) of samples by nearest rank; sorts in place.
inline double percentile(std::vector<double>& samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(samples.size())));
  rank = std::clamp<std::size_t>(rank, 1, samples.size());
  return samples[rank - 1];
}

/// Adds p50/p99/p99.9 (µs) of `rtt_ns` samples to `json`.
inline void add_latency(Json& json, std::vector<double>& rtt_ns) {
  json.add("p50_us", percentile(rtt_ns, 50) / 1e3)
      .add("p99_us", percentile(rtt_ns, 99) / 1e3)
      .add("p999_us", percentile(rtt_ns, 99.9) / 1e3)
      .add("max_us", rtt_ns.empty() ? 0.0 : rtt_ns.back() / 1e3);
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
inline std::uint64_t raise_nofile_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur;
}

/// A field of /proc/PID/status in KiB (e.g. "VmRSS", "VmHWM"); 0 when unreadable.
inline std::uint64_t proc_status_kib(long pid, const std::string& field) {
  std::ifstream status(pid <= 0 ? std::string("/proc/self/status")
                                : "/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::istringstream fields(line.substr(field.size() + 1));
      std::uint64_t kib = 0;
      fields >> kib;
      return kib;
    }
  }
  return 0;
}

/// User plus system CPU time process `pid` (0: this one) has used so far, in microseconds; 0
/// when unreadable. On a shared machine this says more about a process's cost than wall time.
inline std::uint64_t proc_cpu_us(long pid) {
  std::ifstream file(pid <= 0 ? std::string("/proc/self/stat")
                              : "/proc/" + std::to_string(pid) + "/stat");
  const std::string stat((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  // The command name (field 2) may hold spaces and parentheses: fields are counted after it.
  const auto name_end = stat.rfind(')');
  if (name_end == std::string::npos) return 0;
  std::istringstream fields(stat.substr(name_end + 1));
  std::string skipped;
  for (int i = 3; i < 14; ++i) fields >> skipped;  // state .. cmajflt
  unsigned long long user = 0, system = 0;         // fields 14 and 15, in clock ticks
  fields >> user >> system;
  return (user + system) * 1'000'000ULL / static_cast<unsigned long long>(sysconf(_SC_CLK_TCK));
}

/// Little-endian u64 store/load for the small in-band reports between bench processes.
inline void put_u64(std::uint8_t* out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
inline std::uint64_t get_u64(const std::uint8_t* in) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(in[i]) << (8 * i);
  return v;
}

/// Deterministic filler so payloads are not all zero.
inline void fill_pattern(std::uint8_t* out, std::size_t n, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (std::size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<std::uint8_t>(x);
  }
}

/// Rate per second of `count` over `ns` nanoseconds.
inline double per_second(double count, std::int64_t ns) {
  return ns > 0 ? count * 1e9 / static_cast<double>(ns) : 0.0;
}

}  // namespace bench
