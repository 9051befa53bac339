// Test support: a broadcast receiver that records checksums, and a patterned broadcast sender.
#pragma once

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "support/clients.hpp"

namespace switchboard::test {

/// A receiver that reads every broadcast whole and records its checksum and sender.
struct Receiver {
  Receiver(std::uint16_t port, const Uuid& channel) : client(options_for(port, channel)) {
    client.on_broadcast([this](client::BlockingStream& message) {
      Checksum sum;
      for (;;) {
        auto chunk = message.read_chunk();
        if (chunk.size == 0) break;
        sum.update(chunk.bytes());
      }
      std::lock_guard lock(mutex);
      sums.push_back(sum);
      from.push_back(message.peer());
    });
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return sums.size();
  }
  // Declared before the client: the client's worker threads write them until it is destroyed.
  std::mutex mutex;
  std::vector<Checksum> sums;
  std::vector<Uuid> from;
  client::BlockingClient client;
};

/// Broadcasts `total` patterned bytes in 64 KiB writes; returns the summary (or the first
/// failed write's outcome) and accumulates what was sent into `sent`.
inline client::Outcome broadcast_pattern(client::BlockingClient& sender, std::uint64_t total,
                                         Checksum& sent) {
  auto stream = sender.broadcast();
  std::vector<std::uint8_t> buffer(64 * 1024);
  for (std::uint64_t offset = 0, index = 0; offset < total; offset += buffer.size()) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), total - offset));
    fill_pattern({buffer.data(), n}, 7, index++);
    sent.update({buffer.data(), n});
    const auto outcome = stream.write({buffer.data(), n});
    if (!outcome.ok()) return outcome;
  }
  if (auto outcome = stream.finish(); !outcome.ok()) return outcome;
  return stream.result();
}

}  // namespace switchboard::test
