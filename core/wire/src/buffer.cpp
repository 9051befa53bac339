// Slice helpers and the frame reader's buffer management.
#include "switchboard/wire/buffer.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

namespace switchboard::wire {

Slice Slice::take_front(std::uint32_t n) noexcept {
  Slice front{block, data, std::min(n, size)};
  data += front.size;
  size -= front.size;
  return front;
}

Slice Slice::copy_of(Bytes bytes) {
  auto block = Block::allocate(std::max<std::size_t>(bytes.size(), 1));
  if (!bytes.empty()) std::memcpy(block->data(), bytes.data(), bytes.size());
  const std::uint8_t* data = block->data();
  return Slice{std::move(block), data, static_cast<std::uint32_t>(bytes.size())};
}

Slice Slice::adopt(std::string&& bytes) {
  auto block = Block::adopt(std::move(bytes));
  const std::uint8_t* data = block->data();
  const auto size = static_cast<std::uint32_t>(block->capacity());
  return Slice{std::move(block), data, size};
}

bool Slice::release_string(std::string& out) noexcept {
  if (!block || block.use_count() != 1) return false;
  // The only owner: nobody else reads the bytes, so the block may give its string away.
  std::string* string = const_cast<Block*>(block.get())->adopted_string();
  if (string == nullptr || data != reinterpret_cast<const std::uint8_t*>(string->data()) ||
      size != string->size()) {
    return false;
  }
  out = std::move(*string);
  *this = Slice{};
  return true;
}

FrameReader::FrameReader(std::uint32_t max_frame, std::size_t block_size,
                         std::size_t small_block_size, std::shared_ptr<BlockPool> pool)
    : pool_(std::move(pool)),
      max_frame_(max_frame),
      block_size_(block_size),
      small_block_size_(small_block_size == 0 ? block_size
                                              : std::min(small_block_size, block_size)) {}

std::span<std::uint8_t> FrameReader::prepare() {
  const std::size_t pending = end_ - begin_;
  const std::size_t want = std::max(needed_, pending + 1);
  if (block_ && block_.use_count() == 1 && pending == 0) {
    // Nobody shares the block any more: rewind instead of allocating.
    begin_ = end_ = 0;
  }
  if (!block_ || block_->capacity() - begin_ < want) {
    // A connection starts with a small block and moves to full-size blocks once its frames
    // outgrow it or its slices are still being forwarded when more bytes arrive.
    const std::size_t size = block_ ? block_size_ : small_block_size_;
    auto fresh = new_block(std::max(size, want));
    if (pending > 0) std::memcpy(fresh->data(), block_->data() + begin_, pending);
    block_ = std::move(fresh);
    begin_ = 0;
    end_ = pending;
  }
  return {block_->data() + end_, block_->capacity() - end_};
}

bool FrameReader::release_idle_block() noexcept {
  if (!block_ || block_->capacity() <= small_block_size_ || end_ != begin_ ||
      block_.use_count() != 1) {
    return false;
  }
  block_.reset();  // a pooled block goes back to its pool
  begin_ = end_ = 0;
  pool_filled_ = false;
  return true;
}

BlockPtr<Block> FrameReader::new_block(std::size_t size) {
  if (pool_ && size == pool_->block_size()) {
    if (!pool_filled_) {
      pool_->fill();
      pool_filled_ = true;
    }
    return pool_->acquire();
  }
  return Block::allocate(size);
}

DecodeResult FrameReader::next(Frame& frame) noexcept {
  if (error_ != DecodeError::none) {
    DecodeResult broken;
    broken.kind = DecodeResult::Kind::error;
    broken.error = error_;
    return broken;
  }
  if (!block_) {
    DecodeResult empty;
    empty.needed = needed_;
    return empty;
  }
  auto result = decode_frame({block_->data() + begin_, end_ - begin_}, max_frame_);
  switch (result.kind) {
    case DecodeResult::Kind::frame:
      frame.header = result.header;
      frame.payload = result.payload;
      begin_ += result.consumed;
      needed_ = kHeaderSize;
      break;
    case DecodeResult::Kind::need_more:
      needed_ = result.needed;
      break;
    case DecodeResult::Kind::error:
      error_ = result.error;
      break;
  }
  return result;
}

Slice FrameReader::share(Bytes payload) const {
  return Slice{block_, payload.data(), static_cast<std::uint32_t>(payload.size())};
}

}  // namespace switchboard::wire
