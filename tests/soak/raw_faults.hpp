// Soak raw faults: hostile bytes on fresh TCP connections (garbage, half frames, oversized
// headers, slowloris dribbles, a joined peer that aborts mid-request), each with the relay's
// expected reaction checked.
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "soak/ledger.hpp"
#include "switchboard/wire/uuid.hpp"

namespace switchboard::soak {

struct RawFaultContext {
  std::uint16_t port = 0;
  std::vector<Uuid> channels;
  std::chrono::milliseconds handshake_timeout{2000};
  Ledger* ledger = nullptr;
};

/// Runs one raw fault chosen by `rng`; returns its kind name. Violations (the relay kept a bad
/// connection open past its limit) are appended to `violations`.
std::string run_raw_fault(const RawFaultContext& context, std::mt19937_64& rng,
                          std::vector<std::string>& violations);

}  // namespace switchboard::soak
