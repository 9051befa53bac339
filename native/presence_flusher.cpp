// Each I/O thread's writer of deferred presence.
#include "native/presence_flusher.hpp"

#include <cmath>

#include "native/handoff.hpp"
#include "native/session.hpp"
#include "registry/registry.hpp"

namespace switchboard::core::net {

namespace {

// The rate that makes a storm is smoothed over about this long, so that one tick in which no
// join landed (the joiners' own process busy, a thread descheduled) does not end it.
constexpr double kRateWindowSeconds = 0.1;
// In a storm, the quiet that releases every held change is this many ticks without a change:
// one gap between joins would otherwise release them all, and the writes that follow slow the
// joiners down enough to make the next gap.
constexpr int kStormQuietTicks = 4;

}  // namespace

PresenceFlusher::PresenceFlusher(boost::asio::io_context& io)
    : boost::asio::execution_context::service(io), timer_(io) {}

void PresenceFlusher::add(std::shared_ptr<Session> session, const Registry& registry,
                          Clock::duration tick, std::uint32_t storm_rate) {
  if (registry_ != &registry || !armed_) {
    // Idle until now: the rate and the quiet test start from here, not from the last tick.
    registry_ = &registry;
    announced_ = registry.announcements();
    counted_at_ = Clock::now();
    rate_ = 0;
    quiet_ticks_ = 0;
    storming_ = false;
  }
  storm_rate_ = storm_rate;
  waiting_.push_back(std::move(session));
  if (armed_ && tick >= tick_) return;
  tick_ = tick;
  armed_ = true;
  timer_.expires_after(tick_);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) on_tick();
  });
}

void PresenceFlusher::on_tick() {
  armed_ = false;
  const auto announced = registry_->announcements();
  const auto now = Clock::now();
  const auto changes = announced - announced_;
  const std::chrono::duration<double> elapsed = now - counted_at_;
  if (elapsed.count() > 0) {
    const double weight = 1 - std::exp(-elapsed.count() / kRateWindowSeconds);
    rate_ += weight * (static_cast<double>(changes) / elapsed.count() - rate_);
  }
  quiet_ticks_ = changes == 0 ? quiet_ticks_ + 1 : 0;
  storming_ = storm_rate_ != 0 && rate_ >= storm_rate_;
  const bool quiet = quiet_ticks_ >= (storming_ ? kStormQuietTicks : 1);
  announced_ = announced;
  counted_at_ = now;
  ticking_.swap(waiting_);
  {
    // The writes go out from this thread when the batch is flushed, not through each writer's
    // wake-up and a second turn of the event loop.
    HandoffBatch::Scope handoffs;
    for (auto& session : ticking_) {
      if (!session->flush_deferred_presence(now, quiet, storming_)) {
        waiting_.push_back(std::move(session));
      }
    }
    ticking_.clear();
    handoffs.flush();
  }
  if (waiting_.empty() || armed_) return;
  armed_ = true;
  timer_.expires_after(tick_);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) on_tick();
  });
}

void PresenceFlusher::shutdown() {
  // The context is going: its sessions with it (their waits on the context go the same way).
  timer_.cancel();
  waiting_.clear();
  ticking_.clear();
}

}  // namespace switchboard::core::net
