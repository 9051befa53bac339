// Test support: client options, payload generation and checksums shared by integration tests.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "switchboard/blocking.hpp"

namespace switchboard::test {

inline client::ConnectOptions options_for(std::uint16_t port, const Uuid& channel,
                                          bool accept_requests = false) {
  client::ConnectOptions options;
  options.port = port;
  options.channel = channel;
  options.accept_requests = accept_requests;
  return options;
}

inline std::span<const std::uint8_t> as_bytes(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

/// Deterministic pseudo-random bytes: block `index` of a stream seeded by `seed`.
inline void fill_pattern(std::span<std::uint8_t> out, std::uint64_t seed, std::uint64_t index) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + index + 1;
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::uint8_t>(x);
  }
}

/// Running 64-bit FNV-1a, enough to tell whether streamed bytes arrived intact and in order.
class Checksum {
public:
  void update(std::span<const std::uint8_t> bytes) {
    for (auto b : bytes) {
      hash_ ^= b;
      hash_ *= 0x100000001B3ULL;
    }
    size_ += bytes.size();
  }
  std::uint64_t value() const { return hash_; }
  std::uint64_t size() const { return size_; }

private:
  std::uint64_t hash_ = 0xCBF29CE484222325ULL;
  std::uint64_t size_ = 0;
};

/// Echo handler: streams every request chunk straight back (full duplex).
inline void echo(client::BlockingStream& request) {
  for (;;) {
    auto chunk = request.read_chunk();
    if (chunk.size == 0) break;
    if (!request.write(chunk.bytes()).ok()) return;
  }
}

}  // namespace switchboard::test
