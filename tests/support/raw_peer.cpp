// Raw frame-level test peer over a plain blocking socket with poll() timeouts.
#include "support/raw_peer.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

namespace switchboard::test {

RawPeer::RawPeer(std::uint16_t port, int receive_buffer, const char* host) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) throw std::runtime_error("socket failed");
  if (receive_buffer > 0) {
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  if (::inet_pton(AF_INET, host, &address.sin_addr) != 1) {
    throw std::runtime_error(std::string("not an IPv4 address: ") + host);
  }
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    throw std::runtime_error("connect failed");
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RawPeer::~RawPeer() { close(); }

void RawPeer::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void RawPeer::abort() {
  linger option{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &option, sizeof option);
  close();
}

void RawPeer::send(wire::Bytes bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const auto n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;  // the relay may already have closed us: that is what some tests expect
    }
    sent += static_cast<std::size_t>(n);
  }
}

bool RawPeer::fill(std::chrono::steady_clock::time_point deadline) {
  if (eof_ || fd_ < 0) return false;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
  std::uint8_t chunk[64 * 1024];
  const auto n = ::recv(fd_, chunk, sizeof chunk, 0);
  if (n <= 0) {
    eof_ = true;
    return false;
  }
  buffer_.insert(buffer_.end(), chunk, chunk + n);
  return true;
}

std::optional<OwnedFrame> RawPeer::expect_frame(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto result = wire::decode_frame(buffer_, 1U << 30);
    if (result.kind == wire::DecodeResult::Kind::frame) {
      OwnedFrame frame{result.header, {result.payload.begin(), result.payload.end()}};
      buffer_.erase(buffer_.begin(),
                    buffer_.begin() + static_cast<std::ptrdiff_t>(result.consumed));
      return frame;
    }
    if (result.kind == wire::DecodeResult::Kind::error) return std::nullopt;
    if (!fill(deadline)) return std::nullopt;
  }
}

std::optional<OwnedFrame> RawPeer::expect_type(wire::FrameType type,
                                               std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto frame = expect_frame(left);
    if (!frame) return std::nullopt;
    if (frame->header.type == type) return frame;
    if (frame->header.type == wire::FrameType::ping && auto_pong &&
        (frame->header.flags & wire::flags::kAck) == 0) {
      std::uint64_t opaque = 0;
      (void)wire::parse_ping(frame->bytes(), opaque);
      std::vector<std::uint8_t> pong;
      wire::append_ping(pong, opaque, true);
      send(pong);
    }
  }
}

bool RawPeer::expect_closed(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!eof_) {
    buffer_.clear();
    if (!fill(deadline) && !eof_) return false;
  }
  return true;
}

bool RawPeer::expect_nothing(std::chrono::milliseconds quiet) {
  return !expect_frame(quiet).has_value() && !eof_;
}

Uuid RawPeer::join(const Uuid& channel, bool accept_requests, std::uint32_t stream_window,
                   const Uuid& peer_id, std::uint16_t version) {
  wire::Hello hello;
  hello.version = version;
  hello.channel = channel;
  hello.peer_id = peer_id;
  hello.hello_flags = accept_requests ? wire::flags::kAcceptRequests : 0;
  hello.max_frame = 1 << 20;
  hello.stream_window = stream_window;
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello);
  send(bytes);
  auto welcome_frame = expect_frame();
  if (!welcome_frame || welcome_frame->header.type != wire::FrameType::welcome) {
    throw std::runtime_error("no WELCOME");
  }
  wire::Welcome welcome;
  if (wire::parse_welcome(welcome_frame->bytes(), welcome) != wire::DecodeError::none) {
    throw std::runtime_error("bad WELCOME");
  }
  for (;;) {
    auto snapshot = expect_frame();
    if (!snapshot || snapshot->header.type != wire::FrameType::presence) {
      throw std::runtime_error("no snapshot");
    }
    if ((snapshot->header.flags & wire::flags::kMore) == 0) break;
  }
  return welcome.peer_id;
}

}  // namespace switchboard::test
