// Serial: the queue hand-over between the threads that hand a call its handlers.
#include "grpc_gateway/serial.hpp"

#include <boost/asio/post.hpp>
#include <cstdio>
#include <cstdlib>

namespace switchboard::gateway {

bool Serial::enter() {
  std::lock_guard lock(mutex_);
  // Queued handlers go first; whoever runs them (or the posted drain) also runs the caller's.
  if (running_ || !queue_.empty()) return false;
  running_ = true;
  return true;
}

// Runs what was queued while this thread ran a handler, until nothing is left.
void Serial::leave() {
  for (;;) {
    Handler next;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) {
        running_ = false;
        return;
      }
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    const Here here(this);
    next();
  }
}

// What queued while this thread ran a handler goes to the executor: the thread returns to the
// work it came from.
void Serial::hand_over(const std::shared_ptr<void>& owner) {
  std::lock_guard lock(mutex_);
  running_ = false;
  if (!queue_.empty()) schedule_locked(owner);
}

void Serial::post(Handler handler, const std::shared_ptr<void>& owner) {
  std::lock_guard lock(mutex_);
  queue_.push_back(std::move(handler));
  if (!running_) schedule_locked(owner);
}

void Serial::schedule_locked(const std::shared_ptr<void>& owner) {
  if (scheduled_) return;
  scheduled_ = true;
  boost::asio::post(executor_, [this, owner] {
    {
      std::lock_guard lock(mutex_);
      scheduled_ = false;
      // A thread running handlers already takes the queue's next ones.
      if (running_ || queue_.empty()) return;
      running_ = true;
    }
    leave();
  });
}

void Serial::not_here() noexcept {
  std::fputs("switchboard: a gateway call's handler ran outside its Serial\n", stderr);
  std::abort();
}

}  // namespace switchboard::gateway
