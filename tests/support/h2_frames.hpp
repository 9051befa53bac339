// Test support: HTTP/2 frames and HPACK header blocks written by hand, for driving the gRPC
// door's guard and gRPC itself below any gRPC client library.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace switchboard::test::h2 {

using Bytes = std::vector<std::uint8_t>;

enum Type : std::uint8_t {
  kData = 0x0,
  kHeaders = 0x1,
  kPriority = 0x2,
  kRstStream = 0x3,
  kSettings = 0x4,
  kPing = 0x6,
  kGoaway = 0x7,
  kWindowUpdate = 0x8,
  kContinuation = 0x9,
};
enum Flag : std::uint8_t { kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4 };

inline Bytes preface() {
  const std::string_view text = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  return Bytes(text.begin(), text.end());
}

inline void put32(Bytes& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>(value >> shift));
}

/// A frame header for `length` payload bytes followed by `payload` (zeros when shorter).
inline Bytes frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream,
                   const Bytes& payload, std::size_t length = static_cast<std::size_t>(-1)) {
  if (length == static_cast<std::size_t>(-1)) length = payload.size();
  Bytes out;
  out.push_back(static_cast<std::uint8_t>(length >> 16));
  out.push_back(static_cast<std::uint8_t>(length >> 8));
  out.push_back(static_cast<std::uint8_t>(length));
  out.push_back(type);
  out.push_back(flags);
  put32(out, stream);
  out.insert(out.end(), payload.begin(), payload.end());
  out.resize(9 + length, 0);
  return out;
}

inline Bytes settings(const std::vector<std::pair<std::uint16_t, std::uint32_t>>& entries = {}) {
  Bytes payload;
  for (const auto& [id, value] : entries) {
    payload.push_back(static_cast<std::uint8_t>(id >> 8));
    payload.push_back(static_cast<std::uint8_t>(id));
    put32(payload, value);
  }
  return frame(kSettings, 0, 0, payload);
}

/// An HPACK integer with an `prefix_bits`-bit prefix, the first byte's other bits `first`.
inline void hpack_integer(Bytes& out, std::uint8_t first, int prefix_bits, std::size_t value) {
  const std::size_t limit = (1U << prefix_bits) - 1;
  if (value < limit) {
    out.push_back(static_cast<std::uint8_t>(first | value));
    return;
  }
  out.push_back(static_cast<std::uint8_t>(first | limit));
  value -= limit;
  while (value >= 128) {
    out.push_back(static_cast<std::uint8_t>((value % 128) | 128));
    value /= 128;
  }
  out.push_back(static_cast<std::uint8_t>(value));
}

/// One header field as an HPACK literal without indexing, with a literal name (no Huffman).
inline void literal(Bytes& out, std::string_view name, std::string_view value) {
  out.push_back(0x00);
  hpack_integer(out, 0, 7, name.size());
  out.insert(out.end(), name.begin(), name.end());
  hpack_integer(out, 0, 7, value.size());
  out.insert(out.end(), value.begin(), value.end());
}

/// The header block of a gRPC request to `path`.
inline Bytes grpc_request_headers(std::string_view path) {
  Bytes block;
  literal(block, ":method", "POST");
  literal(block, ":scheme", "http");
  literal(block, ":path", path);
  literal(block, ":authority", "relay");
  literal(block, "content-type", "application/grpc");
  literal(block, "te", "trailers");
  return block;
}

/// A gRPC length-prefixed message (uncompressed).
inline Bytes grpc_message(const std::string& serialized) {
  Bytes out{0};
  put32(out, static_cast<std::uint32_t>(serialized.size()));
  out.insert(out.end(), serialized.begin(), serialized.end());
  return out;
}

inline Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

}  // namespace switchboard::test::h2
