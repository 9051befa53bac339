// The relay's malloc thresholds, arena count and huge-page heap.
#include "server/heap_tuning.hpp"

// A C library header first: it is what defines __GLIBC__ (through <features.h>), so without it
// the check below is false on glibc too and the settings are silently never made.
#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#include <unistd.h>
#endif

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string_view>

namespace switchboard::core {
namespace {

// Above the largest gRPC message the gateway accepts (4 MiB), so message buffers never take
// the mmap/munmap path; the trim threshold leaves the window's worth of buffers in place. One
// arena because malloc_trim cannot release the top of a thread arena: with one per thread the
// idle relay kept tens of MiB, with one it returns below its old idle size (and no slower on
// the relay's few threads).
[[maybe_unused]] constexpr int kMmapThreshold = 8 * 1024 * 1024;
[[maybe_unused]] constexpr int kTrimThreshold = 64 * 1024 * 1024;
[[maybe_unused]] constexpr int kArenas = 1;

constexpr std::string_view kTunables = "GLIBC_TUNABLES";
constexpr std::string_view kHugeTlb = "glibc.malloc.hugetlb";
constexpr const char* kThpMode = "/sys/kernel/mm/transparent_hugepage/enabled";

// The value of glibc.malloc.hugetlb in GLIBC_TUNABLES ("name=value:name=value"), or empty.
std::string_view huge_tlb_setting(std::string_view tunables) {
  while (!tunables.empty()) {
    const auto end = tunables.find(':');
    const auto entry = tunables.substr(0, end);
    if (entry.size() > kHugeTlb.size() && entry.substr(0, kHugeTlb.size()) == kHugeTlb &&
        entry[kHugeTlb.size()] == '=') {
      return entry.substr(kHugeTlb.size() + 1);
    }
    if (end == std::string_view::npos) break;
    tunables.remove_prefix(end + 1);
  }
  return {};
}

// The kernel's mode, the bracketed word of "always [madvise] never"; empty when unreadable.
std::string thp_mode() {
  std::ifstream file(kThpMode);
  std::string word;
  while (file >> word) {
    if (word.size() > 2 && word.front() == '[' && word.back() == ']') {
      return word.substr(1, word.size() - 2);
    }
  }
  return {};
}

// The value of glibc.malloc.hugetlb this process was started with, read from the environment
// the kernel handed it (glibc may split the variable at its colons or keep only a copy, so the
// entry is looked for anywhere in it); empty when none. A restart that did not take (a C library
// that hides the variable afterwards) therefore never repeats.
std::string started_with_huge_tlb() {
  std::ifstream file("/proc/self/environ", std::ios::binary);
  const std::string environment((std::istreambuf_iterator<char>(file)),
                                std::istreambuf_iterator<char>());
  const std::string key = std::string(kHugeTlb) + "=";
  const auto at = environment.find(key);
  if (at == std::string::npos) return {};
  const auto value = at + key.size();
  const auto end = environment.find_first_of(std::string(":\0", 2), value);
  return environment.substr(value, end == std::string::npos ? std::string::npos : end - value);
}

}  // namespace

void tune_heap() {
#if defined(__GLIBC__)
  mallopt(M_ARENA_MAX, kArenas);
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  mallopt(M_TRIM_THRESHOLD, kTrimThreshold);
#endif
}

HugePageHeap huge_page_heap_state() {
#if defined(__GLIBC__)
  const char* tunables = std::getenv(std::string(kTunables).c_str());
  const auto setting = huge_tlb_setting(tunables != nullptr ? tunables : "");
  if (setting == "1") return {true, {}};
  if (!setting.empty()) {
    return {false, "GLIBC_TUNABLES sets glibc.malloc.hugetlb=" + std::string(setting)};
  }
  return {false, "heap_huge_pages is off"};
#else
  return {false, "not built with glibc"};
#endif
}

HugePageHeap restart_on_huge_page_heap(char** argv) {
#if defined(__GLIBC__)
  const char* tunables = std::getenv(std::string(kTunables).c_str());
  // A copy: setenv below replaces the string getenv points into.
  const std::string current = tunables != nullptr ? tunables : "";
  if (!huge_tlb_setting(current).empty()) return huge_page_heap_state();  // set by the operator
  if (const auto started = started_with_huge_tlb(); !started.empty()) {
    if (started == "1") return {true, {}};
    return {false, "started with glibc.malloc.hugetlb=" + started};
  }
  const auto mode = thp_mode();
  if (mode != "always" && mode != "madvise") {
    return {false, mode.empty() ? std::string("the kernel offers no transparent huge pages")
                                : "transparent huge pages are " + mode + " in " + kThpMode};
  }
  std::string value = current;
  if (!value.empty()) value += ':';
  value += std::string(kHugeTlb) + "=1";
  if (::setenv(std::string(kTunables).c_str(), value.c_str(), 1) != 0) {
    return {false, std::string("setenv failed: ") + std::strerror(errno)};
  }
  ::execv("/proc/self/exe", argv);
  // Still here: the program could not be run again (no /proc, say); it goes on as it started.
  const std::string failure = std::string("restart failed: ") + std::strerror(errno);
  if (current.empty()) {
    ::unsetenv(std::string(kTunables).c_str());
  } else {
    ::setenv(std::string(kTunables).c_str(), current.c_str(), 1);
  }
  return {false, failure};
#else
  (void)argv;
  return {false, "not built with glibc"};
#endif
}

}  // namespace switchboard::core
