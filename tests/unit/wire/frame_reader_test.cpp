// Unit tests for the incremental frame reader and slices (buffer.hpp): any split of the byte
// stream decodes the same frames, shared slices survive the reader moving on, block reuse,
// sticky errors and the max-frame limit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "feed.hpp"
#include "switchboard/wire/buffer.hpp"
#include "switchboard/wire/codec.hpp"

namespace switchboard::wire {

// Readable gtest output for the enums; found by argument-dependent lookup.
static void PrintTo(DecodeError error, std::ostream* os) { *os << decode_error_name(error); }
static void PrintTo(FrameType type, std::ostream* os) {
  *os << frame_type_name(type) << " (0x" << std::hex << static_cast<unsigned>(type) << std::dec
      << ")";
}
static void PrintTo(DecodeResult::Kind kind, std::ostream* os) {
  switch (kind) {
    case DecodeResult::Kind::need_more:
      *os << "need_more";
      return;
    case DecodeResult::Kind::frame:
      *os << "frame";
      return;
    case DecodeResult::Kind::error:
      *os << "error";
      return;
  }
  *os << "Kind(" << static_cast<unsigned>(kind) << ")";
}

namespace {

using Buffer = std::vector<std::uint8_t>;
using Kind = DecodeResult::Kind;
using test::feed_one;

constexpr std::size_t KiB = 1024;

// ---------------------------------------------------------------------------------------------
// Helpers

Uuid make_uuid(std::uint8_t seed) {
  Uuid id;
  for (std::size_t i = 0; i < id.bytes.size(); ++i) {
    id.bytes[i] = static_cast<std::uint8_t>(seed + i);
  }
  return id;
}

Bytes as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

/// `size` pseudo-random bytes that differ for every seed, so a payload read from the wrong place
/// or a block overwritten too early shows up as a mismatch.
Buffer pattern(std::size_t size, std::uint32_t seed) {
  Buffer out(size);
  std::uint32_t x = seed * 2654435761u + 0x9E3779B9u;
  for (auto& byte : out) {
    x = x * 1664525u + 1013904223u;
    byte = static_cast<std::uint8_t>(x >> 24);
  }
  return out;
}

template <typename Encode>
Buffer encode(Encode&& encode_into) {
  Buffer out;
  encode_into(out);
  return out;
}

std::uint32_t load_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

/// A frame as the test sees it: the header fields and a copy of the payload.
struct Decoded {
  FrameType type{};
  std::uint8_t flags = 0;
  std::uint32_t stream = 0;
  std::uint32_t length = 0;
  Buffer payload;
};

/// The header and payload of one encoded frame, read by hand (independent of decode_frame).
Decoded expected_of(const Buffer& frame) {
  EXPECT_GE(frame.size(), kHeaderSize);
  Decoded d;
  d.type = static_cast<FrameType>(frame[0]);
  d.flags = frame[1];
  d.stream = load_be32(frame.data() + 4);
  d.length = load_be32(frame.data() + 8);
  EXPECT_EQ(std::size_t{d.length}, frame.size() - kHeaderSize);
  d.payload.assign(frame.begin() + static_cast<std::ptrdiff_t>(kHeaderSize), frame.end());
  return d;
}

/// A byte stream of concatenated frames and what decoding it must produce.
struct Sequence {
  Buffer bytes;
  std::vector<Decoded> frames;
  std::uint32_t largest_payload = 0;
};

Sequence make_sequence(const std::vector<Buffer>& frames) {
  Sequence s;
  for (const Buffer& frame : frames) {
    s.bytes.insert(s.bytes.end(), frame.begin(), frame.end());
    s.frames.push_back(expected_of(frame));
    s.largest_payload = std::max(s.largest_payload, s.frames.back().length);
  }
  return s;
}

::testing::AssertionResult same_frame(const Decoded& got, const Decoded& want) {
  if (got.type != want.type || got.flags != want.flags || got.stream != want.stream ||
      got.length != want.length) {
    return ::testing::AssertionFailure()
           << "header differs: got type 0x" << std::hex << static_cast<unsigned>(got.type)
           << " flags 0x" << unsigned{got.flags} << " stream 0x" << got.stream << std::dec
           << " length " << got.length << ", want type 0x" << std::hex
           << static_cast<unsigned>(want.type) << " flags 0x" << unsigned{want.flags}
           << " stream 0x" << want.stream << std::dec << " length " << want.length;
  }
  if (got.payload != want.payload) {
    const auto diff = std::mismatch(got.payload.begin(), got.payload.end(), want.payload.begin(),
                                    want.payload.end());
    return ::testing::AssertionFailure()
           << "payload of " << want.length << " bytes differs at offset "
           << (diff.first - got.payload.begin()) << " (got " << got.payload.size() << " bytes)";
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_frames(const std::vector<Decoded>& got,
                                       const std::vector<Decoded>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << "decoded " << got.size() << " frames, expected " << want.size();
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    auto same = same_frame(got[i], want[i]);
    if (!same) return same << " (frame #" << i << ")";
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult slices_match(const std::vector<Slice>& slices,
                                        const std::vector<Decoded>& want) {
  if (slices.size() != want.size()) {
    return ::testing::AssertionFailure()
           << "held " << slices.size() << " slices, expected " << want.size();
  }
  for (std::size_t i = 0; i < slices.size(); ++i) {
    const Bytes bytes = slices[i].bytes();
    if (!slices[i].block || bytes.size() != want[i].payload.size() ||
        !std::equal(bytes.begin(), bytes.end(), want[i].payload.begin())) {
      return ::testing::AssertionFailure()
             << "slice #" << i << " (" << bytes.size() << " bytes) no longer holds its payload";
    }
  }
  return ::testing::AssertionSuccess();
}

/// Drives a FrameReader the way a socket loop does: prepare, copy what fits, commit, then take
/// frames until next() stops returning one. Optionally keeps a shared slice of every payload.
class Feeder {
public:
  Feeder(std::uint32_t max_frame, std::size_t block_size, bool keep_slices = false)
      : reader(max_frame, block_size), keep_slices_(keep_slices) {}

  /// Feeds one piece of the stream (possibly over several prepare() spans).
  void feed(Bytes piece) {
    while (!piece.empty()) {
      const std::size_t pending = reader.buffered();
      const std::span<std::uint8_t> space = reader.prepare();
      ASSERT_GE(space.size(), 1u);
      ASSERT_EQ(reader.buffered(), pending);
      if (last.kind == Kind::need_more && last.needed > pending) {
        // prepare() promises room for at least the rest of the current frame.
        ASSERT_GE(space.size(), last.needed - pending);
      }
      const std::size_t n = std::min(space.size(), piece.size());
      std::memcpy(space.data(), piece.data(), n);
      reader.commit(n);
      piece = piece.subspan(n);
      drain();
      if (::testing::Test::HasFatalFailure() || last.kind == Kind::error) return;
    }
  }

  void feed_all(Bytes stream) { feed(stream); }

  void feed_bytewise(Bytes stream) {
    for (std::size_t i = 0; i < stream.size(); ++i) {
      feed(stream.subspan(i, 1));
      if (::testing::Test::HasFatalFailure() || last.kind == Kind::error) return;
    }
  }

  void feed_random(Bytes stream, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::size_t pos = 0;
    while (pos < stream.size()) {
      std::size_t max_piece = 0;
      switch (rng() % 3) {
        case 0:
          max_piece = 16;
          break;
        case 1:
          max_piece = 4 * KiB;
          break;
        default:
          max_piece = 300 * KiB;
          break;
      }
      const std::size_t n = std::min<std::size_t>(1 + rng() % max_piece, stream.size() - pos);
      feed(stream.subspan(pos, n));
      if (::testing::Test::HasFatalFailure() || last.kind == Kind::error) return;
      pos += n;
    }
  }

  /// After the whole stream: nothing left over, waiting for the next header.
  void expect_clean_end() const {
    EXPECT_EQ(last.kind, Kind::need_more);
    EXPECT_EQ(last.needed, kHeaderSize);
    EXPECT_EQ(reader.buffered(), 0u);
  }

  FrameReader reader;
  std::vector<Decoded> decoded;
  std::vector<Slice> slices;
  DecodeResult last;

private:
  void drain() {
    Frame frame;
    for (;;) {
      last = reader.next(frame);
      if (last.kind != Kind::frame) return;
      ASSERT_EQ(frame.header.type, last.header.type);
      ASSERT_EQ(frame.payload.data(), last.payload.data());
      ASSERT_EQ(frame.payload.size(), last.payload.size());
      Decoded d;
      d.type = frame.header.type;
      d.flags = frame.header.flags;
      d.stream = frame.header.stream;
      d.length = frame.header.length;
      d.payload.assign(frame.payload.begin(), frame.payload.end());
      decoded.push_back(std::move(d));
      if (keep_slices_) slices.push_back(reader.share(frame.payload));
    }
  }

  bool keep_slices_;
};

// ---------------------------------------------------------------------------------------------
// Frame sequences

/// One frame of every type (connection frames and stream frames, with variants); stream frames
/// use `stream`, payload contents depend on `seed`.
std::vector<Buffer> control_frames(std::uint32_t stream, std::uint8_t seed) {
  std::vector<Buffer> out;
  Hello hello;
  hello.hello_flags = flags::kAcceptRequests;
  hello.channel = make_uuid(seed);
  hello.peer_id = make_uuid(static_cast<std::uint8_t>(seed + 16));
  hello.max_frame = 0x00012345;
  hello.stream_window = 0x00ABCDEF;
  hello.token = "token-" + std::to_string(seed);
  out.push_back(encode([&](Buffer& b) { append_hello(b, hello); }));
  out.push_back(encode([&](Buffer& b) { append_hello(b, Hello{}); }));

  Welcome welcome;
  welcome.peer_id = make_uuid(static_cast<std::uint8_t>(seed + 32));
  welcome.max_frame = 0x00020304;
  welcome.stream_window = 0x00050607;
  welcome.max_streams = 0x08090A0B;
  welcome.keepalive_ms = 0x0C0D0E0F;
  out.push_back(encode([&](Buffer& b) { append_welcome(b, welcome); }));

  for (std::size_t peers : {0u, 1u, 5u}) {
    Presence snapshot{PresenceEvent::snapshot, 7, {}};
    for (std::size_t i = 0; i < peers; ++i) {
      snapshot.peers.push_back(make_uuid(static_cast<std::uint8_t>(seed + 3 * i)));
    }
    out.push_back(encode([&](Buffer& b) { append_presence(b, snapshot, peers == 1); }));
  }
  out.push_back(encode([&](Buffer& b) {
    append_presence(b, Presence{PresenceEvent::joined, 8, {make_uuid(seed)}});
  }));
  out.push_back(encode([&](Buffer& b) {
    append_presence(b, Presence{PresenceEvent::left, 9, {make_uuid(seed)}});
  }));

  out.push_back(encode([&](Buffer& b) { append_ping(b, 0x0102030405060708u + seed, false); }));
  out.push_back(encode([&](Buffer& b) { append_ping(b, 0x0102030405060708u + seed, true); }));
  out.push_back(encode([&](Buffer& b) {
    append_go_away(b, GoAway{0x7FFFFFFF, Status::resource_exhausted, "relay draining"});
  }));
  out.push_back(encode([&](Buffer& b) {
    append_error(b, Error{Status::unauthenticated, std::string(kMaxMessageSize, 'e')});
  }));

  Open open;
  open.kind = StreamKind::broadcast;
  open.deadline_ms = 1000;
  open.idle_ms = 200;
  open.peer = make_uuid(static_cast<std::uint8_t>(seed + 48));
  open.metadata = {{"content-type", "application/json"}, {"", ""}};
  out.push_back(encode([&](Buffer& b) { append_open(b, stream, open, as_bytes("hi"), true); }));
  out.push_back(encode([&](Buffer& b) { append_open(b, stream + 2, Open{}); }));
  out.push_back(encode([&](Buffer& b) { append_data(b, stream, {}, false); }));
  out.push_back(encode([&](Buffer& b) { append_data(b, stream, {}, true); }));
  out.push_back(encode([&](Buffer& b) {
    append_end(b, stream, End{Status::application, 0xCAFEBABE, 3, 4, "handler failed"});
  }));
  out.push_back(encode([&](Buffer& b) {
    append_reset(b, stream + 2, Reset{Status::cancelled, 0x11223344, "reset"});
  }));
  out.push_back(encode([&](Buffer& b) { append_window(b, stream, 0x01020304u + seed); }));
  return out;
}

/// Control frames interleaved with DATA and OPEN frames carrying the given body sizes.
std::vector<Buffer> mixed_frames(const std::vector<std::size_t>& data_bodies,
                                 const std::vector<std::size_t>& open_bodies) {
  std::vector<Buffer> bodies;
  std::uint32_t seed = 1;
  for (std::size_t size : data_bodies) {
    const Buffer body = pattern(size, seed);
    const std::uint32_t stream = 2 * seed + 1;
    bodies.push_back(encode([&](Buffer& b) { append_data(b, stream, body, seed % 2 == 0); }));
    ++seed;
  }
  for (std::size_t size : open_bodies) {
    const Buffer body = pattern(size, seed);
    Open open;
    open.kind = StreamKind::to_peer;
    open.peer = make_uuid(static_cast<std::uint8_t>(seed));
    open.metadata = {{std::string("k").append(std::to_string(seed)), "v"}};
    const std::uint32_t stream = 2 * seed + 1;
    bodies.push_back(encode([&](Buffer& b) { append_open(b, stream, open, body, false); }));
    ++seed;
  }
  std::vector<Buffer> controls;
  for (std::uint8_t round = 0; round < 2; ++round) {
    auto more = control_frames(1000u + round, static_cast<std::uint8_t>(0x40 * round + 1));
    controls.insert(controls.end(), more.begin(), more.end());
  }
  std::vector<Buffer> out;
  const std::size_t n = std::max(bodies.size(), controls.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (i < bodies.size()) out.push_back(bodies[i]);
    if (i < controls.size()) out.push_back(controls[i]);
  }
  return out;
}

constexpr std::uint32_t kLargeMaxFrame = 256 * KiB;

/// Bodies of 0 bytes up to 200 KiB, around the header size and block-size boundaries. About
/// 1 MiB in all.
const Sequence& large_sequence() {
  static const Sequence sequence =
      make_sequence(mixed_frames({0, 1, 2, 11, 12, 13, 100, 1000, 4095, 4096, 4097, 65535, 65536,
                                  65537, 100000, 150000, 200 * KiB},
                                 {0, 500, 70000, 200 * KiB - 64}));
  return sequence;
}

constexpr std::uint32_t kSmallMaxFrame = 2048;
constexpr std::size_t kSmallBlock = 256;

/// A few KiB with every type, including frames larger than kSmallBlock.
const Sequence& small_sequence() {
  static const Sequence sequence =
      make_sequence(mixed_frames({0, 1, 11, 12, 13, 100, 250, 600}, {0, 300}));
  return sequence;
}

// Block sizes below the largest frame (frames assembled across blocks), and one that holds a
// whole maximum frame as the relay configures it.
constexpr std::size_t kLargeBlockSizes[] = {4 * KiB, 64 * KiB, kLargeMaxFrame + kHeaderSize};

// ---------------------------------------------------------------------------------------------
// 1. Any split of the stream decodes the same frames

TEST(FrameReaderSplits, SequencesCoverEveryTypeAndTheBodySizes) {
  for (const Sequence* s : {&large_sequence(), &small_sequence()}) {
    std::vector<FrameType> types;
    for (const auto& frame : s->frames) types.push_back(frame.type);
    for (FrameType type : {FrameType::hello, FrameType::welcome, FrameType::presence,
                           FrameType::ping, FrameType::go_away, FrameType::error, FrameType::open,
                           FrameType::data, FrameType::end, FrameType::reset, FrameType::window}) {
      EXPECT_NE(std::find(types.begin(), types.end(), type), types.end()) << frame_type_name(type);
    }
  }
  EXPECT_GT(large_sequence().frames.size(), 50u);
  EXPECT_GE(large_sequence().largest_payload, 200 * KiB);
  EXPECT_LE(large_sequence().largest_payload, kLargeMaxFrame);
  EXPECT_GT(small_sequence().largest_payload, kSmallBlock);
  EXPECT_LE(small_sequence().largest_payload, kSmallMaxFrame);
}

TEST(FrameReaderSplits, WholeStreamInOnePiece) {
  const Sequence& s = large_sequence();
  for (std::size_t block : kLargeBlockSizes) {
    SCOPED_TRACE("block_size=" + std::to_string(block));
    Feeder feeder(kLargeMaxFrame, block);
    feeder.feed_all(s.bytes);
    ASSERT_FALSE(HasFatalFailure());
    EXPECT_TRUE(same_frames(feeder.decoded, s.frames));
    feeder.expect_clean_end();
  }
}

TEST(FrameReaderSplits, OneByteAtATime) {
  const Sequence& s = large_sequence();
  for (std::size_t block : kLargeBlockSizes) {
    SCOPED_TRACE("block_size=" + std::to_string(block));
    Feeder feeder(kLargeMaxFrame, block);
    feeder.feed_bytewise(s.bytes);
    ASSERT_FALSE(HasFatalFailure());
    EXPECT_TRUE(same_frames(feeder.decoded, s.frames));
    feeder.expect_clean_end();
  }
}

TEST(FrameReaderSplits, SmallSequenceOneByteAtATime) {
  const Sequence& s = small_sequence();
  Feeder feeder(kSmallMaxFrame, kSmallBlock, /*keep_slices=*/true);
  feeder.feed_bytewise(s.bytes);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_TRUE(same_frames(feeder.decoded, s.frames));
  EXPECT_TRUE(slices_match(feeder.slices, s.frames));
  feeder.expect_clean_end();
}

TEST(FrameReaderSplits, EverySplitPointIntoTwoPieces) {
  const Sequence& s = small_sequence();
  const Bytes all(s.bytes);
  for (std::size_t cut = 0; cut <= all.size(); ++cut) {
    SCOPED_TRACE("cut=" + std::to_string(cut));
    for (bool keep_slices : {false, true}) {
      Feeder feeder(kSmallMaxFrame, kSmallBlock, keep_slices);
      feeder.feed(all.first(cut));
      ASSERT_FALSE(HasFatalFailure());
      ASSERT_NE(feeder.last.kind, Kind::error);
      feeder.feed(all.subspan(cut));
      ASSERT_FALSE(HasFatalFailure());
      ASSERT_TRUE(same_frames(feeder.decoded, s.frames));
      if (keep_slices) {
        ASSERT_TRUE(slices_match(feeder.slices, s.frames));
      }
      feeder.expect_clean_end();
    }
  }
}

TEST(FrameReaderSplits, RandomPiecesOfTheSmallSequence) {
  const Sequence& s = small_sequence();
  for (std::uint32_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE("seed=" + std::to_string(seed));
    Feeder feeder(kSmallMaxFrame, kSmallBlock, /*keep_slices=*/seed % 2 == 0);
    feeder.feed_random(s.bytes, seed);
    ASSERT_FALSE(HasFatalFailure());
    ASSERT_TRUE(same_frames(feeder.decoded, s.frames));
    if (seed % 2 == 0) {
      ASSERT_TRUE(slices_match(feeder.slices, s.frames));
    }
    feeder.expect_clean_end();
  }
}

TEST(FrameReaderSplits, RandomPiecesOfTheLargeSequence) {
  const Sequence& s = large_sequence();
  for (std::size_t block : kLargeBlockSizes) {
    for (std::uint32_t seed = 1; seed <= 6; ++seed) {
      SCOPED_TRACE("block_size=" + std::to_string(block) + " seed=" + std::to_string(seed));
      Feeder feeder(kLargeMaxFrame, block, /*keep_slices=*/seed % 2 == 0);
      feeder.feed_random(s.bytes, seed);
      ASSERT_FALSE(HasFatalFailure());
      ASSERT_TRUE(same_frames(feeder.decoded, s.frames));
      if (seed % 2 == 0) {
        ASSERT_TRUE(slices_match(feeder.slices, s.frames));
      }
      feeder.expect_clean_end();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Shared slices and block reuse

Buffer data_frame(std::uint32_t stream, const Buffer& body, bool fin = false) {
  return encode([&](Buffer& b) { append_data(b, stream, body, fin); });
}

TEST(FrameReaderSlices, SharedSlicesSurviveCopyOnStraddle) {
  // Block of 256: two 112-byte frames fit, the third straddles the end of the block and must be
  // moved to a fresh block without touching the first two payloads.
  const Buffer body1 = pattern(100, 1);
  const Buffer body2 = pattern(100, 2);
  const Buffer body3 = pattern(100, 3);
  Buffer stream = data_frame(1, body1);
  const Buffer f2 = data_frame(3, body2);
  const Buffer f3 = data_frame(5, body3);
  stream.insert(stream.end(), f2.begin(), f2.end());
  stream.insert(stream.end(), f3.begin(), f3.end());
  ASSERT_EQ(stream.size(), 336u);

  FrameReader reader(kMinMaxFrame, 256);
  const auto space = reader.prepare();
  ASSERT_EQ(space.size(), 256u);
  std::memcpy(space.data(), stream.data(), space.size());
  reader.commit(space.size());

  Frame frame;
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  Slice s1 = reader.share(frame.payload);
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  Slice s2 = reader.share(frame.payload);
  const DecodeResult more = reader.next(frame);
  ASSERT_EQ(more.kind, Kind::need_more);
  EXPECT_EQ(more.needed, 112u);
  EXPECT_EQ(reader.buffered(), 32u);
  EXPECT_EQ(s1.block, s2.block);

  const auto rest = reader.prepare();
  // The partial third frame was copied into a fresh block.
  const auto* old_begin = s1.block->data();
  const auto* old_end = old_begin + s1.block->capacity();
  const std::less<const std::uint8_t*> before;
  EXPECT_TRUE(before(rest.data(), old_begin) || !before(rest.data(), old_end));
  ASSERT_GE(rest.size(), 112u - 32u);
  std::fill(rest.begin(), rest.end(), std::uint8_t{0xEE});  // scribble over the fresh space
  std::memcpy(rest.data(), stream.data() + 256, 80);
  reader.commit(80);
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  Slice s3 = reader.share(frame.payload);
  EXPECT_NE(s3.block, s1.block);
  EXPECT_EQ(frame.header.stream, 5u);

  const Buffer got1(s1.bytes().begin(), s1.bytes().end());
  const Buffer got2(s2.bytes().begin(), s2.bytes().end());
  const Buffer got3(s3.bytes().begin(), s3.bytes().end());
  EXPECT_EQ(got1, body1);
  EXPECT_EQ(got2, body2);
  EXPECT_EQ(got3, body3);
}

TEST(FrameReaderSlices, SliceStaysValidWhileTheReaderMovesThroughManyBlocks) {
  const Buffer kept_body = pattern(300, 42);
  Frame frame;
  Slice kept;
  {
    FrameReader reader(kMinMaxFrame, 512);
    const Buffer f = data_frame(7, kept_body);
    auto space = reader.prepare();
    std::memcpy(space.data(), f.data(), f.size());
    reader.commit(f.size());
    ASSERT_EQ(reader.next(frame).kind, Kind::frame);
    kept = reader.share(frame.payload);
    // Push 200 more frames through the same reader: many new blocks, some rewinds.
    for (std::uint32_t i = 0; i < 200; ++i) {
      const Buffer other = data_frame(9, pattern(1 + (i * 37) % 700, 1000 + i));
      std::size_t done = 0;
      while (done < other.size()) {
        auto s = reader.prepare();
        const std::size_t n = std::min(s.size(), other.size() - done);
        std::memset(s.data(), 0xAB, s.size());  // the reader's free space is ours to scribble
        std::memcpy(s.data(), other.data() + done, n);
        reader.commit(n);
        done += n;
        while (reader.next(frame).kind == Kind::frame) {
        }
      }
    }
    EXPECT_EQ(reader.buffered(), 0u);
  }
  // The reader is gone; the slice still owns its block.
  EXPECT_EQ(kept.block.use_count(), 1);
  const Buffer got(kept.bytes().begin(), kept.bytes().end());
  EXPECT_EQ(got, kept_body);
}

TEST(FrameReaderSlices, ReusesItsBlockWhenNothingSharesIt) {
  FrameReader reader(kMinMaxFrame, 4 * KiB);
  const std::uint8_t* start = reader.prepare().data();
  Frame frame;
  for (std::uint32_t i = 0; i < 50; ++i) {
    SCOPED_TRACE(i);
    const Buffer f = data_frame(1, pattern(10 + i, i));
    auto space = reader.prepare();
    ASSERT_EQ(space.data(), start);  // rewound: everything consumed, no slice outstanding
    ASSERT_EQ(space.size(), 4 * KiB);
    std::memcpy(space.data(), f.data(), f.size());
    reader.commit(f.size());
    ASSERT_EQ(reader.next(frame).kind, Kind::frame);
    EXPECT_EQ(frame.payload.data(), start + kHeaderSize);
    EXPECT_EQ(reader.next(frame).kind, Kind::need_more);
    EXPECT_EQ(reader.buffered(), 0u);
  }
}

TEST(FrameReaderSlices, DoesNotRewindWhileASliceIsHeld) {
  FrameReader reader(kMinMaxFrame, 4 * KiB);
  const std::uint8_t* start = reader.prepare().data();
  const Buffer body1 = pattern(64, 1);
  const Buffer f1 = data_frame(1, body1);
  std::memcpy(reader.prepare().data(), f1.data(), f1.size());
  reader.commit(f1.size());
  Frame frame;
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  Slice held = reader.share(frame.payload);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  ASSERT_EQ(reader.buffered(), 0u);

  // Everything is consumed, but the block is shared: the reader appends after the frame.
  auto space = reader.prepare();
  EXPECT_EQ(space.data(), start + f1.size());
  const Buffer f2 = data_frame(3, pattern(64, 2));
  std::memcpy(space.data(), f2.data(), f2.size());
  reader.commit(f2.size());
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  EXPECT_EQ(frame.payload.data(), start + f1.size() + kHeaderSize);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  EXPECT_EQ(Buffer(held.bytes().begin(), held.bytes().end()), body1);

  // A held slice of a slice (take_front) pins the block as well.
  Slice front = held.take_front(10);
  held = Slice{};
  EXPECT_EQ(reader.prepare().data(), start + f1.size() + f2.size());
  EXPECT_EQ(Buffer(front.bytes().begin(), front.bytes().end()),
            Buffer(body1.begin(), body1.begin() + 10));

  // Released: the next prepare rewinds to the start of the same block.
  front = Slice{};
  EXPECT_EQ(reader.prepare().data(), start);
}

TEST(FrameReaderSlices, KeepsFillingTheSharedBlockWhileTheNextHeaderFits) {
  // After a frame, the reader only needs room for the next header: with 1084 bytes left in a
  // shared block it goes on in place instead of moving to a fresh block.
  FrameReader reader(4 * KiB, 4 * KiB);
  const std::uint8_t* start = reader.prepare().data();
  const Buffer big = data_frame(1, pattern(3000, 1));
  std::memcpy(reader.prepare().data(), big.data(), big.size());
  reader.commit(big.size());
  Frame frame;
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  const Slice held = reader.share(frame.payload);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  auto space = reader.prepare();
  EXPECT_EQ(space.data(), start + big.size());
  EXPECT_EQ(space.size(), 4 * KiB - big.size());

  // A frame that does not fit the rest of the shared block moves to a fresh one.
  const Buffer next = data_frame(3, pattern(2000, 2));
  const std::size_t part = space.size();
  std::memcpy(space.data(), next.data(), part);
  reader.commit(part);
  const DecodeResult r = reader.next(frame);
  ASSERT_EQ(r.kind, Kind::need_more);
  EXPECT_EQ(r.needed, next.size());
  space = reader.prepare();
  EXPECT_NE(space.data(), start + big.size() + part);
  ASSERT_GE(space.size(), next.size() - part);
  std::memcpy(space.data(), next.data() + part, next.size() - part);
  reader.commit(next.size() - part);
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  EXPECT_EQ(Buffer(frame.payload.begin(), frame.payload.end()), pattern(2000, 2));
  EXPECT_EQ(Buffer(held.bytes().begin(), held.bytes().end()), pattern(3000, 1));
}

TEST(FrameReaderSlices, DoesNotRewindWhilePartOfTheNextFrameIsBuffered) {
  FrameReader reader(kMinMaxFrame, 4 * KiB);
  const std::uint8_t* start = reader.prepare().data();
  Buffer stream = data_frame(1, pattern(50, 1));
  const std::size_t first = stream.size();
  const Buffer second = data_frame(3, pattern(50, 2));
  stream.insert(stream.end(), second.begin(), second.begin() + 20);
  std::memcpy(reader.prepare().data(), stream.data(), stream.size());
  reader.commit(stream.size());
  Frame frame;
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  EXPECT_EQ(reader.buffered(), 20u);
  auto space = reader.prepare();
  EXPECT_EQ(space.data(), start + stream.size());
  std::memcpy(space.data(), second.data() + 20, second.size() - 20);
  reader.commit(second.size() - 20);
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  EXPECT_EQ(frame.payload.data(), start + first + kHeaderSize);
  EXPECT_EQ(Buffer(frame.payload.begin(), frame.payload.end()), pattern(50, 2));
}

TEST(FrameReaderSlices, FramesLargerThanTheBlockAreAssembled) {
  constexpr std::size_t kBlock = 4 * KiB;
  constexpr std::uint32_t kMaxFrame = 16 * KiB;
  std::vector<Buffer> frames;
  for (std::uint32_t i = 0; i < 6; ++i) {
    frames.push_back(data_frame(2 * i + 1, pattern(10 * KiB + i, 100 + i), i % 2 == 0));
    frames.push_back(encode([&](Buffer& b) { append_ping(b, i, false); }));
  }
  frames.push_back(data_frame(99, pattern(kMaxFrame, 7)));  // exactly the limit
  const Sequence s = make_sequence(frames);

  {
    SCOPED_TRACE("one piece");
    Feeder feeder(kMaxFrame, kBlock, true);
    feeder.feed_all(s.bytes);
    ASSERT_FALSE(HasFatalFailure());
    EXPECT_TRUE(same_frames(feeder.decoded, s.frames));
    EXPECT_TRUE(slices_match(feeder.slices, s.frames));
    feeder.expect_clean_end();
  }
  {
    SCOPED_TRACE("one byte at a time");
    Feeder feeder(kMaxFrame, kBlock, true);
    feeder.feed_bytewise(s.bytes);
    ASSERT_FALSE(HasFatalFailure());
    EXPECT_TRUE(same_frames(feeder.decoded, s.frames));
    EXPECT_TRUE(slices_match(feeder.slices, s.frames));
    feeder.expect_clean_end();
  }
  for (std::uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE("random pieces, seed=" + std::to_string(seed));
    Feeder feeder(kMaxFrame, kBlock, seed % 2 == 0);
    feeder.feed_random(s.bytes, seed);
    ASSERT_FALSE(HasFatalFailure());
    EXPECT_TRUE(same_frames(feeder.decoded, s.frames));
    if (seed % 2 == 0) {
      EXPECT_TRUE(slices_match(feeder.slices, s.frames));
    }
    feeder.expect_clean_end();
  }
}

TEST(FrameReaderSlices, PrepareMakesRoomForTheRestOfALargeFrame) {
  FrameReader reader(16 * KiB, 4 * KiB);
  const Buffer big = data_frame(1, pattern(10 * KiB, 5));
  auto space = reader.prepare();
  ASSERT_EQ(space.size(), 4 * KiB);
  std::memcpy(space.data(), big.data(), kHeaderSize);
  reader.commit(kHeaderSize);
  Frame frame;
  const DecodeResult r = reader.next(frame);
  ASSERT_EQ(r.kind, Kind::need_more);
  EXPECT_EQ(r.needed, big.size());
  space = reader.prepare();
  ASSERT_GE(space.size(), big.size() - kHeaderSize);
  std::memcpy(space.data(), big.data() + kHeaderSize, big.size() - kHeaderSize);
  reader.commit(big.size() - kHeaderSize);
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  EXPECT_EQ(Buffer(frame.payload.begin(), frame.payload.end()), pattern(10 * KiB, 5));
}

// ---------------------------------------------------------------------------------------------
// 3. Errors and the max-frame limit

Buffer header_only(FrameType type, std::uint32_t stream, std::uint32_t length) {
  Buffer out(kHeaderSize);
  encode_header(FrameHeader{type, 0, stream, length}, out.data());
  return out;
}

TEST(FrameReaderErrors, OversizedHeaderFailsBeforeAnyPayloadArrives) {
  FrameReader reader(kMinMaxFrame, 4 * KiB);
  const Buffer header = header_only(FrameType::data, 1, kMinMaxFrame + 1);
  Frame frame;
  // Byte by byte: need_more until the twelfth header byte, then the error at once.
  for (std::size_t i = 0; i < kHeaderSize; ++i) {
    auto space = reader.prepare();
    space[0] = header[i];
    reader.commit(1);
    const DecodeResult r = reader.next(frame);
    if (i + 1 < kHeaderSize) {
      ASSERT_EQ(r.kind, Kind::need_more) << i;
      EXPECT_EQ(r.needed, kHeaderSize);
    } else {
      ASSERT_EQ(r.kind, Kind::error);
      EXPECT_EQ(r.error, DecodeError::frame_too_large);
    }
  }
  EXPECT_EQ(reader.buffered(), kHeaderSize);

  // Sticky: more bytes, a valid frame, a raised limit change nothing.
  const Buffer ping = encode([](Buffer& b) { append_ping(b, 1, false); });
  for (int round = 0; round < 3; ++round) {
    auto space = reader.prepare();
    ASSERT_GE(space.size(), ping.size());
    std::memcpy(space.data(), ping.data(), ping.size());
    reader.commit(ping.size());
    const DecodeResult r = reader.next(frame);
    EXPECT_EQ(r.kind, Kind::error);
    EXPECT_EQ(r.error, DecodeError::frame_too_large);
  }
  reader.set_max_frame(64 * KiB);
  const DecodeResult r = reader.next(frame);
  EXPECT_EQ(r.kind, Kind::error);
  EXPECT_EQ(r.error, DecodeError::frame_too_large);
}

TEST(FrameReaderErrors, HeaderAtExactlyTheLimitWaitsForItsPayload) {
  FrameReader reader(kMinMaxFrame, 4 * KiB);
  const Buffer header = header_only(FrameType::data, 1, kMinMaxFrame);
  std::memcpy(reader.prepare().data(), header.data(), header.size());
  reader.commit(header.size());
  Frame frame;
  const DecodeResult r = reader.next(frame);
  EXPECT_EQ(r.kind, Kind::need_more);
  EXPECT_EQ(r.needed, kHeaderSize + kMinMaxFrame);
}

TEST(FrameReaderErrors, OtherHeaderErrorsAreStickyToo) {
  struct Case {
    std::string name;
    Buffer header;
    DecodeError error;
  };
  Buffer unknown = header_only(FrameType::data, 1, 0);
  unknown[0] = 0x7F;
  const Case cases[] = {
      {"unknown type", unknown, DecodeError::unknown_type},
      {"stream frame on stream 0", header_only(FrameType::data, 0, 0), DecodeError::bad_stream_id},
      {"connection frame on a stream", header_only(FrameType::ping, 1, 8),
       DecodeError::bad_stream_id},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    FrameReader reader(kMinMaxFrame, 4 * KiB);
    std::memcpy(reader.prepare().data(), c.header.data(), c.header.size());
    reader.commit(c.header.size());
    Frame frame;
    for (int round = 0; round < 2; ++round) {
      const DecodeResult r = reader.next(frame);
      EXPECT_EQ(r.kind, Kind::error);
      EXPECT_EQ(r.error, c.error);
    }
  }
}

TEST(FrameReaderErrors, NextOnAFreshReaderNeedsAHeader) {
  FrameReader reader(kMinMaxFrame, 4 * KiB);
  Frame frame;
  const DecodeResult r = reader.next(frame);
  EXPECT_EQ(r.kind, Kind::need_more);
  EXPECT_EQ(r.needed, kHeaderSize);
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(FrameReaderLimits, SetMaxFrameRaisesTheLimit) {
  const Buffer big = data_frame(1, pattern(2000, 1));
  {
    FrameReader reader(kMinMaxFrame, 4 * KiB);
    Frame frame;
    EXPECT_EQ(feed_one(reader, big, frame).error, DecodeError::frame_too_large);
  }
  for (std::uint32_t limit : {2000u, 4096u}) {
    SCOPED_TRACE(limit);
    FrameReader reader(kMinMaxFrame, 4 * KiB);
    reader.set_max_frame(limit);
    Frame frame;
    const DecodeResult r = feed_one(reader, big, frame);
    ASSERT_EQ(r.kind, Kind::frame);
    EXPECT_EQ(frame.header.length, 2000u);
    EXPECT_EQ(Buffer(frame.payload.begin(), frame.payload.end()), pattern(2000, 1));
  }
}

TEST(FrameReaderLimits, SetMaxFrameLowersTheLimit) {
  const Buffer big = data_frame(1, pattern(2000, 1));
  FrameReader reader(4096, 4 * KiB);
  Frame frame;
  ASSERT_EQ(feed_one(reader, big, frame).kind, Kind::frame);  // fine under the old limit
  reader.set_max_frame(1999);
  const DecodeResult r = feed_one(reader, big, frame);
  EXPECT_EQ(r.kind, Kind::error);
  EXPECT_EQ(r.error, DecodeError::frame_too_large);
}

TEST(FrameReaderLimits, LoweredLimitAppliesToAHeaderAlreadyWaitingForItsPayload) {
  const Buffer big = data_frame(1, pattern(2000, 1));
  FrameReader reader(4096, 4 * KiB);
  std::memcpy(reader.prepare().data(), big.data(), 100);
  reader.commit(100);
  Frame frame;
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  reader.set_max_frame(kMinMaxFrame);
  const DecodeResult r = reader.next(frame);
  EXPECT_EQ(r.kind, Kind::error);
  EXPECT_EQ(r.error, DecodeError::frame_too_large);
}

// ---------------------------------------------------------------------------------------------
// 4. Slice helpers

TEST(SliceHelpers, TakeFrontSplitsAndSharesTheBlock) {
  const Buffer bytes = pattern(10, 3);
  Slice slice = Slice::copy_of(bytes);
  const std::uint8_t* data = slice.data;
  const auto block = slice.block;

  Slice front = slice.take_front(3);
  EXPECT_EQ(front.block, block);
  EXPECT_EQ(front.data, data);
  EXPECT_EQ(front.size, 3u);
  EXPECT_EQ(slice.block, block);
  EXPECT_EQ(slice.data, data + 3);
  EXPECT_EQ(slice.size, 7u);
  EXPECT_EQ(Buffer(front.bytes().begin(), front.bytes().end()),
            Buffer(bytes.begin(), bytes.begin() + 3));
  EXPECT_EQ(Buffer(slice.bytes().begin(), slice.bytes().end()),
            Buffer(bytes.begin() + 3, bytes.end()));

  Slice none = slice.take_front(0);
  EXPECT_EQ(none.size, 0u);
  EXPECT_EQ(none.data, data + 3);
  EXPECT_EQ(slice.size, 7u);

  // Asking for more than is left takes everything and leaves an empty slice.
  Slice rest = slice.take_front(100);
  EXPECT_EQ(rest.size, 7u);
  EXPECT_EQ(rest.data, data + 3);
  EXPECT_EQ(slice.size, 0u);
  EXPECT_EQ(slice.data, data + 10);
  EXPECT_TRUE(slice.bytes().empty());
  EXPECT_EQ(slice.take_front(5).size, 0u);

  // Every piece keeps the block alive.
  EXPECT_EQ(block.use_count(), 5);  // block, slice, front, none, rest
}

TEST(SliceHelpers, CopyOfOwnsAnIndependentCopy) {
  Buffer bytes = pattern(1000, 9);
  const Buffer original = bytes;
  const Slice copy = Slice::copy_of(bytes);
  ASSERT_TRUE(copy.block);
  EXPECT_EQ(copy.block.use_count(), 1);
  EXPECT_EQ(copy.size, 1000u);
  EXPECT_NE(copy.data, bytes.data());
  EXPECT_EQ(copy.data, copy.block->data());
  EXPECT_GE(copy.block->capacity(), 1000u);
  std::fill(bytes.begin(), bytes.end(), std::uint8_t{0});
  EXPECT_EQ(Buffer(copy.bytes().begin(), copy.bytes().end()), original);
}

TEST(SliceHelpers, CopyOfEmptyBytes) {
  const Slice copy = Slice::copy_of({});
  EXPECT_TRUE(copy.block);
  EXPECT_NE(copy.data, nullptr);
  EXPECT_EQ(copy.size, 0u);
  EXPECT_TRUE(copy.bytes().empty());
}

TEST(SliceHelpers, AdoptTakesTheStringsStorageWithoutCopying) {
  const Buffer body = pattern(5000, 11);
  std::string bytes(body.begin(), body.end());
  const auto* storage = reinterpret_cast<const std::uint8_t*>(bytes.data());
  Slice slice = Slice::adopt(std::move(bytes));
  ASSERT_TRUE(slice.block);
  EXPECT_EQ(slice.block.use_count(), 1);
  EXPECT_EQ(slice.data, storage);  // the same heap buffer: nothing was copied
  EXPECT_EQ(slice.block->data(), storage);
  EXPECT_EQ(slice.size, 5000u);
  EXPECT_EQ(slice.block->capacity(), 5000u);
  EXPECT_EQ(Buffer(slice.bytes().begin(), slice.bytes().end()), body);

  // Pieces share the block and keep the bytes alive after the first slice is gone.
  Slice front = slice.take_front(1000);
  EXPECT_EQ(front.block, slice.block);
  slice = Slice{};
  EXPECT_EQ(front.block.use_count(), 1);
  EXPECT_EQ(Buffer(front.bytes().begin(), front.bytes().end()),
            Buffer(body.begin(), body.begin() + 1000));
}

TEST(SliceHelpers, AdoptKeepsShortAndEmptyStringsIntact) {
  // A short string keeps its bytes inside the string object, which moves into the block.
  const Slice short_slice = Slice::adopt(std::string("hello"));
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(short_slice.data), short_slice.size),
            "hello");
  EXPECT_EQ(short_slice.data, short_slice.block->data());

  const Slice empty = Slice::adopt(std::string());
  EXPECT_TRUE(empty.block);
  EXPECT_NE(empty.data, nullptr);
  EXPECT_EQ(empty.size, 0u);
  EXPECT_TRUE(empty.bytes().empty());
}

TEST(SliceHelpers, DefaultSliceIsEmpty) {
  const Slice slice;
  EXPECT_FALSE(slice.block);
  EXPECT_EQ(slice.data, nullptr);
  EXPECT_EQ(slice.size, 0u);
  EXPECT_TRUE(slice.bytes().empty());
}

TEST(SliceHelpers, ShareOfAPayloadPointsIntoTheReadersBlock) {
  FrameReader reader(kMinMaxFrame, 4 * KiB);
  const Buffer f = data_frame(1, pattern(40, 4));
  std::memcpy(reader.prepare().data(), f.data(), f.size());
  reader.commit(f.size());
  Frame frame;
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  const Slice shared = reader.share(frame.payload);
  ASSERT_TRUE(shared.block);
  EXPECT_EQ(shared.data, frame.payload.data());
  EXPECT_EQ(shared.size, 40u);
  EXPECT_GE(shared.data, shared.block->data());
  EXPECT_LE(shared.data + shared.size, shared.block->data() + shared.block->capacity());
  EXPECT_EQ(shared.block.use_count(), 2);  // the reader and the slice
}

TEST(FrameReaderSmallBlocks, StartsSmallGrowsForBigFramesAndShrinksWhenTrafficIsSmallAgain) {
  FrameReader reader(64 * KiB, 256 * KiB, 1 * KiB);
  EXPECT_EQ(reader.prepare().size(), 1 * KiB);  // an idle connection pins 1 KiB, not 256

  // A frame larger than the small block moves the reader to a full-size block.
  const Buffer big = data_frame(1, pattern(3000, 7));
  auto space = reader.prepare();
  std::memcpy(space.data(), big.data(), space.size());
  reader.commit(space.size());
  Frame frame;
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  space = reader.prepare();
  ASSERT_GE(space.size(), big.size() - 1 * KiB);
  EXPECT_GE(space.size(), 200 * KiB);
  std::memcpy(space.data(), big.data() + 1 * KiB, big.size() - 1 * KiB);
  reader.commit(big.size() - 1 * KiB);
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  EXPECT_EQ(Buffer(frame.payload.begin(), frame.payload.end()), pattern(3000, 7));
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);

  // Still full size while the last read was large...
  EXPECT_GE(reader.prepare().size(), 200 * KiB);
  // ...and back to the small block after a small read, once nothing shares the big one.
  const Buffer small = data_frame(1, pattern(16, 8));
  space = reader.prepare();
  std::memcpy(space.data(), small.data(), small.size());
  reader.commit(small.size());
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  const Slice held = reader.share(frame.payload);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  EXPECT_GE(reader.prepare().size(), 200 * KiB - small.size());  // shared: kept
  EXPECT_EQ(Buffer(held.bytes().begin(), held.bytes().end()), pattern(16, 8));
}

TEST(FrameReaderSmallBlocks, BigBlockIsRewoundWhileBusyAndDroppedOnceIdle) {
  FrameReader reader(64 * KiB, 256 * KiB, 1 * KiB);
  const Buffer big = data_frame(1, pattern(2000, 3));
  auto space = reader.prepare();
  std::memcpy(space.data(), big.data(), space.size());
  reader.commit(space.size());
  Frame frame;
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  space = reader.prepare();
  std::memcpy(space.data(), big.data() + 1 * KiB, big.size() - 1 * KiB);
  reader.commit(big.size() - 1 * KiB);
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  const Buffer small = data_frame(1, pattern(16, 4));
  space = reader.prepare();
  std::memcpy(space.data(), small.data(), small.size());
  reader.commit(small.size());
  ASSERT_EQ(reader.next(frame).kind, Kind::frame);
  ASSERT_EQ(reader.next(frame).kind, Kind::need_more);
  // Small traffic keeps the big block (rewound, no allocation); going quiet gives it up.
  EXPECT_EQ(reader.prepare().size(), 256 * KiB);
  EXPECT_TRUE(reader.release_idle_block());
  EXPECT_EQ(reader.prepare().size(), 1 * KiB);
}

}  // namespace
}  // namespace switchboard::wire
