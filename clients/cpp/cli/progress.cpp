// The progress display of long transfers: a refresh thread drawing one line on stderr.
#include "progress.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iterator>

namespace switchboard::cli {
namespace {

constexpr std::chrono::milliseconds kRefreshInterval{250};

std::string human_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  std::size_t unit = 0;
  while (bytes >= 1024.0 && unit + 1 < std::size(kUnits)) {
    bytes /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, kUnits[unit]);
  return text;
}

std::string clock_text(double seconds) {
  const auto whole = static_cast<long long>(seconds);
  char text[32];
  if (whole >= 3600) {
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", whole / 3600, whole / 60 % 60,
                  whole % 60);
  } else {
    std::snprintf(text, sizeof text, "%lld:%02lld", whole / 60, whole % 60);
  }
  return text;
}

void write_stderr(const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const auto n = ::write(STDERR_FILENO, text.data() + done, text.size() - done);
    if (n <= 0) return;  // nothing to do about a broken stderr
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

bool ProgressFlags::enabled() const {
  if (force_off) return false;
  return force_on || ::isatty(STDERR_FILENO) == 1;
}

std::optional<std::uint64_t> remaining_input_size(int fd) {
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) return std::nullopt;
  const off_t offset = ::lseek(fd, 0, SEEK_CUR);
  if (offset < 0 || offset > info.st_size) return static_cast<std::uint64_t>(info.st_size);
  return static_cast<std::uint64_t>(info.st_size - offset);
}

Progress::Progress(bool enabled, bool sends, bool receives, std::optional<std::uint64_t> total)
    : enabled_(enabled),
      live_(enabled && ::isatty(STDERR_FILENO) == 1),
      sends_(sends),
      receives_(receives),
      total_(total) {
  if (live_) refresher_ = std::thread([this] { refresh_loop(); });
}

Progress::~Progress() { finish(); }

void Progress::finish() {
  {
    std::lock_guard lock(mutex_);
    if (finished_ || !enabled_) return;
    finished_ = true;
    stopping_ = true;
  }
  wake_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  // "\r" and erase-to-end-of-line: the live line gives way to the final one.
  write_stderr((live_ ? "\r\x1b[K" : "") + final_line() + "\n");
}

void Progress::refresh_loop() {
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, kRefreshInterval, [this] { return stopping_; })) {
    lock.unlock();
    std::string line = "\r";
    line += live_line();
    line += "\x1b[K";
    write_stderr(line);
    lock.lock();
  }
}

std::string Progress::live_line() const {
  const double elapsed = std::chrono::duration<double>(Clock::now() - started_).count();
  const auto sent = sent_.load(std::memory_order_relaxed);
  const auto received = received_.load(std::memory_order_relaxed);
  std::string line;
  if (sends_) {
    line += "sent " + human_bytes(static_cast<double>(sent));
    if (total_ && *total_ > 0) {
      line += " / " + human_bytes(static_cast<double>(*total_)) + " (" +
              std::to_string(sent * 100 / *total_) + "%)";
    }
  }
  if (receives_) {
    line +=
        (line.empty() ? "received " : ", received ") + human_bytes(static_cast<double>(received));
  }
  // The rate of the direction that sets the pace: what we send while sending, else what comes.
  const auto moved = sends_ && (!receives_ || !total_ || sent < *total_) ? sent : received;
  const double rate = elapsed > 0 ? static_cast<double>(moved) / elapsed : 0.0;
  line += ", " + human_bytes(rate) + "/s, " + clock_text(elapsed);
  if (sends_ && total_ && sent < *total_ && rate > 0) {
    line += ", ETA " + clock_text(static_cast<double>(*total_ - sent) / rate);
  }
  return line;
}

std::string Progress::final_line() const {
  const double elapsed = std::chrono::duration<double>(Clock::now() - started_).count();
  const auto sent = sent_.load(std::memory_order_relaxed);
  const auto received = received_.load(std::memory_order_relaxed);
  std::string line = "switchboard: ";
  if (sends_) line += "sent " + std::to_string(sent) + " bytes";
  if (receives_) {
    line += std::string(sends_ ? ", " : "") + "received " + std::to_string(received) + " bytes";
  }
  const auto moved = std::max(sent, received);
  char tail[64];
  std::snprintf(tail, sizeof tail, " in %.3f s (%s/s)", elapsed,
                human_bytes(elapsed > 0 ? static_cast<double>(moved) / elapsed : 0.0).c_str());
  return line + tail;
}

}  // namespace switchboard::cli
