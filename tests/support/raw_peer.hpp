// Test support: a raw TCP peer that speaks frames byte by byte, for bad input and stalled peers.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "switchboard/wire/codec.hpp"

namespace switchboard::test {

/// A decoded frame with its own copy of the payload.
struct OwnedFrame {
  wire::FrameHeader header;
  std::vector<std::uint8_t> payload;
  wire::Bytes bytes() const { return {payload.data(), payload.size()}; }
};

class RawPeer {
public:
  /// `receive_buffer` > 0 fixes the socket's receive buffer (SO_RCVBUF, before connecting), so
  /// a peer that stops reading stalls the relay's writes after a few KiB.
  explicit RawPeer(std::uint16_t port, int receive_buffer = 0, const char* host = "127.0.0.1");
  ~RawPeer();
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  void send(wire::Bytes bytes);
  void send(const std::vector<std::uint8_t>& bytes) { send(wire::Bytes(bytes)); }
  /// Sends HELLO and reads WELCOME and the snapshot; returns the assigned peer id.
  Uuid join(const Uuid& channel, bool accept_requests = false,
            std::uint32_t stream_window = 1 << 20, const Uuid& peer_id = {},
            std::uint16_t version = wire::kProtocolVersion);
  /// The next frame within `timeout`, or nullopt (timeout or connection closed).
  std::optional<OwnedFrame> expect_frame(
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// The next frame of `type`, skipping others (PING answered), within `timeout`.
  std::optional<OwnedFrame> expect_type(
      wire::FrameType type, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// True when the relay closes the connection within `timeout` (frames before it are skipped).
  bool expect_closed(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// True when no frame arrives for `quiet`.
  bool expect_nothing(std::chrono::milliseconds quiet = std::chrono::milliseconds(100));
  /// Closes with RST (SO_LINGER 0): the relay sees a crash, not a goodbye.
  void abort();
  void close();
  /// Whether the relay closed the connection, and bytes read but not yet a whole frame.
  bool closed() const noexcept { return eof_; }
  std::size_t unread_bytes() const noexcept { return buffer_.size(); }
  bool auto_pong = true;

private:
  bool fill(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  std::vector<std::uint8_t> buffer_;
  bool eof_ = false;
};

}  // namespace switchboard::test
