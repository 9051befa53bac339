// Test support: a client of a shared connection (protocol versions 4 and 5) from a raw socket,
// byte by byte. Owns its socket and the bytes each lane has received.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "support/raw_peer.hpp"
#include "switchboard/wire/codec.hpp"

namespace switchboard::test {

// A client of the shared connection, byte by byte: it frames lanes itself and decodes each
// lane's frames from that lane's bytes.
class RawShared {
public:
  /// `receive_buffer` > 0 fixes SO_RCVBUF before connecting: a shared connection that stops
  /// reading then stalls the relay's writes after a few KiB. `host`: an IPv4 loopback address.
  explicit RawShared(std::uint16_t port, int receive_buffer = 0,
                     const std::string& host = "127.0.0.1") {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    ::inet_pton(AF_INET, host.c_str(), &address.sin_addr);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ADD_FAILURE() << "connect failed";
    }
  }
  ~RawShared() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawShared(const RawShared&) = delete;
  RawShared& operator=(const RawShared&) = delete;

  void send(const std::vector<std::uint8_t>& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const auto n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<std::size_t>(n);
    }
  }
  static std::vector<std::uint8_t> mux_hello(std::uint16_t version = wire::kMuxVersion) {
    std::vector<std::uint8_t> bytes;
    wire::append_mux_hello(bytes, wire::MuxHello{version, {}});
    return bytes;
  }
  static std::vector<std::uint8_t> lane(std::uint32_t id, const std::vector<std::uint8_t>& bytes,
                                        bool fin = false) {
    std::vector<std::uint8_t> out(wire::kHeaderSize);
    wire::encode_lane_header(id, static_cast<std::uint32_t>(bytes.size()), fin, out.data());
    out.insert(out.end(), bytes.begin(), bytes.end());
    return out;
  }
  static std::vector<std::uint8_t> hello(const Uuid& channel, bool accept_requests = false,
                                         std::uint32_t stream_window = 65536) {
    wire::Hello hello;
    hello.channel = channel;
    hello.max_frame = 65536;
    hello.stream_window = stream_window;
    hello.hello_flags = accept_requests ? wire::flags::kAcceptRequests : 0;
    std::vector<std::uint8_t> bytes;
    wire::append_hello(bytes, hello);
    return bytes;
  }

  /// Sends MUX and returns the relay's answer's max_lanes (0 when there is none).
  std::uint32_t open(std::uint16_t version = wire::kMuxVersion) {
    send(mux_hello(version));
    for (const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
         std::chrono::steady_clock::now() < deadline;) {
      if (welcome_) return welcome_->max_lanes;
      if (!pump(deadline)) break;
    }
    return welcome_ ? welcome_->max_lanes : 0;
  }

  /// Opens lane `id` with a HELLO for `channel`; returns the peer id from its WELCOME.
  Uuid join(std::uint32_t id, const Uuid& channel, bool accept_requests = false,
            std::uint32_t stream_window = 65536) {
    send(lane(id, hello(channel, accept_requests, stream_window)));
    auto welcome = expect(id, wire::FrameType::welcome);
    wire::Welcome parsed;
    if (!welcome || wire::parse_welcome(welcome->bytes(), parsed) != wire::DecodeError::none) {
      ADD_FAILURE() << "no WELCOME on lane " << id;
      return {};
    }
    return parsed.peer_id;
  }

  /// The next frame of `type` on lane `id` (others on it skipped) within 5 s.
  std::optional<test::OwnedFrame> expect(std::uint32_t id, wire::FrameType type) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      auto& bytes = lanes_[id];
      while (!bytes.empty()) {
        const auto decoded = wire::decode_frame(bytes, 1 << 20);
        if (decoded.kind != wire::DecodeResult::Kind::frame) break;
        test::OwnedFrame frame{decoded.header, {decoded.payload.begin(), decoded.payload.end()}};
        bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(decoded.consumed));
        if (frame.header.type == type) return frame;
      }
      if (!pump(deadline)) return std::nullopt;
    }
  }
  /// Lanes in the order their first bytes from the relay arrived.
  const std::vector<std::uint32_t>& arrival_order() const { return arrival_order_; }
  /// The relay's MUX answer, once open() has returned.
  const std::optional<wire::MuxWelcome>& welcome() const { return welcome_; }
  /// Whether lane `id` ends (the relay's FIN) within 5 s.
  bool expect_lane_end(std::uint32_t id) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!ended_.contains(id)) {
      if (!pump(deadline)) return false;
    }
    return true;
  }
  /// The ERROR the relay sends on the shared connection itself, then its close.
  std::optional<wire::Error> expect_connection_error() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!connection_error_) {
      if (!pump(deadline)) break;
    }
    return connection_error_;
  }
  bool expect_closed() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (pump(deadline)) {
    }
    return eof_;
  }
  void abort() {
    linger hard{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    ::close(fd_);
    fd_ = -1;
  }

private:
  // Reads once (until `deadline`) and sorts what came into lanes; false on timeout or close.
  bool pump(std::chrono::steady_clock::time_point deadline) {
    if (eof_) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd waiting{fd_, POLLIN, 0};
    if (::poll(&waiting, 1, static_cast<int>(left.count())) <= 0) return false;
    std::uint8_t chunk[65536];
    const auto n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    in_.insert(in_.end(), chunk, chunk + n);
    for (;;) {
      if (in_.size() < wire::kHeaderSize) break;
      const auto header = wire::read_header(in_.data());
      if (in_.size() < wire::kHeaderSize + header.length) break;
      const wire::Bytes payload(in_.data() + wire::kHeaderSize, header.length);
      const auto type = static_cast<std::uint8_t>(header.type);
      if (type == wire::kMuxFrameType) {
        wire::MuxWelcome welcome;
        EXPECT_EQ(wire::parse_mux_welcome(payload, welcome), wire::DecodeError::none);
        welcome_ = welcome;
      } else if (type == wire::kLaneFrameType) {
        EXPECT_FALSE(ended_.contains(header.stream)) << "bytes after FIN on lane " << header.stream;
        if (std::find(arrival_order_.begin(), arrival_order_.end(), header.stream) ==
            arrival_order_.end()) {
          arrival_order_.push_back(header.stream);
        }
        auto& bytes = lanes_[header.stream];
        bytes.insert(bytes.end(), payload.begin(), payload.end());
        if ((header.flags & wire::kLaneFin) != 0) ended_.insert({header.stream, true});
      } else if (type == static_cast<std::uint8_t>(wire::FrameType::error)) {
        wire::Error error;
        EXPECT_EQ(wire::parse_error(payload, error), wire::DecodeError::none);
        connection_error_ = error;
      } else {
        ADD_FAILURE() << "unexpected frame type " << int{type} << " on a shared connection";
      }
      in_.erase(in_.begin(),
                in_.begin() + static_cast<std::ptrdiff_t>(wire::kHeaderSize + header.length));
    }
    return true;
  }

  int fd_ = -1;
  bool eof_ = false;
  std::vector<std::uint8_t> in_;
  std::optional<wire::MuxWelcome> welcome_;
  std::optional<wire::Error> connection_error_;
  std::map<std::uint32_t, std::vector<std::uint8_t>> lanes_;
  std::map<std::uint32_t, bool> ended_;
  std::vector<std::uint32_t> arrival_order_;
};

}  // namespace switchboard::test
