// Block allocation and release, and the pool that recycles full-size blocks.
#include "switchboard/wire/block.hpp"

#include <algorithm>
#include <new>

namespace switchboard::wire {

static_assert(alignof(Block) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
static_assert(alignof(std::string) <= alignof(Block));

namespace {
// The bytes (or the adopted string) follow the header in the same allocation.
std::byte* after_header(Block* block) noexcept {
  return reinterpret_cast<std::byte*>(block) + sizeof(Block);
}
}  // namespace

BlockPtr<Block> Block::allocate(std::size_t capacity) {
  void* memory = ::operator new(sizeof(Block) + capacity);
  auto* bytes = reinterpret_cast<std::uint8_t*>(static_cast<std::byte*>(memory) + sizeof(Block));
  return BlockPtr<Block>::from_counted(new (memory) Block(bytes, capacity, Storage::inline_bytes));
}

BlockPtr<Block> Block::adopt(std::string&& bytes) {
  void* memory = ::operator new(sizeof(Block) + sizeof(std::string));
  auto* string =
      new (static_cast<std::byte*>(memory) + sizeof(Block)) std::string(std::move(bytes));
  auto* data = reinterpret_cast<std::uint8_t*>(string->data());
  return BlockPtr<Block>::from_counted(new (memory) Block(data, string->size(), Storage::string));
}

std::string* Block::adopted_string() noexcept {
  if (storage_ != Storage::string) return nullptr;
  return std::launder(reinterpret_cast<std::string*>(after_header(this)));
}

void Block::dispose() noexcept {
  if (pool_) {
    // The local keeps the pool alive through recycle() even if this block held its last owner.
    const std::shared_ptr<BlockPool> pool = std::move(pool_);
    pool->recycle(this);
    return;
  }
  destroy();
}

void Block::destroy() noexcept {
  if (std::string* string = adopted_string()) string->~basic_string();
  this->~Block();
  ::operator delete(static_cast<void*>(this));
}

std::shared_ptr<BlockPool> BlockPool::create(std::size_t block_size, std::size_t max_cached) {
  // Not make_shared: the constructor is private so that every pool is owned by a shared_ptr,
  // which its outstanding blocks copy.
  return std::shared_ptr<BlockPool>(new BlockPool(block_size, max_cached, max_cached,
                                                  std::chrono::steady_clock::duration{}, false));
}

std::shared_ptr<BlockPool> BlockPool::create_elastic(std::size_t block_size, std::size_t min_cached,
                                                     std::size_t max_cached,
                                                     std::chrono::steady_clock::duration window) {
  return std::shared_ptr<BlockPool>(
      new BlockPool(block_size, std::min(min_cached, max_cached), max_cached, window, true));
}

BlockPool::BlockPool(std::size_t block_size, std::size_t min_cached, std::size_t max_cached,
                     std::chrono::steady_clock::duration window, bool elastic)
    : block_size_(block_size),
      min_cached_(min_cached),
      max_cached_(max_cached),
      window_(window),
      elastic_(elastic),
      window_start_(std::chrono::steady_clock::now()) {
  free_.reserve(max_cached_);
}

BlockPool::~BlockPool() {
  for (Block* block : free_) block->destroy();
}

std::size_t BlockPool::cap() const noexcept {
  if (!elastic_) return max_cached_;
  return std::clamp(std::max(peak_, previous_peak_), min_cached_, max_cached_);
}

BlockPtr<Block> BlockPool::acquire() {
  Block* block = nullptr;
  {
    const std::lock_guard lock(mutex_);
    peak_ = std::max(peak_, ++outstanding_);
    if (!free_.empty()) {
      block = free_.back();
      free_.pop_back();
    }
  }
  if (block == nullptr) {
    BlockPtr<Block> fresh = Block::allocate(block_size_);
    fresh->pool_ = shared_from_this();
    return fresh;
  }
  // The mutex ordered the last owner's release before this reuse.
  block->refs_.store(1, std::memory_order_relaxed);
  block->pool_ = shared_from_this();
  return BlockPtr<Block>::from_counted(block);
}

void BlockPool::fill() {
  const std::size_t want = elastic_ ? min_cached_ : max_cached_;
  std::size_t missing = 0;
  {
    const std::lock_guard lock(mutex_);
    missing = want > free_.size() ? want - free_.size() : 0;
  }
  // Allocated outside the lock; whatever finds the pool full meanwhile is freed.
  for (; missing > 0; --missing) {
    Block* block = Block::allocate(block_size_).release_ownership();
    {
      const std::lock_guard lock(mutex_);
      if (free_.size() < want) {
        free_.push_back(block);
        continue;
      }
    }
    block->destroy();
  }
}

std::size_t BlockPool::cached() const {
  const std::lock_guard lock(mutex_);
  return free_.size();
}

std::size_t BlockPool::outstanding() const {
  const std::lock_guard lock(mutex_);
  return outstanding_;
}

void BlockPool::recycle(Block* block) noexcept {
  const std::lock_guard lock(mutex_);
  --outstanding_;
  if (elastic_) {
    const auto now = std::chrono::steady_clock::now();
    if (now - window_start_ >= window_) {
      previous_peak_ = peak_;
      peak_ = outstanding_;
      window_start_ = now;
    }
  }
  const std::size_t keep = cap();
  if (free_.size() < keep) {
    free_.push_back(block);
    return;
  }
  // One block (256 KiB by default) comes back at a time, so freeing under the lock is rare next
  // to the bytes each block carried.
  block->destroy();
  while (free_.size() > keep) {
    free_.back()->destroy();
    free_.pop_back();
  }
}

}  // namespace switchboard::wire
