// Soak bodies: deterministic pseudo-random content, sizes and chunking, and a streaming checksum.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace switchboard::soak {

/// 64-bit FNV-1a over little-endian 8-byte words gathered across chunk boundaries, finished with
/// the length: the value does not depend on how the bytes were chunked, and it is about eight
/// times cheaper than byte-wise FNV, which matters when the driver shares two cores with the relay.
class BodyHash {
public:
  void update(std::span<const std::uint8_t> bytes) {
    std::size_t i = 0;
    while (pending_bytes_ != 0 && i < bytes.size()) take_byte(bytes[i++]);
    for (; i + 8 <= bytes.size(); i += 8) {
      std::uint64_t word = 0;
      std::memcpy(&word, bytes.data() + i, 8);
      mix(word);
    }
    while (i < bytes.size()) take_byte(bytes[i++]);
    size_ += bytes.size();
  }
  std::uint64_t value() const {
    BodyHash copy = *this;
    if (copy.pending_bytes_ != 0) copy.mix(copy.pending_);
    copy.mix(size_);
    return copy.hash_;
  }
  std::uint64_t size() const { return size_; }

private:
  void take_byte(std::uint8_t byte) {
    pending_ |= std::uint64_t{byte} << (8 * pending_bytes_);
    if (++pending_bytes_ == 8) {
      mix(pending_);
      pending_ = 0;
      pending_bytes_ = 0;
    }
  }
  void mix(std::uint64_t word) {
    hash_ = (hash_ ^ word) * 0x100000001B3ULL;
    hash_ ^= hash_ >> 29;
  }

  std::uint64_t hash_ = 0xCBF29CE484222325ULL;
  std::uint64_t pending_ = 0;
  unsigned pending_bytes_ = 0;
  std::uint64_t size_ = 0;
};

/// Fills `out` with xorshift64* output seeded by `seed`.
inline void fill_body(std::span<std::uint8_t> out, std::uint64_t seed) {
  std::uint64_t x = seed | 1;
  std::size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    const std::uint64_t word = x * 0x2545F4914F6CDD1DULL;
    std::memcpy(out.data() + i, &word, 8);
  }
  for (; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(x >> (i % 8 * 8));
}

/// A size drawn log-uniformly from [1, max_bytes], or 0 with probability `zero_share`.
inline std::size_t log_uniform_size(std::mt19937_64& rng, std::size_t max_bytes,
                                    double zero_share = 0.0) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  if (unit(rng) < zero_share) return 0;
  const double exponent = unit(rng) * std::log(static_cast<double>(max_bytes));
  const auto size = static_cast<std::size_t>(std::exp(exponent));
  return size < 1 ? 1 : (size > max_bytes ? max_bytes : size);
}

inline std::string to_hex(std::uint64_t value) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4)
    text[static_cast<std::size_t>(i)] = kDigits[value & 15];
  return text;
}

inline std::uint64_t from_hex(const std::string& text) {
  return text.empty() ? 0 : std::stoull(text, nullptr, 16);
}

}  // namespace switchboard::soak
