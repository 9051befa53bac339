// Slices into reference-counted byte blocks, and the frame reader that fills the blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "switchboard/wire/block.hpp"
#include "switchboard/wire/codec.hpp"

namespace switchboard::wire {

/// A view of bytes that owns a reference to the block holding them.
struct Slice {
  BlockPtr<const Block> block;
  const std::uint8_t* data = nullptr;
  std::uint32_t size = 0;

  Bytes bytes() const noexcept { return {data, size}; }
  /// The first `n` bytes; `this` keeps the rest.
  Slice take_front(std::uint32_t n) noexcept;
  /// A slice over a new block holding a copy of `bytes`.
  static Slice copy_of(Bytes bytes);
  /// A slice over all of `bytes`, whose storage becomes the block's without a copy (a decoded
  /// protobuf `bytes` field forwarded as is). One allocation, for the block's header.
  static Slice adopt(std::string&& bytes);
  /// Gives back the string an adopt()ed block holds, when this slice is its block's only owner
  /// and covers all of it (a chunk from a gRPC peer on its way to another): the bytes then
  /// change hands without a copy, and the slice is left empty. Otherwise returns false and
  /// changes nothing.
  bool release_string(std::string& out) noexcept;
};

/// One decoded frame; `payload` points into the reader's current block.
struct Frame {
  FrameHeader header;
  Bytes payload;
};

/// Incremental frame reader over ref-counted blocks. The caller reads from its socket into
/// `prepare()`, reports the count with `commit()`, then takes frames with `next()` until it
/// returns need_more. A frame split across reads is completed in place; it is moved to a fresh
/// block only when it would not fit in the current one. No I/O, so tests and fuzzers drive it
/// with any split of the byte stream.
class FrameReader {
public:
  /// `small_block_size` (at most `block_size`) is the first block's size and the size the reader
  /// returns to after release_idle_block(), so that idle connections hold little memory; by
  /// default every block is `block_size`. Full-size blocks come from `pool` when it is given and
  /// its block size is `block_size`, so a reader whose blocks are still shared when it needs a
  /// new one does not allocate; the reader fills the pool when it takes its first full-size block
  /// (and again after release_idle_block), so a flow needs no allocation after it starts.
  FrameReader(std::uint32_t max_frame, std::size_t block_size, std::size_t small_block_size = 0,
              std::shared_ptr<BlockPool> pool = nullptr);

  /// Space to read into: at least the rest of the current frame, at least 1 byte.
  std::span<std::uint8_t> prepare();
  void commit(std::size_t n) noexcept { end_ += n; }

  /// Lets go of a full-size block that nothing shares and that holds no partial frame, so the
  /// next read uses a small block: for a connection that has gone quiet. Called off the hot
  /// path (a busy connection keeps rewinding the same block), and never while a read into the
  /// space prepare() gave is still pending; returns whether it let go.
  bool release_idle_block() noexcept;

  /// Decodes the next whole frame, or says need_more or error (sticky: the stream is broken).
  DecodeResult next(Frame& frame) noexcept;

  /// A slice of the current block sharing its ownership (valid for payloads from `next`).
  Slice share(Bytes payload) const;

  void set_max_frame(std::uint32_t max_frame) noexcept { max_frame_ = max_frame; }
  std::size_t buffered() const noexcept { return end_ - begin_; }

private:
  BlockPtr<Block> new_block(std::size_t size);

  BlockPtr<Block> block_;
  std::shared_ptr<BlockPool> pool_;
  std::size_t begin_ = 0;  // first undecoded byte
  std::size_t end_ = 0;    // one past the last byte read
  std::size_t needed_ = kHeaderSize;
  std::uint32_t max_frame_;
  std::size_t block_size_;
  std::size_t small_block_size_;
  bool pool_filled_ = false;
  DecodeError error_ = DecodeError::none;
};

}  // namespace switchboard::wire
