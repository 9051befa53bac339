// Plain file-descriptor I/O for the CLI: complete writes and an interruptible input reader.
#include "io.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

namespace switchboard::cli {

bool write_all(int fd, std::span<const std::uint8_t> bytes) {
  while (!bytes.empty()) {
    const auto n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  return true;
}

bool write_line(int fd, std::string_view text) {
  std::string line(text);
  line += '\n';
  return write_all(fd, {reinterpret_cast<const std::uint8_t*>(line.data()), line.size()});
}

InputReader::InputReader(int fd) : fd_(fd) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::system_error(errno, std::generic_category(), "pipe2");
  }
}

InputReader::~InputReader() {
  ::close(wake_[0]);
  ::close(wake_[1]);
}

std::ptrdiff_t InputReader::read(std::span<std::uint8_t> out) {
  for (;;) {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (fds[1].revents != 0) return kInterrupted;
    if (fds[0].revents == 0) continue;
    // POLLHUP or POLLERR: read(2) reports the end of input or the error itself.
    const auto n = ::read(fd_, out.data(), out.size());
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    return n;
  }
}

void InputReader::interrupt() noexcept {
  const char byte = 0;
  // The pipe stays readable once written, so every later poll() sees it too; a full pipe (an
  // earlier interrupt) already does the same.
  if (::write(wake_[1], &byte, 1) < 0) {
    // EAGAIN: already interrupted.
  }
}

}  // namespace switchboard::cli
