// Fifo<T>: a first-in first-out queue that owns one ring of items.
#pragma once

#include <algorithm>
#include <boost/container/small_vector.hpp>
#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace switchboard::core::net {

/// A queue over one ring of slots. Unlike std::deque it allocates nothing until the first push,
/// and it grows only when more items are queued at once than ever before, so a flow whose depth
/// is bounded (by a stream window) stops allocating once it has reached that depth. With
/// `Inline` > 0 the first `Inline` slots live in the queue object itself, so a short-lived queue
/// that never holds more (a one-frame request) does not allocate at all.
template <typename T, std::size_t Inline = 0>
class Fifo {
public:
  bool empty() const noexcept { return count_ == 0; }
  std::size_t size() const noexcept { return count_; }
  /// Items it holds before it next grows.
  std::size_t capacity() const noexcept { return std::max(slots_.size(), Inline); }
  T& front() noexcept { return slots_[head_]; }

  void push_back(T item) {
    if (count_ == slots_.size()) grow();
    slots_[wrap(head_ + count_)] = std::move(item);
    ++count_;
  }

  void pop_front() {
    slots_[head_] = T{};  // drop what the item holds now, not when its slot is reused
    head_ = wrap(head_ + 1);
    if (--count_ == 0) head_ = 0;
  }

  void clear() noexcept {
    while (count_ > 0) pop_front();
  }

  /// Makes room for `n` items at once, so a queue whose depth is known grows once.
  void reserve(std::size_t n) {
    if (n > slots_.size()) grow_to(n);
  }

  /// Empties the queue and gives its storage back.
  void release() noexcept {
    // Rebuilt rather than swapped with an empty one: a small_vector swap keeps a heap buffer.
    std::destroy_at(&slots_);
    std::construct_at(&slots_);
    head_ = 0;
    count_ = 0;
  }

private:
  using Slots =
      std::conditional_t<Inline == 0, std::vector<T>, boost::container::small_vector<T, Inline>>;

  std::size_t wrap(std::size_t index) const noexcept {
    return index >= slots_.size() ? index - slots_.size() : index;
  }

  void grow() { grow_to(slots_.empty() ? (Inline > 0 ? Inline : 4) : slots_.size() * 2); }

  void grow_to(std::size_t capacity) {
    if (head_ == 0) {
      slots_.resize(capacity);  // already in order: the new slots go after the last item
      return;
    }
    Slots bigger;
    bigger.reserve(capacity);
    for (std::size_t i = 0; i < count_; ++i) bigger.push_back(std::move(slots_[wrap(head_ + i)]));
    bigger.resize(capacity);
    slots_ = std::move(bigger);
    head_ = 0;
  }

  Slots slots_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
};

}  // namespace switchboard::core::net
