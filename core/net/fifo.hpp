// Fifo<T>: a first-in first-out queue that owns one vector of items.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace switchboard::core::net {

/// A queue over one vector. Unlike std::deque it allocates nothing until the first push, and once
/// grown it reuses its storage, so a steady flow through it does not allocate.
template <typename T>
class Fifo {
public:
  bool empty() const noexcept { return head_ == items_.size(); }
  std::size_t size() const noexcept { return items_.size() - head_; }
  T& front() noexcept { return items_[head_]; }

  void push_back(T item) { items_.push_back(std::move(item)); }

  void pop_front() {
    items_[head_] = T{};  // drop what the item holds now, not at the next compaction
    if (++head_ == items_.size()) {
      items_.clear();
      head_ = 0;
    } else if (head_ >= kCompactAfter && head_ * 2 >= items_.size()) {
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

  void clear() noexcept {
    items_.clear();
    head_ = 0;
  }

  /// Empties the queue and gives its storage back.
  void release() noexcept {
    std::vector<T>().swap(items_);
    head_ = 0;
  }

private:
  static constexpr std::size_t kCompactAfter = 32;
  std::vector<T> items_;
  std::size_t head_ = 0;
};

}  // namespace switchboard::core::net
