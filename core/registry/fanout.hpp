// The receivers of one broadcast, owned by its source: delivery to each, the credit floor
// (bytes every remaining receiver has written), and the delivery summary.
#pragma once

#include <boost/container/small_vector.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "registry/peer.hpp"

namespace switchboard::core {

/// Not thread-safe: it lives with the broadcast source, on the source's executor.
class Fanout {
public:
  /// Adds the next receiver, number size() (nullptr: it could not take the broadcast and counts
  /// as dropped).
  void add(std::shared_ptr<Endpoint> receiver);
  std::uint32_t size() const noexcept { return static_cast<std::uint32_t>(sinks_.size()); }

  // Each of these returns the bytes that every receiver still in the broadcast has now written
  // and that were not returned before: the credit the source may grant again.

  /// Sends a payload (and the end, with `fin`) to every receiver still in the broadcast.
  std::uint64_t forward(const wire::Slice& payload, bool fin);
  /// Counts `bytes` that every receiver was handed with its offer (the OPEN's body).
  std::uint64_t forwarded_with_offer(std::uint32_t bytes);
  /// Receiver `sink` wrote `bytes` to its client.
  std::uint64_t written(std::uint32_t sink, std::uint32_t bytes);
  /// Receiver `sink` got everything (OK) or left the broadcast (any other status).
  std::uint64_t done(std::uint32_t sink, Status status);

  /// Aborts the broadcast at every receiver still in it.
  void reset_all(Status status, const std::string& message);

  bool complete() const noexcept { return pending_ == 0; }
  std::uint32_t delivered() const noexcept { return delivered_; }
  std::uint32_t dropped() const noexcept { return dropped_; }

private:
  struct Sink {
    std::shared_ptr<Endpoint> endpoint;
    std::uint64_t written = 0;
    bool active = false;
  };
  std::uint64_t advance_floor();

  boost::container::small_vector<Sink, 1> sinks_;  // one receiver: no allocation
  std::uint64_t received_ = 0;
  std::uint64_t released_ = 0;
  std::uint32_t pending_ = 0;
  std::uint32_t delivered_ = 0;
  std::uint32_t dropped_ = 0;
};

}  // namespace switchboard::core
