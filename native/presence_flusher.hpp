// Each I/O thread's writer of deferred presence: one timer for every session of the thread
// that holds presence changes back.
#pragma once

#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace switchboard::core {
class Registry;
}

namespace switchboard::core::net {

class Session;
using Clock = std::chrono::steady_clock;

/// One per io_context (an asio service: it lives and goes with the context), used only by the
/// thread that runs the context. While sessions wait on it, it ticks; a tick writes every
/// session whose due time has passed, and all of them when the registry announced no change
/// since the tick before: coalescing pays only while changes keep coming, and once they stop
/// nobody sits on pending changes for the rest of its wait. A tick also measures the rate of
/// those changes (smoothed over about 100 ms): at or above the storm rate the relay is in a
/// join storm, and then it takes four ticks without a change to release every held one.
class PresenceFlusher final : public boost::asio::execution_context::service {
public:
  using key_type = PresenceFlusher;
  static inline boost::asio::execution_context::id id;

  explicit PresenceFlusher(boost::asio::io_context& io);

  /// `session` (of this thread) waits for a tick to write its presence; the ticks run every
  /// `tick` while any session waits. `registry` counts the changes announced; `storm_rate`
  /// (changes a second, 0: never) is where a storm starts.
  void add(std::shared_ptr<Session> session, const Registry& registry, Clock::duration tick,
           std::uint32_t storm_rate);

  /// Whether the last tick found a join storm; false while no session waits (no tick runs).
  bool storming() const noexcept { return armed_ && storming_; }

private:
  void shutdown() override;
  void on_tick();

  boost::asio::steady_timer timer_;
  std::vector<std::shared_ptr<Session>> waiting_;
  std::vector<std::shared_ptr<Session>> ticking_;  // the tick's share; kept for its capacity
  const Registry* registry_ = nullptr;
  std::uint64_t announced_ = 0;     // the registry's count at the last tick (or the first add)
  Clock::time_point counted_at_{};  // when announced_ was read
  double rate_ = 0;                 // changes a second, smoothed
  int quiet_ticks_ = 0;             // ticks in a row that found no change
  Clock::duration tick_{};
  std::uint32_t storm_rate_ = 0;
  bool armed_ = false;
  bool storming_ = false;
};

}  // namespace switchboard::core::net
