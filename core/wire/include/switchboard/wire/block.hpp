// Reference-counted byte blocks, their owning pointer, and the bounded pool that recycles them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace switchboard::wire {

class Block;
class BlockPool;

/// Owns one reference to a `Block` (T is `Block` or `const Block`). Like `std::shared_ptr`, but
/// the count lives in the block's header, so a block is a single allocation and a pooled block
/// can be handed out again without allocating. Copies on different threads are safe; one
/// `BlockPtr` object is not shared between threads without a lock, as for `std::shared_ptr`.
template <typename T>
class BlockPtr {
public:
  BlockPtr() noexcept = default;
  // Implicit, as for std::shared_ptr: a Slice{} or `ptr = nullptr` reads naturally.
  BlockPtr(std::nullptr_t) noexcept {}
  BlockPtr(const BlockPtr& other) noexcept : block_(other.block_) { add_ref(); }
  BlockPtr(BlockPtr&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
  template <typename U>
  requires std::is_convertible_v<U*, T*> BlockPtr(const BlockPtr<U>& other)
  noexcept : block_(other.get()) { add_ref(); }
  template <typename U>
  requires std::is_convertible_v<U*, T*> BlockPtr(BlockPtr<U>&& other)
  noexcept : block_(other.release_ownership()) {}
  ~BlockPtr() { reset(); }

  BlockPtr& operator=(BlockPtr other) noexcept {
    std::swap(block_, other.block_);
    return *this;
  }

  T* get() const noexcept { return block_; }
  T* operator->() const noexcept { return block_; }
  T& operator*() const noexcept { return *block_; }
  explicit operator bool() const noexcept { return block_ != nullptr; }
  /// References to the block (0 when empty). A result of 1 means this pointer is the only owner,
  /// and whatever other owners did with the bytes happened before (an acquire load).
  long use_count() const noexcept;
  void reset() noexcept;

  template <typename U>
  bool operator==(const BlockPtr<U>& other) const noexcept {
    return block_ == other.get();
  }
  bool operator==(std::nullptr_t) const noexcept { return block_ == nullptr; }

private:
  friend class Block;
  friend class BlockPool;
  template <typename U>
  friend class BlockPtr;

  /// Takes over a reference the caller already counted.
  static BlockPtr from_counted(T* block) noexcept {
    BlockPtr p;
    p.block_ = block;
    return p;
  }
  T* release_ownership() noexcept { return std::exchange(block_, nullptr); }
  void add_ref() const noexcept;

  T* block_ = nullptr;
};

/// A fixed-capacity byte block: header and bytes in one allocation, or a header over an adopted
/// string's storage. Frames are decoded in place; payload slices keep the block alive, so
/// forwarding a payload shares the bytes instead of copying them. When the last reference goes,
/// a pooled block returns to its pool (if there is room) instead of being freed.
class alignas(16) Block {
public:
  /// A block of `capacity` uninitialised bytes.
  static BlockPtr<Block> allocate(std::size_t capacity);
  /// A block over the string's own storage: its bytes are the block's, nothing is copied.
  static BlockPtr<Block> adopt(std::string&& bytes);

  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  std::uint8_t* data() noexcept { return data_; }
  const std::uint8_t* data() const noexcept { return data_; }
  std::size_t capacity() const noexcept { return capacity_; }
  long use_count() const noexcept { return refs_.load(std::memory_order_acquire); }
  /// The string whose storage the block adopted (Block::adopt), or nullptr.
  std::string* adopted_string() noexcept;

private:
  template <typename T>
  friend class BlockPtr;
  friend class BlockPool;
  enum class Storage : std::uint8_t { inline_bytes, string };

  Block(std::uint8_t* data, std::size_t capacity, Storage storage) noexcept
      : storage_(storage), data_(data), capacity_(capacity) {}
  ~Block() = default;

  void add_ref() const noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() const noexcept {
    // acq_rel: every owner's use of the bytes happens before the block is reused or freed.
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) const_cast<Block*>(this)->dispose();
  }
  /// The last reference is gone: back to the pool, or freed.
  void dispose() noexcept;
  /// Destroys the block and frees its memory.
  void destroy() noexcept;

  mutable std::atomic<long> refs_{1};
  Storage storage_;
  std::uint8_t* data_;
  std::size_t capacity_;
  /// Set while a pooled block is out of its pool; keeps the pool alive until the block is back.
  std::shared_ptr<BlockPool> pool_;
};

/// Recycles blocks of one size. Blocks are handed out by the thread that reads (a FrameReader),
/// and released wherever their last slice is dropped, usually another connection's thread: both
/// sides take a mutex, once per block rather than per frame. At most `max_cached` free blocks
/// are kept (bounded idle memory); a block released beyond that is freed. Blocks outstanding
/// keep the pool alive, so it may be dropped by its owner at any time.
class BlockPool : public std::enable_shared_from_this<BlockPool> {
public:
  static std::shared_ptr<BlockPool> create(std::size_t block_size, std::size_t max_cached);
  /// A pool whose cap follows its use: it keeps as many free blocks as were out of it at once
  /// during the current and the previous `window`, at least `min_cached` and at most
  /// `max_cached`. A flow whose slices hold many blocks for a while then recycles all of them,
  /// however many that takes; a window after the flow has shrunk, blocks that come back beyond
  /// the new need are freed. fill() makes `min_cached` free blocks.
  static std::shared_ptr<BlockPool> create_elastic(std::size_t block_size, std::size_t min_cached,
                                                   std::size_t max_cached,
                                                   std::chrono::steady_clock::duration window);
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  /// A block of `block_size()` bytes: a free one if any, else a new one.
  BlockPtr<Block> acquire();
  /// Allocates blocks until `max_cached()` are free. A reader calls it when it starts taking
  /// full-size blocks, so that a flow allocates before its first frames rather than each time
  /// more of its blocks are in flight than ever before. Throws std::bad_alloc.
  void fill();

  std::size_t block_size() const noexcept { return block_size_; }
  /// The most free blocks kept (for a pool made by create(), the cap; fill() makes this many).
  std::size_t max_cached() const noexcept { return max_cached_; }
  /// Free blocks held now.
  std::size_t cached() const;
  /// Blocks handed out and not yet back.
  std::size_t outstanding() const;

private:
  friend class Block;
  BlockPool(std::size_t block_size, std::size_t min_cached, std::size_t max_cached,
            std::chrono::steady_clock::duration window, bool elastic);
  void recycle(Block* block) noexcept;
  // The free blocks kept now; under mutex_.
  std::size_t cap() const noexcept;

  const std::size_t block_size_;
  const std::size_t min_cached_;
  const std::size_t max_cached_;
  const std::chrono::steady_clock::duration window_;
  const bool elastic_;
  mutable std::mutex mutex_;
  std::vector<Block*> free_;  // capacity reserved up front: recycling never allocates
  std::size_t outstanding_ = 0;
  // Elastic pools: the most blocks out at once in this window and in the one before.
  std::size_t peak_ = 0;
  std::size_t previous_peak_ = 0;
  std::chrono::steady_clock::time_point window_start_{};
};

template <typename T>
long BlockPtr<T>::use_count() const noexcept {
  return block_ ? block_->use_count() : 0;
}

template <typename T>
void BlockPtr<T>::reset() noexcept {
  if (block_) std::exchange(block_, nullptr)->release();
}

template <typename T>
void BlockPtr<T>::add_ref() const noexcept {
  if (block_) block_->add_ref();
}

}  // namespace switchboard::wire
