// Flow rules both ends of a connection follow (docs/PROTOCOL.md): when a receiver returns stream
// credit, and when a quiet connection is probed with PING or its other side judged dead.
#pragma once

#include <chrono>
#include <cstdint>

namespace switchboard::wire {

// --- Credit replenishment -----------------------------------------------------------------------

/// How many consumed bytes a receiver collects before it returns them as credit: a quarter of
/// the stream window. One WINDOW frame per quarter window keeps the sender busy (it never runs
/// dry while the grant travels) without a frame per chunk read.
constexpr std::uint32_t credit_return_threshold(std::uint32_t window) noexcept {
  return window / 4;
}

/// Whether a receiver holding `pending` bytes consumed but not yet granted back, on a stream
/// whose window is `window`, sends them now: one WINDOW frame carrying all of `pending`, after
/// which pending is zero. The receiver adds each consumption to `pending` before asking, and
/// raises its own view of the sender's credit only when it grants, so the sender can never run
/// ahead of what it was told.
constexpr bool credit_due(std::uint32_t pending, std::uint32_t window) noexcept {
  return pending >= credit_return_threshold(window);
}

// --- Keepalive ----------------------------------------------------------------------------------

/// The clock every keepalive judgement uses.
using FlowClock = std::chrono::steady_clock;

/// When one side probes and when it gives up. Each side picks its own values from the
/// keepalive interval announced in WELCOME.
struct KeepaliveTiming {
  /// Read silence longer than this sends a PING (unless one is already unanswered).
  FlowClock::duration interval{};
  /// An unanswered PING older than this means the other side is dead.
  FlowClock::duration answer_timeout{};
};

/// What a side does on a keepalive tick.
enum class KeepaliveVerdict : std::uint8_t {
  wait,       ///< nothing: bytes arrived recently, or the PING in flight is not overdue
  send_ping,  ///< send a PING now, then call Keepalive::on_ping_sent
  dead,       ///< the PING went unanswered too long: close the connection
};

/// "wait", "send_ping" or "dead".
constexpr const char* keepalive_verdict_name(KeepaliveVerdict verdict) noexcept {
  switch (verdict) {
    case KeepaliveVerdict::wait:
      return "wait";
    case KeepaliveVerdict::send_ping:
      return "send_ping";
    case KeepaliveVerdict::dead:
      return "dead";
  }
  return "unknown";
}

/// What one side knows about the other's liveness: when it last read anything, and whether a
/// PING of its own is unanswered. Any bytes read count as an answer (a PING ACK, or any frame):
/// a side that sends is alive. Pure: time comes from the caller, so it is tested without clocks.
/// Not thread-safe; owned by the connection's reading side.
class Keepalive {
public:
  /// Starts as if bytes were read at `now`.
  explicit Keepalive(FlowClock::time_point now) noexcept : last_read_(now) {}

  /// Bytes arrived at `now`; any PING in flight counts as answered.
  void on_read(FlowClock::time_point now) noexcept {
    last_read_ = now;
    ping_outstanding_ = false;
  }
  /// A PING went out at `now` (after a send_ping verdict).
  void on_ping_sent(FlowClock::time_point now) noexcept {
    ping_sent_ = now;
    ping_outstanding_ = true;
  }

  /// The verdict at `now`. `stalled` says this side itself did not run for a while before `now`
  /// (see StallDetector): the other side's answer may then be read but not yet seen, so it is
  /// not judged dead on this tick (a PING may still be due).
  KeepaliveVerdict judge(FlowClock::time_point now, const KeepaliveTiming& timing,
                         bool stalled = false) const noexcept {
    if (ping_outstanding_) {
      return !stalled && now - ping_sent_ > timing.answer_timeout ? KeepaliveVerdict::dead
                                                                  : KeepaliveVerdict::wait;
    }
    return now - last_read_ > timing.interval ? KeepaliveVerdict::send_ping
                                              : KeepaliveVerdict::wait;
  }

  bool ping_outstanding() const noexcept { return ping_outstanding_; }
  FlowClock::time_point last_read() const noexcept { return last_read_; }
  /// When the PING in flight went out; meaningful only while ping_outstanding().
  FlowClock::time_point ping_sent() const noexcept { return ping_sent_; }

private:
  FlowClock::time_point last_read_;
  FlowClock::time_point ping_sent_{};
  bool ping_outstanding_ = false;
};

/// Tells, on each tick of a periodic timer, whether this process was stalled (descheduled,
/// stopped by a debugger or a sanitizer) since the previous tick: a tick later than expected.
/// Only the first of late ticks in a row counts as stalled, so a process that stays late still
/// judges its peers. Pure and not thread-safe, like Keepalive.
class StallDetector {
public:
  /// The first tick is measured from `now`.
  explicit StallDetector(FlowClock::time_point now) noexcept : last_tick_(now) {}

  /// A tick at `now`, late when more than `late_after` after the previous one. Returns true
  /// when it is late and the previous tick was not.
  bool on_tick(FlowClock::time_point now, FlowClock::duration late_after) noexcept {
    const bool late = now - last_tick_ > late_after;
    const bool stalled = late && !last_late_;
    last_late_ = late;
    last_tick_ = now;
    return stalled;
  }
  /// A tick on which nothing is judged: the next tick is measured from `now`, and whether the
  /// last judged tick was late is kept.
  void skip(FlowClock::time_point now) noexcept { last_tick_ = now; }

private:
  FlowClock::time_point last_tick_;
  bool last_late_ = false;
};

}  // namespace switchboard::wire
