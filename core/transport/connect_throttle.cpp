// Per-source-address connect throttling (token buckets) for the native accept loop.
#include "transport/connect_throttle.hpp"

#include <algorithm>

namespace switchboard::core::transport {

ConnectThrottle::ConnectThrottle(std::uint32_t rate, std::uint32_t burst, std::size_t max_tracked)
    : rate_(rate), burst_(std::max<std::uint32_t>(burst, 1)), max_tracked_(max_tracked) {}

void ConnectThrottle::refill(Bucket& bucket, Clock::time_point now) const {
  const std::chrono::duration<double> elapsed = now - bucket.updated;
  if (elapsed.count() > 0) {
    bucket.tokens = std::min(burst_, bucket.tokens + elapsed.count() * rate_);
    bucket.updated = now;
  }
}

void ConnectThrottle::evict_full(Clock::time_point now) {
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    refill(it->second, now);
    it = it->second.tokens >= burst_ ? buckets_.erase(it) : std::next(it);
  }
  last_sweep_ = now;
}

bool ConnectThrottle::admit(const boost::asio::ip::address& address, Clock::time_point now) {
  if (!enabled()) return true;
  // A full bucket is the same as no bucket, so idle addresses are dropped: once a second by a
  // sweep, and every 100 ms while the table is at its cap (a sweep walks the whole table, so not
  // on every accept). Should every tracked address still be mid-burst at the cap (a flood from
  // many addresses), a new address is admitted untracked rather than evicting one that is being
  // throttled.
  const auto since_sweep = now - last_sweep_;
  if (since_sweep >= std::chrono::seconds(1) ||
      (buckets_.size() >= max_tracked_ && since_sweep >= std::chrono::milliseconds(100))) {
    evict_full(now);
  }
  auto it = buckets_.find(address);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_tracked_) return true;
    it = buckets_.emplace(address, Bucket{burst_, now}).first;
  }
  auto& bucket = it->second;
  refill(bucket, now);
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

}  // namespace switchboard::core::transport
