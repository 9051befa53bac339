// Unit tests for blocks, BlockPtr and the block pool (block.hpp), and for the frame reader taking
// its full-size blocks from a pool: recycling, the cap, releases on other threads, lifetimes.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "feed.hpp"
#include "switchboard/wire/block.hpp"
#include "switchboard/wire/buffer.hpp"
#include "switchboard/wire/codec.hpp"

namespace switchboard::wire {
namespace {

using Buffer = std::vector<std::uint8_t>;
using Kind = DecodeResult::Kind;
using test::feed_one;
constexpr std::size_t KiB = 1024;

Buffer data_frame(std::uint32_t stream, std::size_t size, std::uint8_t fill) {
  Buffer out;
  append_data(out, stream, Buffer(size, fill), false);
  return out;
}

TEST(BlockPtr, CountsOwnersLikeASharedPtr) {
  BlockPtr<Block> block = Block::allocate(100);
  ASSERT_TRUE(block);
  EXPECT_EQ(block.use_count(), 1);
  EXPECT_GE(block->capacity(), 100u);
  BlockPtr<const Block> shared = block;  // adds const, shares ownership
  EXPECT_EQ(block.use_count(), 2);
  EXPECT_EQ(shared, block);
  BlockPtr<const Block> moved = std::move(shared);
  EXPECT_FALSE(shared);
  EXPECT_EQ(moved.use_count(), 2);
  const auto& alias = moved;
  moved = alias;  // self-assignment keeps the reference
  EXPECT_EQ(moved.use_count(), 2);
  moved = nullptr;
  EXPECT_EQ(block.use_count(), 1);
  EXPECT_EQ(moved.use_count(), 0);
  block.reset();
  EXPECT_FALSE(block);
}

TEST(BlockPool, RecyclesAReleasedBlock) {
  auto pool = BlockPool::create(4 * KiB, 2);
  BlockPtr<Block> first = pool->acquire();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->capacity(), 4 * KiB);
  const Block* address = first.get();
  std::memset(first->data(), 0x11, first->capacity());  // the whole block is writable
  EXPECT_EQ(pool->cached(), 0u);

