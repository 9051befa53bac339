// Plain file-descriptor I/O for the CLI: complete writes and an interruptible input reader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace switchboard::cli {

/// Writes all of `bytes` to `fd`, retrying partial writes and EINTR. False on error (errno set).
bool write_all(int fd, std::span<const std::uint8_t> bytes);
/// Writes `text` plus a newline in one write(2) (lines from several threads never interleave).
bool write_line(int fd, std::string_view text);

/// Reads from one descriptor (stdin) with read(2); interrupt() wakes a blocked read from any
/// thread. Owns a wake-up pipe, not the descriptor it reads.
class InputReader {
public:
  static constexpr std::ptrdiff_t kInterrupted = -2;

  explicit InputReader(int fd);
  ~InputReader();
  InputReader(const InputReader&) = delete;
  InputReader& operator=(const InputReader&) = delete;

  /// Bytes read (> 0), 0 at the end of input, -1 on error (errno set), or kInterrupted.
  std::ptrdiff_t read(std::span<std::uint8_t> out);
  /// Makes the current and every later read() return kInterrupted.
  void interrupt() noexcept;

private:
  int fd_;
  int wake_[2] = {-1, -1};
};

}  // namespace switchboard::cli
