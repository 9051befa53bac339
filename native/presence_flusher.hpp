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
/// nobody sits on pending changes for the rest of its wait.
class PresenceFlusher final : public boost::asio::execution_context::service {
public:
  using key_type = PresenceFlusher;
  static inline boost::asio::execution_context::id id;

  explicit PresenceFlusher(boost::asio::io_context& io);

  /// `session` (of this thread) waits for a tick to write its presence; the ticks run every
  /// `tick` while any session waits. `registry` counts the changes announced.
  void add(std::shared_ptr<Session> session, const Registry& registry, Clock::duration tick);

private:
  void shutdown() override;
  void on_tick();

  boost::asio::steady_timer timer_;
  std::vector<std::shared_ptr<Session>> waiting_;
  std::vector<std::shared_ptr<Session>> ticking_;  // the tick's share; kept for its capacity
  const Registry* registry_ = nullptr;
  std::uint64_t announced_ = 0;  // the registry's count at the last tick (or the first add)
  Clock::duration tick_{};
  bool armed_ = false;
};

}  // namespace switchboard::core::net
