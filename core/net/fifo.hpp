// Fifo<T>: a first-in first-out queue that owns one vector of items.
#pragma once

#include <boost/container/small_vector.hpp>
#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace switchboard::core::net {

/// A queue over one vector. Unlike std::deque it allocates nothing until the first push, and once
/// grown it reuses its storage, so a steady flow through it does not allocate. With `Inline` > 0
/// the first `Inline` items live in the queue object itself, so a short-lived queue that never
/// holds more (a one-frame request) does not allocate at all.
template <typename T, std::size_t Inline = 0>
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
    // Rebuilt rather than swapped with an empty one: a small_vector swap keeps a heap buffer.
    std::destroy_at(&items_);
    std::construct_at(&items_);
    head_ = 0;
  }

private:
  using Items =
      std::conditional_t<Inline == 0, std::vector<T>, boost::container::small_vector<T, Inline>>;
  static constexpr std::size_t kCompactAfter = 32;
  Items items_;
  std::size_t head_ = 0;
};

}  // namespace switchboard::core::net
