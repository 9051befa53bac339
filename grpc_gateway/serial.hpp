// The running order of one gRPC call's handlers: its queue of handlers not yet run.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>

namespace switchboard::gateway {

/// Runs one call's handlers one at a time, in the order they were handed in, like a strand; but
/// a handler handed in while nothing runs or waits runs at once on the caller's thread
/// (`dispatch`), instead of waking an I/O thread and waiting for it. A chunk that arrives on
/// gRPC's thread is then written on, and credited from, that same thread. Thread-safe.
///
/// `owner` keeps the object holding the Serial alive until a drain posted to the executor runs.
class Serial {
public:
  using Handler = std::function<void()>;

  explicit Serial(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}

  /// Runs `handler` here if nothing runs or waits, else queues it. With `drain`, the handlers
  /// queued while it ran are run here too; without, they go to the executor: callers that hold
  /// a lock a later handler could take must not drain.
  template <class F>
  void dispatch(F&& handler, bool drain, const std::shared_ptr<void>& owner) {
    if (!enter()) {
      post(Handler(std::forward<F>(handler)), owner);
      return;
    }
    handler();
    leave(drain, owner);
  }

  /// Queues `handler`; it runs on the executor, or on a thread already running this Serial.
  void post(Handler handler, const std::shared_ptr<void>& owner);

  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }

private:
  bool enter();
  void leave(bool drain, const std::shared_ptr<void>& owner);
  void schedule_locked(const std::shared_ptr<void>& owner);

  boost::asio::any_io_executor executor_;
  std::mutex mutex_;
  std::deque<Handler> queue_;
  bool running_ = false;    // a thread is running a handler
  bool scheduled_ = false;  // a drain is posted to the executor
};

}  // namespace switchboard::gateway
