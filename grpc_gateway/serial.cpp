// Serial: the queue hand-over between the threads that hand a call its handlers.
#include "grpc_gateway/serial.hpp"

#include <boost/asio/post.hpp>

namespace switchboard::gateway {

bool Serial::enter() {
  std::lock_guard lock(mutex_);
  // Queued handlers go first; whoever runs them (or the posted drain) also runs the caller's.
  if (running_ || !queue_.empty()) return false;
  running_ = true;
  return true;
}

void Serial::leave(bool drain, const std::shared_ptr<void>& owner) {
  for (;;) {
    Handler next;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) {
        running_ = false;
        return;
      }
      if (!drain) {
        running_ = false;
        schedule_locked(owner);
        return;
      }
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    next();
  }
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
    leave(true, owner);
  });
}

}  // namespace switchboard::gateway
