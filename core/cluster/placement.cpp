// Rendezvous hashing of channels over member ids, with a hash of its own that never changes.
#include "cluster/placement.hpp"

namespace switchboard::cluster {
namespace {

constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ULL;

/// SplitMix64's finaliser: every input bit affects every output bit.
constexpr std::uint64_t mix(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// The channel's bytes as two big-endian halves: the same on every platform.
std::uint64_t half(const Uuid& channel, std::size_t first) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = first; i < first + 8; ++i) value = (value << 8) | channel.bytes[i];
  return value;
}

}  // namespace

std::uint64_t placement_weight(std::string_view node_id, const Uuid& channel) noexcept {
  std::uint64_t node = kFnvOffset;
  for (const char c : node_id) {
    node ^= static_cast<std::uint8_t>(c);
    node *= kFnvPrime;
  }
  return mix(mix(node ^ half(channel, 0)) ^ half(channel, 8));
}

std::string owner_of(const Uuid& channel, std::span<const std::string> members) {
  const std::string* best = nullptr;
  std::uint64_t best_weight = 0;
  for (const auto& member : members) {
    const auto weight = placement_weight(member, channel);
    if (best == nullptr || weight > best_weight || (weight == best_weight && member < *best)) {
      best = &member;
      best_weight = weight;
    }
  }
  return best ? *best : std::string{};
}

}  // namespace switchboard::cluster
