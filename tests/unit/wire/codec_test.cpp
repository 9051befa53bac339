// Unit tests for the pure wire codec (codec.hpp): round trips, truncation, validation, byte layout.
#include "switchboard/wire/codec.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace switchboard {
// Readable gtest output for the enums; found by argument-dependent lookup, so these cannot live
// in the anonymous namespace (static keeps them private to this file).
static void PrintTo(Status status, std::ostream* os) {
  *os << status_name(status) << " (" << static_cast<unsigned>(status) << ")";
}
}  // namespace switchboard

namespace switchboard::wire {

static void PrintTo(FrameType type, std::ostream* os) {
  *os << frame_type_name(type) << " (0x" << std::hex << static_cast<unsigned>(type) << std::dec
      << ")";
}
static void PrintTo(DecodeError error, std::ostream* os) { *os << decode_error_name(error); }
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
static void PrintTo(StreamKind kind, std::ostream* os) {
  *os << "StreamKind(" << static_cast<unsigned>(kind) << ")";
}
static void PrintTo(PresenceEvent event, std::ostream* os) {
  *os << "PresenceEvent(" << static_cast<unsigned>(event) << ")";
}

namespace {

using Buffer = std::vector<std::uint8_t>;
using Kind = DecodeResult::Kind;

/// A max_frame large enough for every frame these tests build.
constexpr std::uint32_t kLargeMaxFrame = 1u << 20;
/// A stream id with a distinct value in every byte, to catch byte-order mistakes.
constexpr std::uint32_t kStream = 0x81020304;

constexpr FrameType kConnectionTypes[] = {
    FrameType::hello,    FrameType::welcome, FrameType::presence,
    FrameType::ping,     FrameType::go_away, FrameType::error,
    FrameType::redirect, FrameType::message, FrameType::message_report};
constexpr FrameType kStreamTypes[] = {FrameType::open, FrameType::data, FrameType::end,
                                      FrameType::reset, FrameType::window};
constexpr StreamKind kStreamKinds[] = {StreamKind::to_peer, StreamKind::to_any,
                                       StreamKind::broadcast};

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

std::string as_string(Bytes bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

Bytes prefix(const Buffer& buffer, std::size_t size) { return Bytes(buffer).first(size); }

/// The payload of a whole encoded frame (everything after the header).
Buffer payload_of(const Buffer& frame) {
  return Buffer(frame.begin() + static_cast<std::ptrdiff_t>(kHeaderSize), frame.end());
}

Buffer header_bytes(FrameType type, std::uint8_t frame_flags, std::uint32_t stream,
                    std::uint32_t length) {
  Buffer out(kHeaderSize);
  encode_header(FrameHeader{type, frame_flags, stream, length}, out.data());
  return out;
}

/// A 12-byte header whose type byte is arbitrary (possibly not a FrameType).
Buffer raw_header(std::uint8_t type, std::uint32_t stream, std::uint32_t length) {
  return header_bytes(static_cast<FrameType>(type), 0, stream, length);
}

void append_be16(Buffer& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}

void store_be16(Buffer& out, std::size_t at, std::uint16_t v) {
  out.at(at) = static_cast<std::uint8_t>(v >> 8);
  out.at(at + 1) = static_cast<std::uint8_t>(v);
}

void append_text(Buffer& out, std::string_view text) {
  const Bytes bytes = as_bytes(text);
  out.insert(out.end(), bytes.begin(), bytes.end());
}

template <typename Encode>
Buffer encode(Encode&& encode_into) {
  Buffer out;
  encode_into(out);
  return out;
}

/// Decodes `frame`, expecting one whole frame with the given header that fills the buffer.
DecodeResult decode_whole(const Buffer& frame, FrameType type, std::uint8_t frame_flags,
                          std::uint32_t stream) {
  const DecodeResult r = decode_frame(frame, kLargeMaxFrame);
  EXPECT_EQ(r.kind, Kind::frame);
  EXPECT_EQ(r.error, DecodeError::none);
  EXPECT_EQ(r.header.type, type);
  EXPECT_EQ(unsigned{r.header.flags}, unsigned{frame_flags});
  EXPECT_EQ(r.header.stream, stream);
  EXPECT_EQ(std::size_t{r.header.length}, frame.size() - kHeaderSize);
  EXPECT_EQ(r.consumed, frame.size());
  EXPECT_EQ(r.needed, 0u);
  EXPECT_EQ(r.payload.data(), frame.data() + kHeaderSize);
  EXPECT_EQ(r.payload.size(), frame.size() - kHeaderSize);
  return r;
}

/// Decodes a frame expecting the header alone to be rejected with `error`.
void expect_header_error(const Buffer& input, std::uint32_t max_frame, DecodeError error) {
  const DecodeResult r = decode_frame(input, max_frame);
  EXPECT_EQ(r.kind, Kind::error);
  EXPECT_EQ(r.error, error);
  EXPECT_EQ(r.consumed, 0u);
}

// ---------------------------------------------------------------------------------------------
// Sample frame contents, every field away from its default.

Hello sample_hello() {
  Hello h;
  h.version = kProtocolVersion;
  h.hello_flags = static_cast<std::uint16_t>(flags::kAcceptRequests | 0x8000);
  h.channel = make_uuid(0x10);
  h.peer_id = make_uuid(0x40);
  h.max_frame = 0x00012345;
  h.stream_window = 0x00ABCDEF;
  h.token = std::string("tok\0en\xff", 7);
  return h;
}

Welcome sample_welcome() {
  Welcome w;
  w.version = kProtocolVersion;
  w.peer_id = make_uuid(0x20);
  w.max_frame = 0x00020304;
  w.stream_window = 0x00050607;
  w.max_streams = 0x08090A0B;
  w.keepalive_ms = 0x0C0D0E0F;
  w.message_window = 0x10111213;
  return w;
}

Presence sample_presence(PresenceEvent event, std::size_t peers) {
  Presence p;
  p.event = event;
  p.version = 0x0102030405060708;
  for (std::size_t i = 0; i < peers; ++i)
    p.peers.push_back(make_uuid(static_cast<std::uint8_t>(0x30 + 16 * i)));
  return p;
}

Open sample_open(StreamKind kind) {
  Open o;
  o.kind = kind;
  o.deadline_ms = 0xDEADBEEF;
  o.idle_ms = 0x00007530;
  o.peer = make_uuid(0x80);
  o.metadata = {{"content-type", "application/json"},
                {"", "empty key"},
                {"empty value", ""},
                {"binary", std::string("\0\x01\xff", 3)}};
  return o;
}

End sample_end(Status status) {
  End e;
  e.status = status;
  e.app_code = 0xCAFEBABE;
  e.delivered = 0x00010203;
  e.dropped = 0x04050607;
  e.message = "handler failed: disk full";
  return e;
}

Reset sample_reset(Status status) {
  Reset r;
  r.status = status;
  r.app_code = 0x11223344;
  r.message = "stream reset by peer";
  return r;
}

GoAway sample_go_away(Status status) {
  GoAway g;
  g.last_stream = 0x7FFFFFFF;
  g.status = status;
  g.message = "relay draining";
  return g;
}

Error sample_error(Status status) {
  Error e;
  e.status = status;
  e.message = "token rejected";
  return e;
}

std::vector<Status> all_statuses() {
  std::vector<Status> out;
  for (std::uint16_t v = 0; v <= kMaxStatusValue; ++v) out.push_back(static_cast<Status>(v));
  return out;
}

constexpr std::string_view kBody = "first body chunk";

/// One encoded frame of every type, and the interesting variants, for framing-level tests.
std::vector<std::pair<std::string, Buffer>> sample_frames() {
  std::vector<std::pair<std::string, Buffer>> out;
  out.emplace_back("HELLO", encode([](Buffer& b) { append_hello(b, sample_hello()); }));
  out.emplace_back("HELLO minimal", encode([](Buffer& b) {
                     Hello h = sample_hello();
                     h.peer_id = Uuid{};
                     h.token.clear();
                     append_hello(b, h);
                   }));
  out.emplace_back("WELCOME", encode([](Buffer& b) { append_welcome(b, sample_welcome()); }));
  out.emplace_back(
      "MESSAGE", encode([](Buffer& b) {
        append_message(b, MessageHead{StreamKind::to_peer, make_uuid(0x50)}, as_bytes(kBody));
      }));
  out.emplace_back("MESSAGE_REPORT", encode([](Buffer& b) {
                     append_message_report(b, MessageReport{1, 2, 3, 4, 5, 6});
                   }));
  for (std::size_t peers : {0u, 1u, 5u}) {
    out.emplace_back("PRESENCE snapshot " + std::to_string(peers), encode([&](Buffer& b) {
                       append_presence(b, sample_presence(PresenceEvent::snapshot, peers), true);
                     }));
  }
  out.emplace_back("PRESENCE joined", encode([](Buffer& b) {
                     append_presence(b, sample_presence(PresenceEvent::joined, 1));
                   }));
  out.emplace_back("PRESENCE left", encode([](Buffer& b) {
                     append_presence(b, sample_presence(PresenceEvent::left, 1));
                   }));
  out.emplace_back("OPEN", encode([](Buffer& b) {
                     append_open(b, kStream, sample_open(StreamKind::broadcast), as_bytes(kBody),
                                 true);
                   }));
  out.emplace_back("OPEN bare", encode([](Buffer& b) { append_open(b, 1, Open{}); }));
  out.emplace_back("DATA",
                   encode([](Buffer& b) { append_data(b, kStream, as_bytes(kBody), true); }));
  out.emplace_back("DATA empty", encode([](Buffer& b) { append_data(b, kStream, {}, false); }));
  out.emplace_back(
      "END", encode([](Buffer& b) { append_end(b, kStream, sample_end(Status::application)); }));
  out.emplace_back(
      "RESET", encode([](Buffer& b) { append_reset(b, kStream, sample_reset(Status::refused)); }));
  out.emplace_back("WINDOW", encode([](Buffer& b) { append_window(b, kStream, 0x01020304); }));
  out.emplace_back("PING", encode([](Buffer& b) { append_ping(b, 0x0102030405060708, false); }));
  out.emplace_back("PING ack", encode([](Buffer& b) { append_ping(b, 0x0102030405060708, true); }));
  out.emplace_back("GOAWAY", encode([](Buffer& b) {
                     append_go_away(b, sample_go_away(Status::resource_exhausted));
                   }));
  out.emplace_back(
      "ERROR", encode([](Buffer& b) { append_error(b, sample_error(Status::unauthenticated)); }));
  return out;
}

/// A valid payload of a fixed-layout frame (every frame but OPEN and DATA) with its parser.
struct PayloadCase {
  std::string name;
  Buffer payload;
  std::function<DecodeError(Bytes)> parse;
  std::size_t magic_size = 0;  ///< prefixes shorter than this are bad_magic, not malformed
};

std::vector<PayloadCase> fixed_layout_payloads() {
  std::vector<PayloadCase> out;
  const auto hello = [](Bytes p) {
    Hello h;
    return parse_hello(p, h);
  };
  const auto presence = [](Bytes p) {
    Presence v;
    return parse_presence(p, v);
  };
  out.push_back(
      {"HELLO", payload_of(encode([](Buffer& b) { append_hello(b, sample_hello()); })), hello, 4});
  out.push_back({"HELLO minimal", payload_of(encode([](Buffer& b) {
                   Hello h = sample_hello();
                   h.token.clear();
                   append_hello(b, h);
                 })),
                 hello, 4});
  out.push_back({"WELCOME",
                 payload_of(encode([](Buffer& b) { append_welcome(b, sample_welcome()); })),
                 [](Bytes p) {
                   Welcome w;
                   return parse_welcome(p, w);
                 }});
  out.push_back({"WELCOME version 2", payload_of(encode([](Buffer& b) {
                   Welcome w = sample_welcome();
                   w.version = 2;
                   append_welcome(b, w);
                 })),
                 [](Bytes p) {
                   Welcome w;
                   return parse_welcome(p, w);
                 }});
  out.push_back({"MESSAGE_REPORT", payload_of(encode([](Buffer& b) {
                   append_message_report(b, MessageReport{1, 2, 3, 4, 5, 6});
                 })),
                 [](Bytes p) {
                   MessageReport r;
                   return parse_message_report(p, r);
                 }});
  for (std::size_t peers : {0u, 1u, 3u}) {
    out.push_back({"PRESENCE snapshot " + std::to_string(peers), payload_of(encode([&](Buffer& b) {
                     append_presence(b, sample_presence(PresenceEvent::snapshot, peers));
                   })),
                   presence});
  }
  out.push_back({"PRESENCE joined", payload_of(encode([](Buffer& b) {
                   append_presence(b, sample_presence(PresenceEvent::joined, 1));
                 })),
                 presence});
  out.push_back({"PRESENCE left", payload_of(encode([](Buffer& b) {
                   append_presence(b, sample_presence(PresenceEvent::left, 1));
                 })),
                 presence});
  out.push_back({"END", payload_of(encode([](Buffer& b) {
                   append_end(b, kStream, sample_end(Status::application));
                 })),
                 [](Bytes p) {
                   End e;
                   return parse_end(p, e);
                 }});
  out.push_back({"RESET", payload_of(encode([](Buffer& b) {
                   append_reset(b, kStream, sample_reset(Status::refused));
                 })),
                 [](Bytes p) {
                   Reset r;
                   return parse_reset(p, r);
                 }});
  out.push_back(
      {"WINDOW", payload_of(encode([](Buffer& b) { append_window(b, kStream, 77); })), [](Bytes p) {
         std::uint32_t increment = 0;
         return parse_window(p, increment);
       }});
  out.push_back(
      {"PING", payload_of(encode([](Buffer& b) { append_ping(b, 99, false); })), [](Bytes p) {
         std::uint64_t opaque = 0;
         return parse_ping(p, opaque);
       }});
  out.push_back(
      {"GOAWAY",
       payload_of(encode([](Buffer& b) { append_go_away(b, sample_go_away(Status::ok)); })),
       [](Bytes p) {
         GoAway g;
         return parse_go_away(p, g);
       }});
  out.push_back(
      {"ERROR",
       payload_of(encode([](Buffer& b) { append_error(b, sample_error(Status::protocol_error)); })),
       [](Bytes p) {
         Error e;
         return parse_error(p, e);
       }});
  return out;
}

// ---------------------------------------------------------------------------------------------
// 1. Round trips

TEST(CodecRoundTrip, HelloKeepsEveryField) {
  const Hello in = sample_hello();
  const Buffer frame = encode([&](Buffer& b) { append_hello(b, in); });
  const DecodeResult r = decode_whole(frame, FrameType::hello, 0, 0);
  Hello out;
  ASSERT_EQ(parse_hello(r.payload, out), DecodeError::none);
  EXPECT_EQ(out.version, kProtocolVersion);
  EXPECT_EQ(out.hello_flags, in.hello_flags);
  EXPECT_EQ(out.channel, in.channel);
  EXPECT_EQ(out.peer_id, in.peer_id);
  EXPECT_EQ(out.max_frame, in.max_frame);
  EXPECT_EQ(out.stream_window, in.stream_window);
  EXPECT_EQ(out.token, in.token);
  EXPECT_EQ(frame.size(), kHeaderSize + 4 + 2 + 2 + 16 + 16 + 4 + 4 + 2 + in.token.size());
}

TEST(CodecRoundTrip, HelloWithNilPeerAndEmptyTokenIsValid) {
  Hello in = sample_hello();
  in.peer_id = Uuid{};
  in.token.clear();
  in.hello_flags = 0;
  in.max_frame = kMinMaxFrame;
  in.stream_window = 1;
  const Buffer frame = encode([&](Buffer& b) { append_hello(b, in); });
  const DecodeResult r = decode_whole(frame, FrameType::hello, 0, 0);
  Hello out;
  out.token = "stale";
  ASSERT_EQ(parse_hello(r.payload, out), DecodeError::none);
  EXPECT_TRUE(out.peer_id.is_nil());
  EXPECT_EQ(out.token, "");
  EXPECT_EQ(out.hello_flags, 0);
  EXPECT_EQ(out.max_frame, kMinMaxFrame);
  EXPECT_EQ(out.stream_window, 1u);
}

TEST(CodecRoundTrip, WelcomeKeepsEveryField) {
  const Welcome in = sample_welcome();
  const Buffer frame = encode([&](Buffer& b) { append_welcome(b, in); });
  const DecodeResult r = decode_whole(frame, FrameType::welcome, 0, 0);
  EXPECT_EQ(r.header.length, 2u + 2 + 16 + 4 * 5);
  Welcome out;
  ASSERT_EQ(parse_welcome(r.payload, out), DecodeError::none);
  EXPECT_EQ(out.version, kProtocolVersion);
  EXPECT_EQ(out.peer_id, in.peer_id);
  EXPECT_EQ(out.max_frame, in.max_frame);
  EXPECT_EQ(out.stream_window, in.stream_window);
  EXPECT_EQ(out.max_streams, in.max_streams);
  EXPECT_EQ(out.keepalive_ms, in.keepalive_ms);
  EXPECT_EQ(out.message_window, in.message_window);
}

TEST(CodecRoundTrip, WelcomeBeforeVersionThreeHasNoMessageWindow) {
  Welcome in = sample_welcome();
  for (const std::uint16_t version : {std::uint16_t{1}, std::uint16_t{2}}) {
    in.version = version;
    const Buffer frame = encode([&](Buffer& b) { append_welcome(b, in); });
    const DecodeResult r = decode_whole(frame, FrameType::welcome, 0, 0);
    EXPECT_EQ(r.header.length, 2u + 2 + 16 + 4 * 4);
    Welcome out;
    ASSERT_EQ(parse_welcome(r.payload, out), DecodeError::none);
    EXPECT_EQ(out.version, version);
    EXPECT_EQ(out.message_window, 0u);
  }
  // From version 3 on the window is there and never zero.
  in.version = 3;
  in.message_window = 0;
  const Buffer frame = encode([&](Buffer& b) { append_welcome(b, in); });
  Welcome out;
  EXPECT_EQ(parse_welcome(decode_whole(frame, FrameType::welcome, 0, 0).payload, out),
            DecodeError::malformed);
}

TEST(CodecRoundTrip, MuxWelcomeCarriesShardsFromVersionFiveOnly) {
  for (const std::uint16_t version : {std::uint16_t{4}, std::uint16_t{5}}) {
    const MuxWelcome in{version, 3, 1024};
    Buffer frame;
    append_mux_welcome(frame, in);
    ASSERT_EQ(frame.size(), kHeaderSize + kMuxWelcomeSize);
    MuxWelcome out;
    ASSERT_EQ(parse_mux_welcome(Bytes(frame).subspan(kHeaderSize), out), DecodeError::none);
    EXPECT_EQ(out.version, version);
    EXPECT_EQ(out.max_lanes, 1024u);
    // Version 4's field is reserved: sent as zero, ignored on receipt.
    EXPECT_EQ(out.shards, version == 5 ? 3 : 0);
    if (version == 4) {
      frame[kHeaderSize + 7] = 9;
      ASSERT_EQ(parse_mux_welcome(Bytes(frame).subspan(kHeaderSize), out), DecodeError::none);
      EXPECT_EQ(out.shards, 0);
    }
  }
  Buffer newer;
  append_mux_welcome(newer, MuxWelcome{6, 2, 8});
  MuxWelcome out;
  EXPECT_EQ(parse_mux_welcome(Bytes(newer).subspan(kHeaderSize), out),
            DecodeError::unsupported_version);
}

TEST(PlacementShard, IsBytesEightToFifteenBigEndianModuloTheShards) {
  Uuid channel;
  for (std::size_t i = 0; i < 16; ++i) channel.bytes[i] = static_cast<std::uint8_t>(0xA0 + i);
  // Bytes 8..15: 0xA8A9AAABACADAEAF.
  constexpr std::uint64_t kHash = 0xA8A9AAABACADAEAFULL;
  for (const std::uint32_t shards : {2U, 3U, 7U, 1024U}) {
    EXPECT_EQ(placement_shard(channel, shards), kHash % shards) << shards;
  }
  EXPECT_EQ(placement_shard(channel, 1), 0u);
  EXPECT_EQ(placement_shard(channel, 0), 0u);
  // The first eight bytes play no part.
  Uuid other = channel;
  other.bytes[0] ^= 0xFF;
  EXPECT_EQ(placement_shard(other, 7), placement_shard(channel, 7));
}

TEST(CodecRoundTrip, MessageKeepsKindPeerAndBody) {
  for (const StreamKind kind : {StreamKind::to_peer, StreamKind::broadcast}) {
    const MessageHead in{kind, kind == StreamKind::to_peer ? make_uuid(0x30) : Uuid{}};
    for (const std::string_view body : {std::string_view{}, kBody}) {
      const Buffer frame = encode([&](Buffer& b) { append_message(b, in, as_bytes(body)); });
      const DecodeResult r = decode_whole(frame, FrameType::message, 0, 0);
      EXPECT_EQ(std::size_t{r.header.length}, kMessageHeadSize + body.size());
      // Byte layout: kind, three reserved zero bytes, the peer.
      EXPECT_EQ(r.payload[0], static_cast<std::uint8_t>(kind));
      EXPECT_EQ(r.payload[1] | r.payload[2] | r.payload[3], 0);
      MessageHead out;
      Bytes out_body;
      ASSERT_EQ(parse_message(r.payload, out, out_body), DecodeError::none);
      EXPECT_EQ(out.kind, kind);
      EXPECT_EQ(out.peer, in.peer);
      EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(out_body.data()), out_body.size()),
                body);
    }
  }
}

TEST(CodecRoundTrip, MessageHeadEncodedApartMatchesTheWholeFrame) {
  const MessageHead head{StreamKind::broadcast, make_uuid(0x61)};
  const Buffer whole = encode([&](Buffer& b) { append_message(b, head, as_bytes(kBody)); });
  std::array<std::uint8_t, kHeaderSize + kMessageHeadSize> apart{};
  encode_message_head(head, kBody.size(), apart.data());
  EXPECT_TRUE(std::equal(apart.begin(), apart.end(), whole.begin()));
}

TEST(CodecErrors, MessageOfAnUndefinedKindOrTooShortIsMalformed) {
  Buffer frame = encode([](Buffer& b) {
    append_message(b, MessageHead{StreamKind::broadcast, {}}, as_bytes(kBody));
  });
  frame[kHeaderSize] = static_cast<std::uint8_t>(StreamKind::to_any);  // "any" is not defined
  MessageHead out;
  Bytes body;
  EXPECT_EQ(parse_message(decode_whole(frame, FrameType::message, 0, 0).payload, out, body),
            DecodeError::malformed);
  frame[kHeaderSize] = 7;
  EXPECT_EQ(parse_message(decode_whole(frame, FrameType::message, 0, 0).payload, out, body),
            DecodeError::malformed);
  const std::array<std::uint8_t, kMessageHeadSize - 1> short_head{2};
  EXPECT_EQ(parse_message(Bytes(short_head), out, body), DecodeError::malformed);
}

TEST(CodecRoundTrip, MessageReportKeepsEveryCount) {
  const MessageReport in{0x01020304, 5, 6, 7, 8, 9};
  const Buffer frame = encode([&](Buffer& b) { append_message_report(b, in); });
  const DecodeResult r = decode_whole(frame, FrameType::message_report, 0, 0);
  EXPECT_EQ(r.header.length, 24u);
  MessageReport out;
  ASSERT_EQ(parse_message_report(r.payload, out), DecodeError::none);
  EXPECT_EQ(std::tie(out.credit, out.messages, out.delivered, out.dropped, out.refused, out.lost),
            std::tie(in.credit, in.messages, in.delivered, in.dropped, in.refused, in.lost));
}

TEST(CodecRoundTrip, PresenceSnapshotWithZeroOneAndSeveralPeers) {
  for (std::size_t peers : {0u, 1u, 2u, 17u}) {
    for (bool more : {false, true}) {
      SCOPED_TRACE("peers=" + std::to_string(peers) + " more=" + std::to_string(more));
      const Presence in = sample_presence(PresenceEvent::snapshot, peers);
      const Buffer frame = encode([&](Buffer& b) { append_presence(b, in, more); });
      const DecodeResult r =
          decode_whole(frame, FrameType::presence, more ? flags::kMore : std::uint8_t{0}, 0);
      EXPECT_EQ(std::size_t{r.header.length}, 12 + 16 * peers);
      Presence out;
      out.peers.push_back(make_uuid(0xEE));  // stale content must be replaced
      ASSERT_EQ(parse_presence(r.payload, out), DecodeError::none);
      EXPECT_EQ(out.event, PresenceEvent::snapshot);
      EXPECT_EQ(out.version, in.version);
      EXPECT_EQ(out.peers, in.peers);
    }
  }
}

TEST(CodecRoundTrip, PresenceJoinedAndLeftCarryOnePeer) {
  for (PresenceEvent event : {PresenceEvent::joined, PresenceEvent::left}) {
    SCOPED_TRACE(static_cast<int>(event));
    const Presence in = sample_presence(event, 1);
    const Buffer frame = encode([&](Buffer& b) { append_presence(b, in); });
    const DecodeResult r = decode_whole(frame, FrameType::presence, 0, 0);
    Presence out;
    ASSERT_EQ(parse_presence(r.payload, out), DecodeError::none);
    EXPECT_EQ(out.event, event);
    EXPECT_EQ(out.version, in.version);
    EXPECT_EQ(out.peers, in.peers);
  }
}

TEST(CodecRoundTrip, OpenForEveryKindWithMetadataAndBodyWithAndWithoutFin) {
  for (StreamKind kind : kStreamKinds) {
    for (bool fin : {false, true}) {
      SCOPED_TRACE("kind=" + std::to_string(static_cast<int>(kind)) +
                   " fin=" + std::to_string(fin));
      const Open in = sample_open(kind);
      const Buffer frame =
          encode([&](Buffer& b) { append_open(b, kStream, in, as_bytes(kBody), fin); });
      const DecodeResult r =
          decode_whole(frame, FrameType::open, fin ? flags::kFin : std::uint8_t{0}, kStream);
      EXPECT_EQ(std::size_t{r.header.length}, open_prefix_size(in) + kBody.size());
      Open out;
      out.metadata.emplace_back("stale", "entry");  // must be replaced
      Bytes body;
      ASSERT_EQ(parse_open(r.payload, out, body), DecodeError::none);
      EXPECT_EQ(out.kind, kind);
      EXPECT_EQ(out.deadline_ms, in.deadline_ms);
      EXPECT_EQ(out.idle_ms, in.idle_ms);
      EXPECT_EQ(out.peer, in.peer);
      EXPECT_EQ(out.metadata, in.metadata);
      EXPECT_EQ(as_string(body), kBody);
      // The body is a view into the frame, not a copy.
      EXPECT_EQ(body.data(), r.payload.data() + open_prefix_size(in));
    }
  }
}

TEST(CodecRoundTrip, OpenWithoutMetadataOrBody) {
  Open in;
  in.kind = StreamKind::to_peer;
  in.peer = make_uuid(0x01);
  const Buffer frame = encode([&](Buffer& b) { append_open(b, 1, in); });
  const DecodeResult r = decode_whole(frame, FrameType::open, 0, 1);
  EXPECT_EQ(r.header.length, 28u);
  Open out;
  Bytes body = as_bytes("not empty");
  ASSERT_EQ(parse_open(r.payload, out, body), DecodeError::none);
  EXPECT_EQ(out.kind, StreamKind::to_peer);
  EXPECT_EQ(out.deadline_ms, 0u);
  EXPECT_EQ(out.idle_ms, 0u);
  EXPECT_EQ(out.peer, in.peer);
  EXPECT_TRUE(out.metadata.empty());
  EXPECT_TRUE(body.empty());
}

TEST(CodecRoundTrip, OpenPrefixSizeIsFixedPartPlusMetadata) {
  EXPECT_EQ(open_prefix_size(Open{}), 28u);
  const Open open = sample_open(StreamKind::to_any);
  std::size_t expected = 28;
  for (const auto& [key, value] : open.metadata) expected += 2 + key.size() + 2 + value.size();
  EXPECT_EQ(open_prefix_size(open), expected);
  const Buffer frame = encode([&](Buffer& b) { append_open(b, 1, open); });
  EXPECT_EQ(frame.size(), kHeaderSize + expected);
}

TEST(CodecRoundTrip, DataWithEmptyAndNonEmptyBodyAndFin) {
  for (std::string_view body : {std::string_view{}, kBody}) {
    for (bool fin : {false, true}) {
      SCOPED_TRACE("size=" + std::to_string(body.size()) + " fin=" + std::to_string(fin));
      const Buffer frame = encode([&](Buffer& b) { append_data(b, kStream, as_bytes(body), fin); });
      const DecodeResult r =
          decode_whole(frame, FrameType::data, fin ? flags::kFin : std::uint8_t{0}, kStream);
      EXPECT_EQ(as_string(r.payload), body);
    }
  }
}

TEST(CodecRoundTrip, EndWithEveryStatusCodeMessageAndCounts) {
  for (Status status : all_statuses()) {
    SCOPED_TRACE(status_name(status));
    const End in = sample_end(status);
    const Buffer frame = encode([&](Buffer& b) { append_end(b, kStream, in); });
    const DecodeResult r = decode_whole(frame, FrameType::end, 0, kStream);
    EXPECT_EQ(std::size_t{r.header.length}, 16 + in.message.size());
    End out;
    ASSERT_EQ(parse_end(r.payload, out), DecodeError::none);
    EXPECT_EQ(out.status, status);
    EXPECT_EQ(out.app_code, in.app_code);
    EXPECT_EQ(out.delivered, in.delivered);
    EXPECT_EQ(out.dropped, in.dropped);
    EXPECT_EQ(out.message, in.message);
  }
}

TEST(CodecRoundTrip, EndWithDefaultsIsOkWithEmptyMessage) {
  const Buffer frame = encode([](Buffer& b) { append_end(b, 2, End{}); });
  const DecodeResult r = decode_whole(frame, FrameType::end, 0, 2);
  End out = sample_end(Status::internal);
  ASSERT_EQ(parse_end(r.payload, out), DecodeError::none);
  EXPECT_EQ(out.status, Status::ok);
  EXPECT_EQ(out.app_code, 0u);
  EXPECT_EQ(out.delivered, 0u);
  EXPECT_EQ(out.dropped, 0u);
  EXPECT_EQ(out.message, "");
}

TEST(CodecRoundTrip, ResetWithEveryStatus) {
  for (Status status : all_statuses()) {
    SCOPED_TRACE(status_name(status));
    const Reset in = sample_reset(status);
    const Buffer frame = encode([&](Buffer& b) { append_reset(b, kStream, in); });
    const DecodeResult r = decode_whole(frame, FrameType::reset, 0, kStream);
    EXPECT_EQ(std::size_t{r.header.length}, 8 + in.message.size());
    Reset out;
    ASSERT_EQ(parse_reset(r.payload, out), DecodeError::none);
    EXPECT_EQ(out.status, status);
    EXPECT_EQ(out.app_code, in.app_code);
    EXPECT_EQ(out.message, in.message);
  }
}

TEST(CodecRoundTrip, WindowKeepsIncrement) {
  for (std::uint32_t increment : {1u, 65536u, 0x01020304u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(increment);
    const Buffer frame = encode([&](Buffer& b) { append_window(b, kStream, increment); });
    const DecodeResult r = decode_whole(frame, FrameType::window, 0, kStream);
    EXPECT_EQ(r.header.length, 4u);
    std::uint32_t out = 0;
    ASSERT_EQ(parse_window(r.payload, out), DecodeError::none);
    EXPECT_EQ(out, increment);
  }
}

TEST(CodecRoundTrip, PingWithAndWithoutAck) {
  for (std::uint64_t opaque :
       {std::uint64_t{0}, std::uint64_t{0x0102030405060708}, std::uint64_t{0xFFFFFFFFFFFFFFFF}}) {
    for (bool ack : {false, true}) {
      SCOPED_TRACE("opaque=" + std::to_string(opaque) + " ack=" + std::to_string(ack));
      const Buffer frame = encode([&](Buffer& b) { append_ping(b, opaque, ack); });
      const DecodeResult r =
          decode_whole(frame, FrameType::ping, ack ? flags::kAck : std::uint8_t{0}, 0);
      EXPECT_EQ(r.header.length, 8u);
      std::uint64_t out = 1;
      ASSERT_EQ(parse_ping(r.payload, out), DecodeError::none);
      EXPECT_EQ(out, opaque);
    }
  }
}

TEST(CodecRoundTrip, GoAwayWithEveryStatus) {
  for (Status status : all_statuses()) {
    SCOPED_TRACE(status_name(status));
    const GoAway in = sample_go_away(status);
    const Buffer frame = encode([&](Buffer& b) { append_go_away(b, in); });
    const DecodeResult r = decode_whole(frame, FrameType::go_away, 0, 0);
    EXPECT_EQ(std::size_t{r.header.length}, 8 + in.message.size());
    GoAway out;
    ASSERT_EQ(parse_go_away(r.payload, out), DecodeError::none);
    EXPECT_EQ(out.last_stream, in.last_stream);
    EXPECT_EQ(out.status, status);
    EXPECT_EQ(out.message, in.message);
  }
}

TEST(CodecRoundTrip, ErrorWithEveryStatus) {
  for (Status status : all_statuses()) {
    SCOPED_TRACE(status_name(status));
    const Error in = sample_error(status);
    const Buffer frame = encode([&](Buffer& b) { append_error(b, in); });
    const DecodeResult r = decode_whole(frame, FrameType::error, 0, 0);
    EXPECT_EQ(std::size_t{r.header.length}, 4 + in.message.size());
    Error out;
    ASSERT_EQ(parse_error(r.payload, out), DecodeError::none);
    EXPECT_EQ(out.status, status);
    EXPECT_EQ(out.message, in.message);
  }
}

TEST(CodecRoundTrip, EncodersAppendWithoutTouchingExistingBytes) {
  Buffer out = {0xAA, 0xBB, 0xCC};
  append_ping(out, 5, false);
  ASSERT_EQ(out.size(), 3 + kHeaderSize + 8);
  EXPECT_EQ(out[0], 0xAA);
  EXPECT_EQ(out[1], 0xBB);
  EXPECT_EQ(out[2], 0xCC);
  const Buffer frame(out.begin() + 3, out.end());
  decode_whole(frame, FrameType::ping, 0, 0);
}

TEST(CodecRoundTrip, HeaderEncodeDecodeKeepsFlagsStreamAndLength) {
  const Buffer header = header_bytes(FrameType::data, 0xFF, 0xFFFFFFFF, 0);
  const DecodeResult r = decode_frame(header, 0);
  EXPECT_EQ(r.kind, Kind::frame);
  EXPECT_EQ(r.header.type, FrameType::data);
  EXPECT_EQ(r.header.flags, 0xFF);
  EXPECT_EQ(r.header.stream, 0xFFFFFFFFu);
  EXPECT_EQ(r.header.length, 0u);
  EXPECT_EQ(r.consumed, kHeaderSize);
  EXPECT_TRUE(r.payload.empty());
}

// ---------------------------------------------------------------------------------------------
// 2. Truncated frames are "need more"

TEST(CodecTruncation, EveryProperPrefixOfEveryFrameNeedsMore) {
  for (const auto& [name, frame] : sample_frames()) {
    SCOPED_TRACE(name);
    for (std::size_t size = 0; size < frame.size(); ++size) {
      SCOPED_TRACE("prefix=" + std::to_string(size));
      const DecodeResult r = decode_frame(prefix(frame, size), kLargeMaxFrame);
      ASSERT_EQ(r.kind, Kind::need_more);
      EXPECT_EQ(r.error, DecodeError::none);
      EXPECT_EQ(r.consumed, 0u);
      EXPECT_TRUE(r.payload.empty());
      EXPECT_EQ(r.needed, size < kHeaderSize ? kHeaderSize : frame.size());
    }
    decode_whole(frame, static_cast<FrameType>(frame[0]), frame[1],
                 decode_frame(frame, kLargeMaxFrame).header.stream);
  }
}

TEST(CodecTruncation, EmptyInputNeedsAHeader) {
  const DecodeResult r = decode_frame({}, kLargeMaxFrame);
  EXPECT_EQ(r.kind, Kind::need_more);
  EXPECT_EQ(r.needed, kHeaderSize);
}

// ---------------------------------------------------------------------------------------------
// 3. Truncated payloads handed to parsers

TEST(CodecTruncation, EveryProperPrefixOfAFixedLayoutPayloadIsMalformed) {
  for (const auto& c : fixed_layout_payloads()) {
    SCOPED_TRACE(c.name);
    ASSERT_EQ(c.parse(c.payload), DecodeError::none);
    for (std::size_t size = 0; size < c.payload.size(); ++size) {
      SCOPED_TRACE("prefix=" + std::to_string(size));
      EXPECT_EQ(c.parse(prefix(c.payload, size)),
                size < c.magic_size ? DecodeError::bad_magic : DecodeError::malformed);
    }
  }
}

TEST(CodecTruncation, OpenCutInsideFixedPartOrMetadataIsMalformed) {
  for (StreamKind kind : kStreamKinds) {
    SCOPED_TRACE(static_cast<int>(kind));
    const Open in = sample_open(kind);
    const Buffer payload =
        payload_of(encode([&](Buffer& b) { append_open(b, 1, in, as_bytes(kBody)); }));
    const std::size_t fixed = open_prefix_size(in);
    ASSERT_EQ(payload.size(), fixed + kBody.size());
    for (std::size_t size = 0; size < fixed; ++size) {
      SCOPED_TRACE("prefix=" + std::to_string(size));
      Open out;
      Bytes body;
      EXPECT_EQ(parse_open(prefix(payload, size), out, body), DecodeError::malformed);
    }
  }
}

TEST(CodecTruncation, OpenCutInsideBodyParsesWithTheShorterBody) {
  const Open in = sample_open(StreamKind::to_peer);
  const Buffer payload =
      payload_of(encode([&](Buffer& b) { append_open(b, 1, in, as_bytes(kBody)); }));
  const std::size_t fixed = open_prefix_size(in);
  for (std::size_t size = fixed; size <= payload.size(); ++size) {
    SCOPED_TRACE("prefix=" + std::to_string(size));
    Open out;
    Bytes body;
    ASSERT_EQ(parse_open(prefix(payload, size), out, body), DecodeError::none);
    EXPECT_EQ(out.metadata, in.metadata);
    EXPECT_EQ(as_string(body), kBody.substr(0, size - fixed));
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Trailing garbage

TEST(CodecValidation, TrailingBytesAfterAFixedLayoutPayloadAreMalformed) {
  for (const auto& c : fixed_layout_payloads()) {
    for (std::size_t extra : {1u, 2u, 16u}) {
      SCOPED_TRACE(c.name + " +" + std::to_string(extra));
      Buffer payload = c.payload;
      payload.insert(payload.end(), extra, std::uint8_t{0});
      EXPECT_EQ(c.parse(payload), DecodeError::malformed);
    }
  }
}

TEST(CodecValidation, TrailingGarbageInsideAWholeFrameIsMalformed) {
  // The framing layer accepts it (the length covers it); the parser rejects it.
  Buffer payload = payload_of(encode([](Buffer& b) { append_window(b, kStream, 10); }));
  payload.push_back(0x5A);
  Buffer frame = header_bytes(FrameType::window, 0, kStream, 5);
  frame.insert(frame.end(), payload.begin(), payload.end());
  const DecodeResult r = decode_whole(frame, FrameType::window, 0, kStream);
  std::uint32_t increment = 0;
  EXPECT_EQ(parse_window(r.payload, increment), DecodeError::malformed);
}

// ---------------------------------------------------------------------------------------------
// 5. Oversized frames

TEST(CodecDecodeFrame, LengthAboveMaxFrameIsRejectedOnTheHeaderAlone) {
  for (std::uint32_t max_frame : {0u, kMinMaxFrame, 65536u, 0xFFFFFFFEu}) {
    SCOPED_TRACE(max_frame);
    for (FrameType type : {FrameType::data, FrameType::open}) {
      const Buffer header = header_bytes(type, 0, kStream, max_frame + 1);
      const DecodeResult r = decode_frame(header, max_frame);
      EXPECT_EQ(r.kind, Kind::error);
      EXPECT_EQ(r.error, DecodeError::frame_too_large);
      EXPECT_EQ(r.header.type, type);
      EXPECT_EQ(r.header.length, max_frame + 1);
      EXPECT_EQ(r.consumed, 0u);
    }
    expect_header_error(header_bytes(FrameType::error, 0, 0, max_frame + 1), max_frame,
                        DecodeError::frame_too_large);
  }
  expect_header_error(header_bytes(FrameType::data, 0, 1, 0xFFFFFFFF), kLargeMaxFrame,
                      DecodeError::frame_too_large);
}

TEST(CodecDecodeFrame, OversizedFrameIsRejectedEvenWhenItsPayloadIsPresent) {
  const Buffer body(kMinMaxFrame + 1, 0xAB);
  const Buffer frame = encode([&](Buffer& b) { append_data(b, 1, body, false); });
  expect_header_error(frame, kMinMaxFrame, DecodeError::frame_too_large);
}

TEST(CodecDecodeFrame, LengthEqualToMaxFrameIsAccepted) {
  const Buffer body(kMinMaxFrame, 0xAB);
  const Buffer frame = encode([&](Buffer& b) { append_data(b, 1, body, false); });
  const DecodeResult partial = decode_frame(prefix(frame, kHeaderSize), kMinMaxFrame);
  EXPECT_EQ(partial.kind, Kind::need_more);
  EXPECT_EQ(partial.needed, kHeaderSize + kMinMaxFrame);
  const DecodeResult r = decode_frame(frame, kMinMaxFrame);
  EXPECT_EQ(r.kind, Kind::frame);
  EXPECT_EQ(r.header.length, kMinMaxFrame);
  EXPECT_EQ(r.consumed, frame.size());
  // An empty frame fits any max_frame, even 0.
  EXPECT_EQ(decode_frame(header_bytes(FrameType::data, 0, 1, 0), 0).kind, Kind::frame);
}

// ---------------------------------------------------------------------------------------------
// 6. Frame types and stream ids

TEST(CodecDecodeFrame, EveryUnknownTypeByteIsUnknownType) {
  std::set<unsigned> known;
  for (FrameType t : kConnectionTypes) known.insert(static_cast<unsigned>(t));
  for (FrameType t : kStreamTypes) known.insert(static_cast<unsigned>(t));
  ASSERT_EQ(known.size(), 14u);
  int unknown = 0;
  for (unsigned type = 0; type <= 0xFF; ++type) {
    if (known.count(type) != 0) continue;
    ++unknown;
    SCOPED_TRACE(type);
    for (std::uint32_t stream : {0u, 1u}) {
      for (std::uint32_t length : {0u, 1u}) {
        const Buffer header = raw_header(static_cast<std::uint8_t>(type), stream, length);
        expect_header_error(header, kLargeMaxFrame, DecodeError::unknown_type);
      }
    }
  }
  EXPECT_EQ(unknown, 256 - 14);
}

TEST(CodecDecodeFrame, KnownTypesWithTheRightStreamAreAccepted) {
  for (FrameType type : kConnectionTypes) {
    SCOPED_TRACE(frame_type_name(type));
    EXPECT_FALSE(is_stream_frame(type));
    EXPECT_EQ(decode_frame(header_bytes(type, 0, 0, 0), kLargeMaxFrame).kind, Kind::frame);
  }
  for (FrameType type : kStreamTypes) {
    SCOPED_TRACE(frame_type_name(type));
    EXPECT_TRUE(is_stream_frame(type));
    for (std::uint32_t stream : {1u, kStream, 0xFFFFFFFFu}) {
      EXPECT_EQ(decode_frame(header_bytes(type, 0, stream, 0), kLargeMaxFrame).kind, Kind::frame);
    }
  }
}

TEST(CodecDecodeFrame, StreamFrameOnStreamZeroIsBadStreamId) {
  for (FrameType type : kStreamTypes) {
    SCOPED_TRACE(frame_type_name(type));
    expect_header_error(header_bytes(type, 0, 0, 0), kLargeMaxFrame, DecodeError::bad_stream_id);
    expect_header_error(header_bytes(type, 0, 0, 4), kLargeMaxFrame, DecodeError::bad_stream_id);
  }
}

TEST(CodecDecodeFrame, ConnectionFrameOnAStreamIsBadStreamId) {
  for (FrameType type : kConnectionTypes) {
    SCOPED_TRACE(frame_type_name(type));
    for (std::uint32_t stream : {1u, 0x100u, 0x80000000u, 0xFFFFFFFFu}) {
      expect_header_error(header_bytes(type, 0, stream, 0), kLargeMaxFrame,
                          DecodeError::bad_stream_id);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 7. HELLO validation

TEST(CodecHello, WrongMagicIsBadMagic) {
  const Buffer good = payload_of(encode([](Buffer& b) { append_hello(b, sample_hello()); }));
  for (std::size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    Buffer payload = good;
    payload[i] = static_cast<std::uint8_t>(payload[i] ^ 0x20);  // e.g. "SWBD" -> "sWBD"
    Hello out;
    EXPECT_EQ(parse_hello(payload, out), DecodeError::bad_magic);
  }
  Buffer zeros = good;
  std::fill_n(zeros.begin(), 4, std::uint8_t{0});
  Hello out;
  EXPECT_EQ(parse_hello(zeros, out), DecodeError::bad_magic);
}

TEST(CodecHello, ChannelHintNeedsTheHeaderMagicAndChannel) {
  const Hello hello = sample_hello();
  const Buffer frame = encode([&](Buffer& b) { append_hello(b, hello); });
  ASSERT_GT(frame.size(), kHelloChannelPrefixSize);
  EXPECT_EQ(hello_channel_hint(frame), hello.channel);
  EXPECT_EQ(hello_channel_hint(prefix(frame, kHelloChannelPrefixSize)), hello.channel);
  EXPECT_EQ(hello_channel_hint(prefix(frame, kHelloChannelPrefixSize - 1)), std::nullopt);
  Buffer not_hello = frame;
  not_hello[0] = static_cast<std::uint8_t>(FrameType::ping);
  EXPECT_EQ(hello_channel_hint(not_hello), std::nullopt);
  Buffer bad_magic = frame;
  bad_magic[kHeaderSize] = 'X';
  EXPECT_EQ(hello_channel_hint(bad_magic), std::nullopt);
  Hello nil_channel = hello;
  nil_channel.channel = Uuid{};
  const Buffer nil_frame = encode([&](Buffer& b) { append_hello(b, nil_channel); });
  EXPECT_EQ(hello_channel_hint(nil_frame), std::nullopt);
}

TEST(CodecHello, UnsupportedVersionsAreRejected) {
  for (std::uint16_t version :
       {std::uint16_t{0}, std::uint16_t{kProtocolVersion + 1}, std::uint16_t{0xFFFF}}) {
    SCOPED_TRACE(version);
    Hello in = sample_hello();
    in.version = version;
    const Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
    Hello out;
    EXPECT_EQ(parse_hello(payload, out), DecodeError::unsupported_version);
  }
}

TEST(CodecHello, VersionIsCheckedBeforeTheRestOfTheLayout) {
  // A future version may change the layout after the version field.
  Buffer payload;
  append_text(payload, "SWBD");
  append_be16(payload, kProtocolVersion + 1);
  Hello out;
  EXPECT_EQ(parse_hello(payload, out), DecodeError::unsupported_version);
}

TEST(CodecHello, EverySupportedVersionIsAccepted) {
  for (auto version = kOldestProtocolVersion; version <= kProtocolVersion; ++version) {
    SCOPED_TRACE(version);
    Hello in = sample_hello();
    in.version = version;
    const Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
    Hello out;
    ASSERT_EQ(parse_hello(payload, out), DecodeError::none);
    EXPECT_EQ(out.version, version);
  }
  EXPECT_EQ(supported_versions_text(), "1, 2 and 3");
}

TEST(CodecHello, ObserveFlagCountsFromVersionTwo) {
  Hello in = sample_hello();
  in.hello_flags = flags::kObserve;
  in.version = 2;
  const Buffer v2 = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
  Hello out;
  ASSERT_EQ(parse_hello(v2, out), DecodeError::none);
  EXPECT_TRUE(out.observes());
  EXPECT_FALSE(out.accepts_requests());
  // In version 1 the bit is reserved: ignored, so the HELLO is a plain peer's.
  in.version = 1;
  const Buffer v1 = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
  ASSERT_EQ(parse_hello(v1, out), DecodeError::none);
  EXPECT_FALSE(out.observes());
  in.hello_flags = static_cast<std::uint16_t>(flags::kObserve | flags::kAcceptRequests);
  const Buffer v1_both = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
  ASSERT_EQ(parse_hello(v1_both, out), DecodeError::none);
  EXPECT_TRUE(out.accepts_requests());
}

TEST(CodecHello, ObserverThatAcceptsRequestsIsMalformed) {
  Hello in = sample_hello();
  in.version = 2;
  in.hello_flags = static_cast<std::uint16_t>(flags::kObserve | flags::kAcceptRequests);
  const Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
  Hello out;
  EXPECT_EQ(parse_hello(payload, out), DecodeError::malformed);
}

TEST(CodecHello, NilChannelIsMalformed) {
  Hello in = sample_hello();
  in.channel = Uuid{};
  const Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
  Hello out;
  EXPECT_EQ(parse_hello(payload, out), DecodeError::malformed);
}

TEST(CodecHello, MaxFrameBelowMinimumIsMalformed) {
  for (std::uint32_t max_frame : {0u, 1u, kMinMaxFrame - 1}) {
    SCOPED_TRACE(max_frame);
    Hello in = sample_hello();
    in.max_frame = max_frame;
    const Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
    Hello out;
    EXPECT_EQ(parse_hello(payload, out), DecodeError::malformed);
  }
  Hello in = sample_hello();
  in.max_frame = kMinMaxFrame;
  const Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
  Hello out;
  EXPECT_EQ(parse_hello(payload, out), DecodeError::none);
  EXPECT_EQ(out.max_frame, kMinMaxFrame);
}

TEST(CodecHello, ZeroStreamWindowIsMalformed) {
  Hello in = sample_hello();
  in.stream_window = 0;
  const Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
  Hello out;
  EXPECT_EQ(parse_hello(payload, out), DecodeError::malformed);
}

TEST(CodecHello, StreamWindowAboveTheHttp2BoundIsMalformed) {
  for (const std::uint32_t window : {kMaxWindow + 1, std::uint32_t{0xFFFFFFFF}}) {
    Hello in = sample_hello();
    in.stream_window = window;
    const Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
    Hello out;
    EXPECT_EQ(parse_hello(payload, out), DecodeError::malformed) << window;
  }
  Hello largest = sample_hello();
  largest.stream_window = kMaxWindow;
  const Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, largest); }));
  Hello out;
  EXPECT_EQ(parse_hello(payload, out), DecodeError::none);
}

// A HELLO payload with an empty token, then `token_len` and `token` appended by hand.
Buffer hello_payload_with_token(std::uint16_t token_len, std::size_t token_bytes) {
  Hello in = sample_hello();
  in.token.clear();
  Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
  payload.resize(payload.size() - 2);  // drop the encoded token_len (0)
  append_be16(payload, token_len);
  payload.insert(payload.end(), token_bytes, std::uint8_t{'t'});
  return payload;
}

TEST(CodecHello, TokenLongerThanMaximumIsMalformed) {
  const auto max = static_cast<std::uint16_t>(kMaxTokenSize);
  Hello out;
  EXPECT_EQ(parse_hello(hello_payload_with_token(max, kMaxTokenSize), out), DecodeError::none);
  EXPECT_EQ(out.token, std::string(kMaxTokenSize, 't'));
  EXPECT_EQ(
      parse_hello(hello_payload_with_token(static_cast<std::uint16_t>(max + 1), kMaxTokenSize + 1),
                  out),
      DecodeError::malformed);
  EXPECT_EQ(parse_hello(hello_payload_with_token(0xFFFF, 0xFFFF), out), DecodeError::malformed);
}

TEST(CodecHello, TokenLengthPastTheEndIsMalformed) {
  Hello out;
  EXPECT_EQ(parse_hello(hello_payload_with_token(10, 9), out), DecodeError::malformed);
  EXPECT_EQ(parse_hello(hello_payload_with_token(10, 10), out), DecodeError::none);
}

TEST(CodecHello, EncoderTruncatesAnOverlongToken) {
  Hello in = sample_hello();
  in.token = std::string(kMaxTokenSize + 100, 'x');
  const Buffer frame = encode([&](Buffer& b) { append_hello(b, in); });
  const DecodeResult r = decode_whole(frame, FrameType::hello, 0, 0);
  Hello out;
  ASSERT_EQ(parse_hello(r.payload, out), DecodeError::none);
  EXPECT_EQ(out.token, std::string(kMaxTokenSize, 'x'));
}

// ---------------------------------------------------------------------------------------------
// 8. Validation of the other frames

TEST(CodecRedirect, RoundTripsEveryField) {
  Redirect in{7, 0x0102030405060708ULL, "relay-b.example:7400", "channel moved to relay b"};
  const Buffer payload = payload_of(encode([&](Buffer& b) { append_redirect(b, in); }));
  Redirect out;
  ASSERT_EQ(parse_redirect(payload, out), DecodeError::none);
  EXPECT_EQ(out.last_stream, 7u);
  EXPECT_EQ(out.revision, 0x0102030405060708ULL);
  EXPECT_EQ(out.address, "relay-b.example:7400");
  EXPECT_EQ(out.message, "channel moved to relay b");
}

TEST(CodecRedirect, AnEmptyAddressOrATruncatedPayloadIsMalformed) {
  Redirect in{0, 1, "", ""};
  Buffer payload = payload_of(encode([&](Buffer& b) { append_redirect(b, in); }));
  Redirect out;
  EXPECT_EQ(parse_redirect(payload, out), DecodeError::malformed);
  in.address = "127.0.0.2:7400";
  payload = payload_of(encode([&](Buffer& b) { append_redirect(b, in); }));
  payload.pop_back();
  EXPECT_EQ(parse_redirect(payload, out), DecodeError::malformed);
}

TEST(CodecHello, EveryVersionFromTheOldestSupportedIsAccepted) {
  for (std::uint16_t version = kOldestProtocolVersion; version <= kProtocolVersion; ++version) {
    Hello in = sample_hello();
    in.version = version;
    const Buffer payload = payload_of(encode([&](Buffer& b) { append_hello(b, in); }));
    Hello out;
    EXPECT_EQ(parse_hello(payload, out), DecodeError::none) << version;
    EXPECT_EQ(out.version, version);
  }
}

TEST(CodecValidation, WelcomeWithWrongVersionIsUnsupported) {
  for (std::uint16_t version :
       {std::uint16_t{0}, std::uint16_t{kProtocolVersion + 1}, std::uint16_t{0xFFFF}}) {
    SCOPED_TRACE(version);
    Welcome in = sample_welcome();
    in.version = version;
    const Buffer payload = payload_of(encode([&](Buffer& b) { append_welcome(b, in); }));
    Welcome out;
    EXPECT_EQ(parse_welcome(payload, out), DecodeError::unsupported_version);
  }
}

TEST(CodecValidation, WelcomeWithNilPeerSmallMaxFrameOrZeroWindowIsMalformed) {
  const auto check = [](const Welcome& in) {
    const Buffer payload = payload_of(encode([&](Buffer& b) { append_welcome(b, in); }));
    Welcome out;
    return parse_welcome(payload, out);
  };
  Welcome nil_peer = sample_welcome();
  nil_peer.peer_id = Uuid{};
  EXPECT_EQ(check(nil_peer), DecodeError::malformed);
  Welcome small = sample_welcome();
  small.max_frame = kMinMaxFrame - 1;
  EXPECT_EQ(check(small), DecodeError::malformed);
  Welcome no_window = sample_welcome();
  no_window.stream_window = 0;
  EXPECT_EQ(check(no_window), DecodeError::malformed);
  Welcome huge_window = sample_welcome();
  huge_window.stream_window = kMaxWindow + 1;
  EXPECT_EQ(check(huge_window), DecodeError::malformed);
  huge_window.stream_window = kMaxWindow;
  EXPECT_EQ(check(huge_window), DecodeError::none);
}

TEST(CodecValidation, StatusAboveMaximumIsBadStatus) {
  for (std::uint16_t value : {std::uint16_t{kMaxStatusValue + 1}, std::uint16_t{0x00FF},
                              std::uint16_t{0x0100}, std::uint16_t{0xFFFF}}) {
    SCOPED_TRACE(value);
    const auto status = static_cast<Status>(value);
    {
      const Buffer frame = encode([&](Buffer& b) { append_end(b, kStream, sample_end(status)); });
      const DecodeResult r = decode_whole(frame, FrameType::end, 0, kStream);
      End out;
      EXPECT_EQ(parse_end(r.payload, out), DecodeError::bad_status);
    }
    {
      const Buffer frame =
          encode([&](Buffer& b) { append_reset(b, kStream, sample_reset(status)); });
      const DecodeResult r = decode_whole(frame, FrameType::reset, 0, kStream);
      Reset out;
      EXPECT_EQ(parse_reset(r.payload, out), DecodeError::bad_status);
    }
    {
      const Buffer frame = encode([&](Buffer& b) { append_go_away(b, sample_go_away(status)); });
      const DecodeResult r = decode_whole(frame, FrameType::go_away, 0, 0);
      GoAway out;
      EXPECT_EQ(parse_go_away(r.payload, out), DecodeError::bad_status);
    }
    {
      const Buffer frame = encode([&](Buffer& b) { append_error(b, sample_error(status)); });
      const DecodeResult r = decode_whole(frame, FrameType::error, 0, 0);
      Error out;
      EXPECT_EQ(parse_error(r.payload, out), DecodeError::bad_status);
    }
  }
}

TEST(CodecValidation, WindowIncrementZeroIsMalformed) {
  const Buffer frame = encode([](Buffer& b) { append_window(b, kStream, 0); });
  const DecodeResult r = decode_whole(frame, FrameType::window, 0, kStream);
  std::uint32_t increment = 1;
  EXPECT_EQ(parse_window(r.payload, increment), DecodeError::malformed);
}

TEST(CodecValidation, PresenceEventAboveLeftIsMalformed) {
  for (unsigned event : {3u, 0x80u, 0xFFu}) {
    SCOPED_TRACE(event);
    Presence in = sample_presence(PresenceEvent::joined, 1);
    in.event = static_cast<PresenceEvent>(event);
    const Buffer payload = payload_of(encode([&](Buffer& b) { append_presence(b, in); }));
    Presence out;
    EXPECT_EQ(parse_presence(payload, out), DecodeError::malformed);
  }
}

TEST(CodecValidation, PresenceJoinedOrLeftWithoutExactlyOnePeerIsMalformed) {
  for (PresenceEvent event : {PresenceEvent::joined, PresenceEvent::left}) {
    for (std::size_t peers : {0u, 2u, 3u}) {
      SCOPED_TRACE("event=" + std::to_string(static_cast<int>(event)) +
                   " peers=" + std::to_string(peers));
      const Buffer payload =
          payload_of(encode([&](Buffer& b) { append_presence(b, sample_presence(event, peers)); }));
      Presence out;
      EXPECT_EQ(parse_presence(payload, out), DecodeError::malformed);
    }
  }
}

TEST(CodecValidation, PresenceCountNotMatchingPeerBytesIsMalformed) {
  const Buffer good = payload_of(
      encode([](Buffer& b) { append_presence(b, sample_presence(PresenceEvent::snapshot, 3)); }));
  for (std::uint16_t count :
       {std::uint16_t{0}, std::uint16_t{2}, std::uint16_t{4}, std::uint16_t{0xFFFF}}) {
    SCOPED_TRACE(count);
    Buffer payload = good;
    store_be16(payload, 2, count);
    Presence out;
    EXPECT_EQ(parse_presence(payload, out), DecodeError::malformed);
  }
  // Peer bytes that are not a whole number of UUIDs.
  Buffer ragged = good;
  ragged.pop_back();
  Presence out;
  EXPECT_EQ(parse_presence(ragged, out), DecodeError::malformed);
}

TEST(CodecValidation, OpenKindAboveBroadcastIsMalformed) {
  for (unsigned kind : {3u, 0x10u, 0xFFu}) {
    SCOPED_TRACE(kind);
    const Open in = sample_open(static_cast<StreamKind>(kind));
    const Buffer payload = payload_of(encode([&](Buffer& b) { append_open(b, 1, in); }));
    Open out;
    Bytes body;
    EXPECT_EQ(parse_open(payload, out, body), DecodeError::malformed);
  }
}

Open open_with_entries(std::size_t count) {
  Open open;
  open.peer = make_uuid(0x01);
  for (std::size_t i = 0; i < count; ++i) {
    std::string key = "k";
    std::string value = "v";
    key += std::to_string(i);
    value += std::to_string(i);
    open.metadata.emplace_back(std::move(key), std::move(value));
  }
  return open;
}

TEST(CodecValidation, OpenWithMaximumMetadataEntriesIsAccepted) {
  const Open in = open_with_entries(kMaxMetadataEntries);
  const Buffer payload = payload_of(encode([&](Buffer& b) { append_open(b, 1, in); }));
  Open out;
  Bytes body;
  ASSERT_EQ(parse_open(payload, out, body), DecodeError::none);
  EXPECT_EQ(out.metadata, in.metadata);
  EXPECT_TRUE(body.empty());
}

TEST(CodecValidation, OpenWithTooManyMetadataEntriesIsMalformed) {
  const Open in = open_with_entries(kMaxMetadataEntries);
  Buffer payload = payload_of(encode([&](Buffer& b) { append_open(b, 1, in); }));
  // Add one more well-formed entry by hand and bump the count past the limit.
  append_be16(payload, 1);
  append_text(payload, "k");
  append_be16(payload, 1);
  append_text(payload, "v");
  store_be16(payload, 2, static_cast<std::uint16_t>(kMaxMetadataEntries + 1));
  Open out;
  Bytes body;
  EXPECT_EQ(parse_open(payload, out, body), DecodeError::malformed);
  store_be16(payload, 2, 0xFFFF);
  EXPECT_EQ(parse_open(payload, out, body), DecodeError::malformed);
}

TEST(CodecValidation, OpenEncoderKeepsOnlyTheMaximumMetadataEntries) {
  const Open in = open_with_entries(kMaxMetadataEntries + 6);
  const Buffer frame = encode([&](Buffer& b) { append_open(b, 1, in, as_bytes(kBody)); });
  const DecodeResult r = decode_whole(frame, FrameType::open, 0, 1);
  Open out;
  Bytes body;
  ASSERT_EQ(parse_open(r.payload, out, body), DecodeError::none);
  ASSERT_EQ(out.metadata.size(), kMaxMetadataEntries);
  const Metadata expected(in.metadata.begin(),
                          in.metadata.begin() + static_cast<std::ptrdiff_t>(kMaxMetadataEntries));
  EXPECT_EQ(out.metadata, expected);
  EXPECT_EQ(as_string(body), kBody);
}

TEST(CodecValidation, OpenMetadataLengthRunningPastTheEndIsMalformed) {
  Open in;
  in.peer = make_uuid(0x01);
  in.metadata = {{"key", "value"}};
  const Buffer good = payload_of(encode([&](Buffer& b) { append_open(b, 1, in); }));
  ASSERT_EQ(good.size(), 28u + 2 + 3 + 2 + 5);
  Open out;
  Bytes body;
  ASSERT_EQ(parse_open(good, out, body), DecodeError::none);

  for (std::uint16_t key_len : {std::uint16_t{3 + 2 + 5 + 1}, std::uint16_t{0xFFFF}}) {
    SCOPED_TRACE(key_len);
    Buffer payload = good;
    store_be16(payload, 28, key_len);
    EXPECT_EQ(parse_open(payload, out, body), DecodeError::malformed);
  }
  for (std::uint16_t value_len : {std::uint16_t{6}, std::uint16_t{0xFFFF}}) {
    SCOPED_TRACE(value_len);
    Buffer payload = good;
    store_be16(payload, 28 + 2 + 3, value_len);
    EXPECT_EQ(parse_open(payload, out, body), DecodeError::malformed);
  }
  // A count promising an entry the payload does not hold.
  Buffer missing = good;
  store_be16(missing, 2, 2);
  EXPECT_EQ(parse_open(missing, out, body), DecodeError::malformed);
}

TEST(CodecValidation, MessageLengthAboveMaximumIsMalformed) {
  const auto too_long = static_cast<std::uint16_t>(kMaxMessageSize + 1);
  {
    Buffer payload = payload_of(encode([](Buffer& b) { append_end(b, 1, End{}); }));
    store_be16(payload, 2, too_long);
    payload.insert(payload.end(), too_long, std::uint8_t{'m'});
    End out;
    EXPECT_EQ(parse_end(payload, out), DecodeError::malformed);
  }
  {
    Buffer payload = payload_of(encode([](Buffer& b) { append_reset(b, 1, Reset{}); }));
    store_be16(payload, 2, too_long);
    payload.insert(payload.end(), too_long, std::uint8_t{'m'});
    Reset out;
    EXPECT_EQ(parse_reset(payload, out), DecodeError::malformed);
  }
  {
    Buffer payload = payload_of(encode([](Buffer& b) { append_go_away(b, GoAway{}); }));
    store_be16(payload, 6, too_long);
    payload.insert(payload.end(), too_long, std::uint8_t{'m'});
    GoAway out;
    EXPECT_EQ(parse_go_away(payload, out), DecodeError::malformed);
  }
  {
    Buffer payload = payload_of(encode([](Buffer& b) { append_error(b, Error{}); }));
    store_be16(payload, 2, too_long);
    payload.insert(payload.end(), too_long, std::uint8_t{'m'});
    Error out;
    EXPECT_EQ(parse_error(payload, out), DecodeError::malformed);
  }
}

// ---------------------------------------------------------------------------------------------
// 9. Overlong messages are truncated by the encoders

TEST(CodecMessages, EncodersTruncateOverlongMessagesToTheMaximum) {
  const std::string overlong(kMaxMessageSize + 100, 'x');
  const std::string clamped(kMaxMessageSize, 'x');
  {
    End in = sample_end(Status::application);
    in.message = overlong;
    const Buffer frame = encode([&](Buffer& b) { append_end(b, kStream, in); });
    const DecodeResult r = decode_whole(frame, FrameType::end, 0, kStream);
    EXPECT_EQ(std::size_t{r.header.length}, 16 + kMaxMessageSize);
    End out;
    ASSERT_EQ(parse_end(r.payload, out), DecodeError::none);
    EXPECT_EQ(out.message, clamped);
    EXPECT_EQ(out.app_code, in.app_code);
  }
  {
    Reset in = sample_reset(Status::cancelled);
    in.message = overlong;
    const Buffer frame = encode([&](Buffer& b) { append_reset(b, kStream, in); });
    const DecodeResult r = decode_whole(frame, FrameType::reset, 0, kStream);
    EXPECT_EQ(std::size_t{r.header.length}, 8 + kMaxMessageSize);
    Reset out;
    ASSERT_EQ(parse_reset(r.payload, out), DecodeError::none);
    EXPECT_EQ(out.message, clamped);
  }
  {
    GoAway in = sample_go_away(Status::ok);
    in.message = overlong;
    const Buffer frame = encode([&](Buffer& b) { append_go_away(b, in); });
    const DecodeResult r = decode_whole(frame, FrameType::go_away, 0, 0);
    EXPECT_EQ(std::size_t{r.header.length}, 8 + kMaxMessageSize);
    GoAway out;
    ASSERT_EQ(parse_go_away(r.payload, out), DecodeError::none);
    EXPECT_EQ(out.message, clamped);
  }
  {
    Error in = sample_error(Status::internal);
    in.message = overlong;
    const Buffer frame = encode([&](Buffer& b) { append_error(b, in); });
    const DecodeResult r = decode_whole(frame, FrameType::error, 0, 0);
    EXPECT_EQ(std::size_t{r.header.length}, 4 + kMaxMessageSize);
    Error out;
    ASSERT_EQ(parse_error(r.payload, out), DecodeError::none);
    EXPECT_EQ(out.message, clamped);
  }
}

TEST(CodecMessages, MessageOfExactlyTheMaximumIsKept) {
  Error in = sample_error(Status::internal);
  in.message = std::string(kMaxMessageSize, 'y');
  const Buffer frame = encode([&](Buffer& b) { append_error(b, in); });
  const DecodeResult r = decode_whole(frame, FrameType::error, 0, 0);
  Error out;
  ASSERT_EQ(parse_error(r.payload, out), DecodeError::none);
  EXPECT_EQ(out.message, in.message);
}

TEST(CodecMessages, ControlFrameWithMaximumMessageFitsTheMinimumMaxFrame) {
  End in = sample_end(Status::application);
  in.message = std::string(kMaxMessageSize + 1, 'z');
  const Buffer frame = encode([&](Buffer& b) { append_end(b, kStream, in); });
  EXPECT_EQ(decode_frame(frame, kMinMaxFrame).kind, Kind::frame);
}

// ---------------------------------------------------------------------------------------------
// 10. Several frames in one buffer

TEST(CodecDecodeFrame, ConcatenatedFramesDecodeOneAfterTheOther) {
  const auto samples = sample_frames();
  Buffer buffer;
  for (const auto& [name, frame] : samples) buffer.insert(buffer.end(), frame.begin(), frame.end());

  std::size_t offset = 0;
  for (const auto& [name, frame] : samples) {
    SCOPED_TRACE(name);
    const Bytes rest = Bytes(buffer).subspan(offset);
    const DecodeResult r = decode_frame(rest, kLargeMaxFrame);
    ASSERT_EQ(r.kind, Kind::frame);
    EXPECT_EQ(r.consumed, frame.size());
    EXPECT_EQ(r.header.type, static_cast<FrameType>(frame[0]));
    EXPECT_EQ(r.payload.data(), rest.data() + kHeaderSize);
    EXPECT_TRUE(std::equal(r.payload.begin(), r.payload.end(),
                           frame.begin() + static_cast<std::ptrdiff_t>(kHeaderSize), frame.end()));
    offset += r.consumed;
  }
  EXPECT_EQ(offset, buffer.size());
  const DecodeResult end = decode_frame(Bytes(buffer).subspan(offset), kLargeMaxFrame);
  EXPECT_EQ(end.kind, Kind::need_more);
  EXPECT_EQ(end.needed, kHeaderSize);
}

TEST(CodecDecodeFrame, FrameFollowedByAPartialFrameDecodesTheFirstThenNeedsMore) {
  Buffer buffer;
  append_ping(buffer, 1, false);
  const std::size_t first = buffer.size();
  append_data(buffer, kStream, as_bytes(kBody), false);
  buffer.resize(buffer.size() - 1);

  const DecodeResult r = decode_frame(buffer, kLargeMaxFrame);
  ASSERT_EQ(r.kind, Kind::frame);
  EXPECT_EQ(r.header.type, FrameType::ping);
  EXPECT_EQ(r.consumed, first);
  const DecodeResult next = decode_frame(Bytes(buffer).subspan(r.consumed), kLargeMaxFrame);
  EXPECT_EQ(next.kind, Kind::need_more);
  EXPECT_EQ(next.needed, kHeaderSize + kBody.size());
}

// ---------------------------------------------------------------------------------------------
// 11. Byte layout

TEST(CodecLayout, HeaderIsTypeFlagsReservedStreamLengthBigEndian) {
  const Buffer header = header_bytes(FrameType::end, 0xA5, 0x01020304, 0xA1B2C3D4);
  const Buffer expected = {0x12, 0xA5, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0xA1, 0xB2, 0xC3, 0xD4};
  EXPECT_EQ(header, expected);
}

TEST(CodecLayout, DataFrameWithFiveByteBodyIsSeventeenBytes) {
  const Buffer frame =
      encode([](Buffer& b) { append_data(b, 0x01020304, as_bytes("hello"), true); });
  const Buffer expected = {0x11, 0x01, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x00,
                           0x00, 0x00, 0x05, 'h',  'e',  'l',  'l',  'o'};
  ASSERT_EQ(frame.size(), 17u);
  EXPECT_EQ(frame, expected);
}

TEST(CodecLayout, WindowAndPingPayloadsAreBigEndian) {
  const Buffer window = encode([](Buffer& b) { append_window(b, 7, 0x0A0B0C0D); });
  const Buffer expected_window = {0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07,
                                  0x00, 0x00, 0x00, 0x04, 0x0A, 0x0B, 0x0C, 0x0D};
  EXPECT_EQ(window, expected_window);

  const Buffer ping = encode([](Buffer& b) { append_ping(b, 0x0102030405060708, true); });
  const Buffer expected_ping = {0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                0x00, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
  EXPECT_EQ(ping, expected_ping);
}

TEST(CodecLayout, HelloPayloadStartsWithMagicAndVersion) {
  const Buffer payload = payload_of(encode([](Buffer& b) { append_hello(b, sample_hello()); }));
  ASSERT_GE(payload.size(), 8u);
  EXPECT_EQ(payload[0], 'S');
  EXPECT_EQ(payload[1], 'W');
  EXPECT_EQ(payload[2], 'B');
  EXPECT_EQ(payload[3], 'D');
  EXPECT_EQ(payload[4], 0x00);
  EXPECT_EQ(payload[5], kProtocolVersion);
  EXPECT_EQ(payload[6], 0x80);  // hello_flags 0x8001
  EXPECT_EQ(payload[7], 0x01);
}

TEST(CodecLayout, EndPayloadIsStatusLengthCodeDeliveredDroppedMessage) {
  End in;
  in.status = Status::application;
  in.app_code = 0x01020304;
  in.delivered = 0x05060708;
  in.dropped = 0x090A0B0C;
  in.message = "ab";
  const Buffer payload = payload_of(encode([&](Buffer& b) { append_end(b, 1, in); }));
  const Buffer expected = {0x00, 0x0D, 0x00, 0x02, 0x01, 0x02, 0x03, 0x04, 0x05,
                           0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 'a',  'b'};
  EXPECT_EQ(payload, expected);
}

TEST(CodecLayout, PresencePayloadIsEventReservedCountVersionPeers) {
  const Presence in = sample_presence(PresenceEvent::left, 1);
  const Buffer payload = payload_of(encode([&](Buffer& b) { append_presence(b, in); }));
  Buffer expected = {0x02, 0x00, 0x00, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
  expected.insert(expected.end(), in.peers[0].bytes.begin(), in.peers[0].bytes.end());
  EXPECT_EQ(payload, expected);
}

TEST(CodecLayout, OpenPayloadIsFixedPartMetadataThenBody) {
  Open in;
  in.kind = StreamKind::broadcast;
  in.deadline_ms = 0x01020304;
  in.idle_ms = 0x05060708;
  in.peer = make_uuid(0x40);
  in.metadata = {{"k", "vv"}};
  const Buffer payload =
      payload_of(encode([&](Buffer& b) { append_open(b, 1, in, as_bytes("B")); }));
  Buffer expected = {0x02, 0x00, 0x00, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
  expected.insert(expected.end(), in.peer.bytes.begin(), in.peer.bytes.end());
  const Buffer rest = {0x00, 0x01, 'k', 0x00, 0x02, 'v', 'v', 'B'};
  expected.insert(expected.end(), rest.begin(), rest.end());
  EXPECT_EQ(payload, expected);
}

TEST(CodecLayout, GoAwayPayloadIsLastStreamStatusLengthMessage) {
  GoAway in;
  in.last_stream = 0x01020304;
  in.status = Status::internal;
  in.message = "x";
  const Buffer payload = payload_of(encode([&](Buffer& b) { append_go_away(b, in); }));
  const Buffer expected = {0x01, 0x02, 0x03, 0x04, 0x00, 0x0C, 0x00, 0x01, 'x'};
  EXPECT_EQ(payload, expected);
}

// ---------------------------------------------------------------------------------------------
// 12. Names

TEST(CodecNames, StatusNames) {
  const std::pair<Status, std::string_view> expected[] = {
      {Status::ok, "OK"},
      {Status::no_responders, "NO_RESPONDERS"},
      {Status::peer_gone, "PEER_GONE"},
      {Status::deadline_exceeded, "DEADLINE_EXCEEDED"},
      {Status::idle_timeout, "IDLE_TIMEOUT"},
      {Status::cancelled, "CANCELLED"},
      {Status::refused, "REFUSED"},
      {Status::unauthenticated, "UNAUTHENTICATED"},
      {Status::permission_denied, "PERMISSION_DENIED"},
      {Status::resource_exhausted, "RESOURCE_EXHAUSTED"},
      {Status::slow_consumer, "SLOW_CONSUMER"},
      {Status::protocol_error, "PROTOCOL_ERROR"},
      {Status::internal, "INTERNAL"},
      {Status::application, "APPLICATION"},
  };
  ASSERT_EQ(std::size(expected), std::size_t{kMaxStatusValue} + 1);
  for (std::size_t i = 0; i < std::size(expected); ++i) {
    EXPECT_EQ(static_cast<std::size_t>(expected[i].first), i);
    EXPECT_EQ(status_name(expected[i].first), expected[i].second);
  }
  EXPECT_EQ(status_name(static_cast<Status>(kMaxStatusValue + 1)), "UNKNOWN");
  EXPECT_EQ(status_name(static_cast<Status>(0xFFFF)), "UNKNOWN");
}

TEST(CodecNames, StatusValidity) {
  for (std::uint16_t v = 0; v <= kMaxStatusValue; ++v) EXPECT_TRUE(is_valid_status(v)) << v;
  EXPECT_FALSE(is_valid_status(kMaxStatusValue + 1));
  EXPECT_FALSE(is_valid_status(0xFFFF));
}

TEST(CodecNames, FrameTypeNames) {
  EXPECT_EQ(frame_type_name(FrameType::hello), "HELLO");
  EXPECT_EQ(frame_type_name(FrameType::welcome), "WELCOME");
  EXPECT_EQ(frame_type_name(FrameType::presence), "PRESENCE");
  EXPECT_EQ(frame_type_name(FrameType::ping), "PING");
  EXPECT_EQ(frame_type_name(FrameType::go_away), "GOAWAY");
  EXPECT_EQ(frame_type_name(FrameType::error), "ERROR");
  EXPECT_EQ(frame_type_name(FrameType::open), "OPEN");
  EXPECT_EQ(frame_type_name(FrameType::data), "DATA");
  EXPECT_EQ(frame_type_name(FrameType::end), "END");
  EXPECT_EQ(frame_type_name(FrameType::reset), "RESET");
  EXPECT_EQ(frame_type_name(FrameType::window), "WINDOW");
  EXPECT_EQ(frame_type_name(static_cast<FrameType>(0x00)), "UNKNOWN");
  EXPECT_EQ(frame_type_name(static_cast<FrameType>(0x15)), "UNKNOWN");
}

TEST(CodecNames, DecodeErrorNames) {
  EXPECT_EQ(decode_error_name(DecodeError::none), "none");
  EXPECT_EQ(decode_error_name(DecodeError::frame_too_large), "frame too large");
  EXPECT_EQ(decode_error_name(DecodeError::unknown_type), "unknown frame type");
  EXPECT_EQ(decode_error_name(DecodeError::bad_stream_id), "bad stream id");
  EXPECT_EQ(decode_error_name(DecodeError::malformed), "malformed payload");
  EXPECT_EQ(decode_error_name(DecodeError::bad_magic), "bad magic");
  EXPECT_EQ(decode_error_name(DecodeError::unsupported_version), "unsupported protocol version");
  EXPECT_EQ(decode_error_name(DecodeError::bad_status), "bad status code");
  EXPECT_EQ(decode_error_name(static_cast<DecodeError>(0xFF)), "unknown");
}

}  // namespace
}  // namespace switchboard::wire
