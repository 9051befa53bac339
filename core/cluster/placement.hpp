// Where a channel belongs in a cluster: rendezvous (highest random weight) hashing of the channel
// over the member node ids. Pure functions, stable across processes, builds and platforms.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "switchboard/wire/uuid.hpp"

namespace switchboard::cluster {

/// The weight of `node_id` for `channel`: a fixed 64-bit mix of both (FNV-1a over the id's
/// bytes, then SplitMix64 finalisers over the channel's two halves). Never std::hash, whose
/// values may change between builds; every relay must compute the same owner.
std::uint64_t placement_weight(std::string_view node_id, const Uuid& channel) noexcept;

/// The member with the highest weight for `channel` (ties, which need a 64-bit collision, go
/// to the smaller id); empty when `members` is. Adding a member moves to it only the channels
/// it now wins; removing one moves only the channels it had.
std::string owner_of(const Uuid& channel, std::span<const std::string> members);

}  // namespace switchboard::cluster
