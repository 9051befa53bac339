// Per-source-address token buckets that limit how fast one address may open connections.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <unordered_map>

namespace switchboard::core::transport {

/// One token bucket per remote address: `rate` tokens a second, holding at most `burst`. Not
/// thread-safe: the relay touches it only from its single accept coroutine.
class ConnectThrottle {
public:
  using Clock = std::chrono::steady_clock;

  /// `rate` 0 turns throttling off. `max_tracked` caps the addresses remembered at once.
  ConnectThrottle(std::uint32_t rate, std::uint32_t burst, std::size_t max_tracked = 65'536);

  /// Takes a token for `address` at `now`; false when its bucket is empty.
  bool admit(const boost::asio::ip::address& address, Clock::time_point now = Clock::now());

  bool enabled() const noexcept { return rate_ > 0; }
  std::size_t tracked() const noexcept { return buckets_.size(); }

private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point updated{};
  };
  void refill(Bucket& bucket, Clock::time_point now) const;
  /// Forgets buckets that have refilled to full (they behave like a new address anyway).
  void evict_full(Clock::time_point now);

  double rate_;
  double burst_;
  std::size_t max_tracked_;
  std::unordered_map<boost::asio::ip::address, Bucket> buckets_;
  Clock::time_point last_sweep_{};
};

}  // namespace switchboard::core::transport
