// The periodic check that trims the heap once the relay is idle.
#include "grpc_gateway/heap_trim.hpp"

#include <boost/asio/steady_timer.hpp>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace switchboard::gateway {
namespace {

std::uint64_t payload_moved(const core::Counters& counters) {
  const auto sum = [](const core::DoorCounters& door) {
    return door.payload_bytes_in.load(std::memory_order_relaxed) +
           door.payload_bytes_out.load(std::memory_order_relaxed);
  };
  return sum(counters.native) + sum(counters.grpc);
}

class Trimmer final : public HeapTrimmer, public std::enable_shared_from_this<Trimmer> {
public:
  Trimmer(boost::asio::any_io_executor executor, const core::Counters& counters,
          std::chrono::milliseconds period)
      : counters_(counters), period_(period), timer_(std::move(executor)) {}

  void arm() {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    timer_.expires_after(period_);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec) self->check();
    });
  }

  void stop() override {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    timer_.cancel();
  }

private:
  void check() {
    const std::uint64_t moved = payload_moved(counters_);
    if (moved == last_moved_) {
      // Idle for a whole period: once per idle spell, give the kept buffers back.
      if (!trimmed_) {
#if defined(__GLIBC__)
        malloc_trim(0);
#endif
        trimmed_ = true;
      }
    } else {
      last_moved_ = moved;
      trimmed_ = false;
    }
    arm();
  }

  const core::Counters& counters_;
  std::chrono::milliseconds period_;
  std::mutex mutex_;
  boost::asio::steady_timer timer_;
  bool stopped_ = false;
  std::uint64_t last_moved_ = 0;  // only the timer's handler touches these two
  bool trimmed_ = true;
};

}  // namespace

std::shared_ptr<HeapTrimmer> HeapTrimmer::start(boost::asio::any_io_executor executor,
                                                const core::Counters& counters,
                                                std::chrono::milliseconds period) {
  auto trimmer = std::make_shared<Trimmer>(std::move(executor), counters, period);
  trimmer->arm();
  return trimmer;
}

}  // namespace switchboard::gateway
