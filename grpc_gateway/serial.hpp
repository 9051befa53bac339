// The gateway's threading rule, and the Serial that enforces it: one call's handlers, in order.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>

namespace switchboard::gateway {

/// The threading rule of the gateway, for every call (Send, Requests, Respond, Broadcast,
/// WatchPeers):
///
/// - All state of a call lives on its own Serial: only the call's handlers, run by the Serial,
///   read or write it. A call has no mutex of its own; the Serial's queue lock is the only lock.
/// - Entry points only hand a handler to the Serial, by the kind of caller:
///   - `dispatch`: gRPC reactions (OnReadDone, OnWriteDone, OnCancel, OnDone) and timers. The
///     caller is between tasks: it may run the call's queue.
///   - `deliver`: core deliveries (Endpoint::deliver_*, Peer::accept_stream, a drain request).
///     The caller is another call or a native session in the middle of its own handler, and may
///     hold back what it is given until that handler ends (a native session batches its
///     deliveries): it runs the handed-in handler only, never the call's other queued work, so
///     what the call forwards to its counterparts always leaves from outside such a handler.
///   - `post`: a caller that holds a lock of its own (Peer::on_presence, under the registry's).
/// - A handler never runs inside another handler of the same Serial: one handed in while the
///   Serial runs (on this thread or another) is queued. So a handler may deliver to any
///   counterpart, and the counterpart may deliver back, without a lock order to reason about.
/// - Handlers check it: each starts with `assert_here()`, which aborts when the calling thread
///   is not running this Serial (always on: a thread-local compare).
///
/// A handler handed in while the Serial is idle runs at once on the caller's thread instead of
/// waking an I/O thread: a chunk read on gRPC's thread is forwarded, and the next read started,
/// on that thread. What queued meanwhile is run by that thread before it lets go only when it
/// entered with `dispatch` and runs no other Serial's handler; else it goes to the executor, so
/// that a thread does not end up doing the work of every call it delivers to (a sender's reads
/// and its responder's writes go on in parallel). Thread-safe.
///
/// `owner` keeps the object holding the Serial alive until a drain posted to the executor runs.
class Serial {
public:
  using Handler = std::function<void()>;

  explicit Serial(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}
  Serial(const Serial&) = delete;
  Serial& operator=(const Serial&) = delete;

  /// For a gRPC reaction or a timer: runs `handler` here if the Serial is idle, then what was
  /// queued meanwhile (unless this thread runs another Serial's handler); else queues it.
  template <class F>
  void dispatch(F&& handler, const std::shared_ptr<void>& owner) {
    run(std::forward<F>(handler), owner, current_ == nullptr);
  }

  /// For a delivery from a counterpart: runs `handler` here if the Serial is idle, else queues
  /// it; what was queued meanwhile goes to the executor.
  template <class F>
  void deliver(F&& handler, const std::shared_ptr<void>& owner) {
    run(std::forward<F>(handler), owner, false);
  }

  /// Queues `handler`; it runs on the executor, or on a thread already running this Serial.
  void post(Handler handler, const std::shared_ptr<void>& owner);

  /// Whether the calling thread is running one of this Serial's handlers now.
  bool running_here() const noexcept { return current_ == this; }
  /// Aborts unless the calling thread is running one of this Serial's handlers.
  void assert_here() const noexcept {
    if (current_ != this) not_here();
  }

  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }

private:
  template <class F>
  void run(F&& handler, const std::shared_ptr<void>& owner, bool drain) {
    if (!enter()) {
      post(Handler(std::forward<F>(handler)), owner);
      return;
    }
    {
      const Here here(this);
      handler();
    }
    if (drain) {
      leave();
    } else {
      hand_over(owner);
    }
  }

  // Marks the Serial whose handler this thread runs, restoring the outer one (a handler that
  // ran another Serial's handler inline) when it returns.
  class Here {
  public:
    explicit Here(const Serial* serial) noexcept : previous_(current_) { current_ = serial; }
    ~Here() { current_ = previous_; }
    Here(const Here&) = delete;
    Here& operator=(const Here&) = delete;

  private:
    const Serial* previous_;
  };

  bool enter();
  void leave();
  void hand_over(const std::shared_ptr<void>& owner);
  void schedule_locked(const std::shared_ptr<void>& owner);
  [[noreturn]] static void not_here() noexcept;

  static inline thread_local const Serial* current_ = nullptr;

  boost::asio::any_io_executor executor_;
  std::mutex mutex_;
  std::deque<Handler> queue_;
  bool running_ = false;    // a thread is running a handler
  bool scheduled_ = false;  // a drain is posted to the executor
};

}  // namespace switchboard::gateway
