// HandlerSlots: owns the memory reused by an asynchronous operation that its owner starts again
// and again (a session's stream-timer wait), so that arming it does not allocate.
#pragma once

#include <array>
#include <cstddef>
#include <new>

namespace switchboard::core::net {

/// Memory for two pending operations at a time: a re-armed wait and the cancelled one whose
/// handler has not run yet. A third comes from the heap. Used only on its owner's thread.
class HandlerSlots {
public:
  HandlerSlots() = default;
  HandlerSlots(const HandlerSlots&) = delete;
  HandlerSlots& operator=(const HandlerSlots&) = delete;

  void* allocate(std::size_t size) {
    for (auto& slot : slots_) {
      if (!slot.in_use && size <= sizeof(slot.bytes)) {
        slot.in_use = true;
        return slot.bytes;
      }
    }
    return ::operator new(size);
  }
  void deallocate(void* pointer) noexcept {
    for (auto& slot : slots_) {
      if (pointer == slot.bytes) {
        slot.in_use = false;
        return;
      }
    }
    ::operator delete(pointer);
  }

private:
  struct Slot {
    // Fits an Asio timer wait whose handler holds a shared_ptr and this allocator (192 bytes
    // with Boost 1.81 on x86-64); a bigger operation comes from the heap.
    alignas(std::max_align_t) unsigned char bytes[192];
    bool in_use = false;
  };
  std::array<Slot, 2> slots_{};
};

/// The allocator Asio asks for an operation's memory: it takes it from a HandlerSlots.
template <typename T>
class SlotAllocator {
public:
  using value_type = T;
  explicit SlotAllocator(HandlerSlots& slots) noexcept : slots_(&slots) {}
  template <typename U>
  SlotAllocator(const SlotAllocator<U>& other) noexcept : slots_(other.slots_) {}

  T* allocate(std::size_t n) { return static_cast<T*>(slots_->allocate(sizeof(T) * n)); }
  void deallocate(T* pointer, std::size_t) noexcept { slots_->deallocate(pointer); }

  template <typename U>
  bool operator==(const SlotAllocator<U>& other) const noexcept {
    return slots_ == other.slots_;
  }

private:
  template <typename U>
  friend class SlotAllocator;
  HandlerSlots* slots_;
};

}  // namespace switchboard::core::net