  first.reset();
  EXPECT_EQ(pool->cached(), 1u);
  BlockPtr<Block> again = pool->acquire();
  EXPECT_EQ(again.get(), address);  // the same block, not a new allocation
  EXPECT_EQ(again.use_count(), 1);
  EXPECT_EQ(pool->cached(), 0u);
}

TEST(BlockPool, ABlockReturnsOnlyWhenItsLastSliceIsGone) {
  auto pool = BlockPool::create(1 * KiB, 2);
  BlockPtr<Block> block = pool->acquire();
  Slice a{block, block->data(), 10};
  Slice b = a.take_front(4);
  block.reset();
  EXPECT_EQ(pool->cached(), 0u);
  a = Slice{};
  EXPECT_EQ(pool->cached(), 0u);
  b = Slice{};
  EXPECT_EQ(pool->cached(), 1u);
}

TEST(BlockPool, KeepsNoMoreThanItsCap) {
  auto pool = BlockPool::create(1 * KiB, 3);
  std::vector<BlockPtr<Block>> blocks;
  std::set<const Block*> first_round;
  for (int i = 0; i < 5; ++i) {
    blocks.push_back(pool->acquire());
    first_round.insert(blocks.back().get());
  }
  EXPECT_EQ(first_round.size(), 5u);
  blocks.clear();
  EXPECT_EQ(pool->cached(), 3u);  // two were freed

  std::size_t reused = 0;
  for (int i = 0; i < 5; ++i) {
    blocks.push_back(pool->acquire());
    reused += first_round.count(blocks.back().get());
  }
  EXPECT_EQ(pool->cached(), 0u);
  EXPECT_GE(reused, 3u);  // the freed two may come back at the same address from malloc
  blocks.clear();
  EXPECT_EQ(pool->cached(), 3u);
}

TEST(BlockPool, FillMakesItsCapOfFreeBlocksAndKeepsNoMore) {
  auto pool = BlockPool::create(1 * KiB, 3);
  BlockPtr<Block> out = pool->acquire();
  pool->fill();
  EXPECT_EQ(pool->cached(), 3u);  // besides the one outstanding
  std::set<const Block*> filled;
  std::vector<BlockPtr<Block>> blocks;
  for (int i = 0; i < 3; ++i) {
    blocks.push_back(pool->acquire());
    filled.insert(blocks.back().get());
    std::memset(blocks.back()->data(), 0x33, blocks.back()->capacity());
  }
  EXPECT_EQ(filled.size(), 3u);
  EXPECT_EQ(filled.count(out.get()), 0u);
  EXPECT_EQ(pool->cached(), 0u);
  blocks.clear();
  out.reset();  // the pool is full again: this one is freed
  EXPECT_EQ(pool->cached(), 3u);
  pool->fill();  // already full: nothing more
  EXPECT_EQ(pool->cached(), 3u);
}

// An elastic pool keeps as many free blocks as were out at once within its window, however
// many, up to its ceiling: a flow whose slices hold many blocks recycles every one of them.
TEST(BlockPool, ElasticKeepsWhatWasOutWithinItsWindow) {
  auto pool = BlockPool::create_elastic(1 * KiB, 2, 8, std::chrono::hours(1));
  pool->fill();
  EXPECT_EQ(pool->cached(), 2u);  // fill makes the floor
  std::vector<BlockPtr<Block>> blocks;
  for (int i = 0; i < 6; ++i) blocks.push_back(pool->acquire());
  EXPECT_EQ(pool->outstanding(), 6u);
  blocks.clear();
  EXPECT_EQ(pool->cached(), 6u);
  EXPECT_EQ(pool->outstanding(), 0u);
  std::set<const Block*> kept;
  for (int i = 0; i < 6; ++i) {
    blocks.push_back(pool->acquire());
    kept.insert(blocks.back().get());
  }
  EXPECT_EQ(pool->cached(), 0u);  // all six came from the pool
  EXPECT_EQ(kept.size(), 6u);
  for (int i = 0; i < 6; ++i) blocks.push_back(pool->acquire());
  blocks.clear();
  EXPECT_EQ(pool->cached(), 8u);  // twelve were out; the ceiling is eight
}

// Once a window has passed without them, blocks beyond the need are freed as they come back.
// With a window of zero every return starts a new one, so the cap follows the blocks still out
// (the larger of two consecutive counts) down to the floor.
TEST(BlockPool, ElasticFreesWhatIsNoLongerNeeded) {
  auto pool = BlockPool::create_elastic(1 * KiB, 2, 8, std::chrono::steady_clock::duration{0});
  std::vector<BlockPtr<Block>> blocks;
  for (int i = 0; i < 6; ++i) blocks.push_back(pool->acquire());
  blocks.resize(3);
  EXPECT_LE(pool->cached(), 4u);  // three back, the cap followed the four then three still out
  blocks.clear();
  EXPECT_EQ(pool->cached(), 2u);  // the floor
  EXPECT_EQ(pool->outstanding(), 0u);
}

// A fixed pool's cap does not move with use.
TEST(BlockPool, FixedCapIgnoresHowManyWereOut) {
  auto pool = BlockPool::create(1 * KiB, 3);
  std::vector<BlockPtr<Block>> blocks;
  for (int i = 0; i < 6; ++i) blocks.push_back(pool->acquire());
  EXPECT_EQ(pool->outstanding(), 6u);
  blocks.clear();
  EXPECT_EQ(pool->cached(), 3u);
}

TEST(BlockPool, ZeroCapFreesEveryBlock) {
  auto pool = BlockPool::create(1 * KiB, 0);
  pool->acquire().reset();
  EXPECT_EQ(pool->cached(), 0u);
}

TEST(BlockPool, OutstandingBlocksOutliveTheOwnersHandle) {
  auto pool = BlockPool::create(1 * KiB, 2);
  const std::weak_ptr<BlockPool> watch = pool;
  BlockPtr<Block> kept = pool->acquire();
  BlockPtr<Block> other = pool->acquire();
  other.reset();  // cached in the pool
  pool.reset();
  EXPECT_FALSE(watch.expired());  // the outstanding block keeps the pool
  std::memset(kept->data(), 0x22, kept->capacity());
  kept.reset();
  EXPECT_TRUE(watch.expired());  // gone with its cached blocks (ASan checks they were freed)
}

// Blocks are filled on one thread and their slices dropped on two others, in either order; the
// filler reuses each block as soon as it is back. A reader that sees its bytes change, or a
// block reused before its last slice is gone, fails here (and TSan sees the missing ordering).
TEST(BlockPool, SlicesReleasedOnOtherThreadsReturnBlocksSafely) {
  constexpr int kRounds = 3000;
  constexpr std::size_t kBlock = 4 * KiB;
  auto pool = BlockPool::create(kBlock, 4);

  struct Queue {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<Slice> slices;
    bool done = false;
  };
  Queue queues[2];
  std::atomic<int> corrupted{0};
  auto consume = [&](Queue& q) {
    for (;;) {
      Slice slice;
      {
        std::unique_lock lock(q.mutex);
        q.ready.wait(lock, [&] { return q.done || !q.slices.empty(); });
        if (q.slices.empty()) return;
        slice = std::move(q.slices.front());
        q.slices.pop_front();
      }
      const std::uint8_t expected = slice.data[0];
      for (std::uint32_t i = 0; i < slice.size; ++i) {
        if (slice.data[i] != expected) {
          corrupted.fetch_add(1);
          break;
        }
      }
    }
  };
  std::thread workers[2] = {std::thread(consume, std::ref(queues[0])),
                            std::thread(consume, std::ref(queues[1]))};

  std::set<const Block*> seen;
  for (int round = 0; round < kRounds; ++round) {
    BlockPtr<Block> block = pool->acquire();
    seen.insert(block.get());
    const auto fill = static_cast<std::uint8_t>(round);
    std::memset(block->data(), fill, kBlock);
    Slice whole{block, block->data(), static_cast<std::uint32_t>(kBlock)};
    block.reset();
    for (auto& q : queues) {
      {
        const std::lock_guard lock(q.mutex);
        q.slices.push_back(whole);
      }
      q.ready.notify_one();
    }
  }
  for (auto& q : queues) {
    {
      const std::lock_guard lock(q.mutex);
      q.done = true;
    }
    q.ready.notify_one();
  }
  for (auto& w : workers) w.join();
  EXPECT_EQ(corrupted.load(), 0);
  EXPECT_LE(pool->cached(), 4u);
  EXPECT_EQ(pool->cached(), std::min<std::size_t>(4, seen.size()));
}

TEST(BlockAdopt, HoldsTheStringsBytes) {
  std::string text(3000, 'x');
  text[0] = 'a';
  const char* storage = text.data();
  BlockPtr<Block> block = Block::adopt(std::move(text));
  EXPECT_EQ(reinterpret_cast<const char*>(block->data()), storage);
  EXPECT_EQ(block->capacity(), 3000u);
  EXPECT_EQ(block->data()[0], 'a');
  EXPECT_EQ(block->data()[2999], 'x');
}

TEST(BlockAdopt, ASoleWholeSliceGivesItsStringBackWithoutACopy) {
  std::string text(3000, 'y');
  const char* storage = text.data();
  Slice slice = Slice::adopt(std::move(text));
  {
    Slice shared = slice;  // a second owner: the string stays where it is
    std::string out;
    EXPECT_FALSE(shared.release_string(out));
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(shared.size, 3000u);
  }
  Slice front = slice;
  Slice part = front.take_front(10);  // covers part of the string only
  std::string out;
  EXPECT_FALSE(front.release_string(out));
  front = Slice{};
  Slice copy = Slice::copy_of(part.bytes());  // not an adopted string
  EXPECT_FALSE(copy.release_string(out));

  EXPECT_EQ(slice.block.use_count(), 2);  // `part` still holds it
  EXPECT_FALSE(slice.release_string(out));
  part = Slice{};
  ASSERT_TRUE(slice.release_string(out));
  EXPECT_EQ(out.data(), storage);  // the same bytes, moved
  EXPECT_EQ(out, std::string(3000, 'y'));
  EXPECT_FALSE(slice.block);
  EXPECT_EQ(slice.size, 0u);
}

// ---------------------------------------------------------------------------------------------
// The frame reader with a pool

TEST(FrameReaderPool, TakesAReleasedBlockBackInsteadOfAllocating) {
  auto pool = BlockPool::create(4 * KiB, 2);
  FrameReader reader(4 * KiB, 4 * KiB, 0, pool);
  Frame frame;
  ASSERT_EQ(feed_one(reader, data_frame(1, 3000, 1), frame).kind, Kind::frame);
  Slice first = reader.share(frame.payload);
  // The block is shared and lacks room for the next frame: the reader moves on to another one.
  ASSERT_EQ(feed_one(reader, data_frame(3, 3000, 2), frame).kind, Kind::frame);
  Slice second = reader.share(frame.payload);
  ASSERT_NE(first.block, second.block);
  const Block* first_block = first.block.get();
  EXPECT_EQ(pool->cached(), 0u);

  first = Slice{};  // forwarded: the block goes back to the pool
  EXPECT_EQ(pool->cached(), 1u);
  ASSERT_EQ(feed_one(reader, data_frame(5, 3000, 3), frame).kind, Kind::frame);
  const Slice third = reader.share(frame.payload);
  EXPECT_EQ(third.block.get(), first_block);
  EXPECT_EQ(pool->cached(), 0u);
  EXPECT_EQ(Buffer(third.bytes().begin(), third.bytes().end()), Buffer(3000, 3));
  EXPECT_EQ(Buffer(second.bytes().begin(), second.bytes().end()), Buffer(3000, 2));
}

TEST(FrameReaderPool, SmallBlocksAreNotPooledAndAnIdleReaderGivesItsBlockBack) {
  auto pool = BlockPool::create(256 * KiB, 2);
  FrameReader reader(64 * KiB, 256 * KiB, 1 * KiB, pool);
  EXPECT_EQ(reader.prepare().size(), 1 * KiB);
  Frame frame;
  ASSERT_EQ(feed_one(reader, data_frame(1, 3000, 1), frame).kind, Kind::frame);
  // The frame outgrew the small block, so the reader took a full-size one from the pool, and
  // filled the pool first for the flow to come: two made, one taken.
  EXPECT_EQ(pool->cached(), 1u);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  EXPECT_EQ(reader.prepare().size(), 256 * KiB);  // the same full-size block, rewound
  EXPECT_EQ(pool->cached(), 1u);

  // Small reads keep rewinding the big block (a busy connection does not allocate)...
  ASSERT_EQ(feed_one(reader, data_frame(1, 16, 2), frame).kind, Kind::frame);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  EXPECT_EQ(reader.prepare().size(), 256 * KiB);
  EXPECT_EQ(pool->cached(), 1u);
  // ...until the connection goes quiet: then the big block returns to the pool rather than
  // staying pinned, and the next read uses a small block.
  EXPECT_TRUE(reader.release_idle_block());
  EXPECT_EQ(pool->cached(), 2u);
  EXPECT_EQ(reader.prepare().size(), 1 * KiB);
  EXPECT_FALSE(reader.release_idle_block());  // a small block is kept

  // Back to full-size blocks after a quiet spell: the pool is filled again before one is taken.
  BlockPtr<Block> elsewhere = pool->acquire();  // another reader's, say
  ASSERT_EQ(feed_one(reader, data_frame(1, 3000, 3), frame).kind, Kind::frame);
  EXPECT_EQ(pool->cached(), 1u);  // two free again, then one taken
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  EXPECT_EQ(reader.prepare().size(), 256 * KiB);
}

TEST(FrameReaderPool, ABlockStillSharedOrHoldingAPartialFrameIsKept) {
  auto pool = BlockPool::create(256 * KiB, 2);
  FrameReader reader(64 * KiB, 256 * KiB, 1 * KiB, pool);
  Frame frame;
  ASSERT_EQ(feed_one(reader, data_frame(1, 3000, 1), frame).kind, Kind::frame);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  const Slice held = reader.share(frame.payload);  // still being forwarded
  EXPECT_FALSE(reader.release_idle_block());
  // Half a frame waits in the block: letting go of it would lose the bytes.
  const auto bytes = data_frame(3, 100, 4);
  auto space = reader.prepare();
  std::memcpy(space.data(), bytes.data(), 20);
  reader.commit(20);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  EXPECT_FALSE(reader.release_idle_block());
}

TEST(FrameReaderPool, APoolOfAnotherSizeIsNotUsed) {
  auto pool = BlockPool::create(8 * KiB, 2);
  FrameReader reader(kMinMaxFrame, 4 * KiB, 0, pool);
  EXPECT_EQ(reader.prepare().size(), 4 * KiB);
  Frame frame;
  ASSERT_EQ(feed_one(reader, data_frame(1, 100, 1), frame).kind, Kind::frame);
  const Slice held = reader.share(frame.payload);
  EXPECT_EQ(held.block->capacity(), 4 * KiB);
  EXPECT_EQ(pool->cached(), 0u);
}

}  // namespace
}  // namespace switchboard::wire
