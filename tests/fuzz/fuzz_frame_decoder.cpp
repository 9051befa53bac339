// libFuzzer target for the wire codec: the FrameReader fed a byte stream in two pieces must
// decode exactly what decode_frame finds in the whole stream, and every payload that parses must
// survive an encode/parse round trip.
//
// Input: split point (u16, big-endian, taken modulo the stream size + 1), one configuration byte
// (max frame and block size), then the byte stream.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

#include "fuzz_check.hpp"
#include "switchboard/wire/buffer.hpp"
#include "switchboard/wire/codec.hpp"

namespace {

using namespace switchboard;
using namespace switchboard::wire;
using Buffer = std::vector<std::uint8_t>;
using Kind = DecodeResult::Kind;

constexpr std::array<std::uint32_t, 4> kMaxFrames = {kMinMaxFrame, 4096, 64 * 1024, 1 << 20};
constexpr std::array<std::size_t, 4> kBlockSizes = {1, 64, 4096, 256 * 1024};

struct Decoded {
  FrameHeader header;
  Buffer payload;
};

bool same_header(const FrameHeader& a, const FrameHeader& b) {
  return a.type == b.type && a.flags == b.flags && a.stream == b.stream && a.length == b.length;
}

/// Where decoding a stream ended: the frames, then need_more (with what is buffered) or an error.
struct Outcome {
  std::vector<Decoded> frames;
  Kind last = Kind::need_more;
  DecodeError error = DecodeError::none;
  std::size_t needed = 0;
  std::size_t leftover = 0;
};

void check_frame_limits(const DecodeResult& result, std::uint32_t max_frame) {
  SWITCHBOARD_FUZZ_CHECK(result.header.length <= max_frame);
  SWITCHBOARD_FUZZ_CHECK(result.payload.size() == result.header.length);
  SWITCHBOARD_FUZZ_CHECK(is_stream_frame(result.header.type) == (result.header.stream != 0));
  SWITCHBOARD_FUZZ_CHECK(!frame_type_name(result.header.type).empty() &&
                         frame_type_name(result.header.type) != "UNKNOWN");
}

/// The reference: decode_frame over the contiguous stream.
Outcome decode_whole(Bytes stream, std::uint32_t max_frame) {
  Outcome outcome;
  std::size_t pos = 0;
  for (;;) {
    const auto rest = stream.subspan(pos);
    const auto result = decode_frame(rest, max_frame);
    if (result.kind == Kind::frame) {
      check_frame_limits(result, max_frame);
      SWITCHBOARD_FUZZ_CHECK(result.consumed == kHeaderSize + result.header.length);
      SWITCHBOARD_FUZZ_CHECK(result.payload.data() == rest.data() + kHeaderSize);
      outcome.frames.push_back(
          {result.header, Buffer(result.payload.begin(), result.payload.end())});
      pos += result.consumed;
      continue;
    }
    outcome.last = result.kind;
    outcome.error = result.error;
    if (result.kind == Kind::need_more) {
      SWITCHBOARD_FUZZ_CHECK(result.needed > rest.size());
      SWITCHBOARD_FUZZ_CHECK(result.needed <= kHeaderSize + std::size_t{max_frame});
      outcome.needed = result.needed;
      outcome.leftover = rest.size();
    } else {
      SWITCHBOARD_FUZZ_CHECK(result.error != DecodeError::none);
    }
    return outcome;
  }
}

/// The FrameReader fed `stream` in the pieces [0, split) and [split, end).
Outcome decode_in_pieces(Bytes stream, std::size_t split, std::uint32_t max_frame,
                         std::size_t block_size) {
  FrameReader reader(max_frame, block_size);
  Outcome outcome;
  // Slices of earlier payloads with a copy of their bytes: the reader must never overwrite a
  // block somebody still shares.
  std::vector<std::pair<Slice, Buffer>> shared;
  bool broken = false;

  auto drain = [&] {
    Frame frame;
    for (;;) {
      const auto result = reader.next(frame);
      if (result.kind == Kind::frame) {
        check_frame_limits(result, max_frame);
        SWITCHBOARD_FUZZ_CHECK(same_header(frame.header, result.header));
        SWITCHBOARD_FUZZ_CHECK(frame.payload.data() == result.payload.data());
        SWITCHBOARD_FUZZ_CHECK(frame.payload.size() == result.payload.size());
        Buffer copy(frame.payload.begin(), frame.payload.end());
        shared.emplace_back(reader.share(frame.payload), copy);
        outcome.frames.push_back({frame.header, std::move(copy)});
        continue;
      }
      outcome.last = result.kind;
      outcome.error = result.error;
      if (result.kind == Kind::need_more) {
        outcome.needed = result.needed;
        outcome.leftover = reader.buffered();
      } else {
        // Errors are sticky: asking again gives the same error and no frame.
        const auto again = reader.next(frame);
        SWITCHBOARD_FUZZ_CHECK(again.kind == Kind::error && again.error == result.error);
        broken = true;
      }
      return;
    }
  };

  auto feed = [&](Bytes piece) {
    while (!piece.empty() && !broken) {
      const auto space = reader.prepare();
      SWITCHBOARD_FUZZ_CHECK(!space.empty());
      const std::size_t n = std::min(space.size(), piece.size());
      std::memcpy(space.data(), piece.data(), n);
      reader.commit(n);
      piece = piece.subspan(n);
      drain();
    }
  };

  drain();
  feed(stream.first(split));
  feed(stream.subspan(split));
  for (const auto& [slice, copy] : shared) {
    SWITCHBOARD_FUZZ_CHECK(slice.size == copy.size());
    SWITCHBOARD_FUZZ_CHECK(copy.empty() || std::memcmp(slice.data, copy.data(), copy.size()) == 0);
  }
  return outcome;
}

// ---- Payload round trips: parse, encode, decode, parse again; the values must not change. ----

/// The frame encoded into `out` by an append_* function, decoded again.
DecodeResult redecode(const Buffer& out, FrameType type) {
  const auto result = decode_frame(out, UINT32_MAX);
  SWITCHBOARD_FUZZ_CHECK(result.kind == Kind::frame);
  SWITCHBOARD_FUZZ_CHECK(result.consumed == out.size());
  SWITCHBOARD_FUZZ_CHECK(result.header.type == type);
  return result;
}

void round_trip_hello(Bytes payload) {
  Hello hello;
  if (parse_hello(payload, hello) != DecodeError::none) return;
  SWITCHBOARD_FUZZ_CHECK(is_supported_version(hello.version) && !hello.channel.is_nil());
  SWITCHBOARD_FUZZ_CHECK(hello.max_frame >= kMinMaxFrame && hello.token.size() <= kMaxTokenSize);
  Buffer out;
  append_hello(out, hello);
  const auto again = redecode(out, FrameType::hello);
  // HELLO has no reserved bytes: its encoding is canonical.
  SWITCHBOARD_FUZZ_CHECK(again.payload.size() == payload.size() &&
                         std::memcmp(again.payload.data(), payload.data(), payload.size()) == 0);
}

void round_trip_welcome(Bytes payload) {
  Welcome welcome;
  if (parse_welcome(payload, welcome) != DecodeError::none) return;
  Buffer out;
  append_welcome(out, welcome);
  Welcome again;
  SWITCHBOARD_FUZZ_CHECK(parse_welcome(redecode(out, FrameType::welcome).payload, again) ==
                         DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(
      std::tie(welcome.version, welcome.peer_id, welcome.max_frame, welcome.stream_window,
               welcome.max_streams, welcome.keepalive_ms, welcome.message_window) ==
      std::tie(again.version, again.peer_id, again.max_frame, again.stream_window,
               again.max_streams, again.keepalive_ms, again.message_window));
}

void round_trip_message(Bytes payload) {
  MessageHead head;
  Bytes body;
  if (parse_message(payload, head, body) != DecodeError::none) return;
  SWITCHBOARD_FUZZ_CHECK(head.kind == StreamKind::to_peer || head.kind == StreamKind::broadcast);
  Buffer out;
  append_message(out, head, body);
  MessageHead again;
  Bytes again_body;
  SWITCHBOARD_FUZZ_CHECK(parse_message(redecode(out, FrameType::message).payload, again,
                                       again_body) == DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(again.kind == head.kind && again.peer == head.peer);
  SWITCHBOARD_FUZZ_CHECK(
      std::equal(body.begin(), body.end(), again_body.begin(), again_body.end()));
}

void round_trip_message_report(Bytes payload) {
  MessageReport report;
  if (parse_message_report(payload, report) != DecodeError::none) return;
  Buffer out;
  append_message_report(out, report);
  MessageReport again;
  SWITCHBOARD_FUZZ_CHECK(parse_message_report(redecode(out, FrameType::message_report).payload,
                                              again) == DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(std::tie(report.credit, report.messages, report.delivered, report.dropped,
                                  report.refused, report.lost) ==
                         std::tie(again.credit, again.messages, again.delivered, again.dropped,
                                  again.refused, again.lost));
}

void round_trip_presence(Bytes payload, std::uint8_t frame_flags) {
  Presence presence;
  if (parse_presence(payload, presence) != DecodeError::none) return;
  SWITCHBOARD_FUZZ_CHECK(presence.event == PresenceEvent::snapshot || presence.peers.size() == 1);
  Buffer out;
  append_presence(out, presence, (frame_flags & flags::kMore) != 0);
  Presence again;
  SWITCHBOARD_FUZZ_CHECK(parse_presence(redecode(out, FrameType::presence).payload, again) ==
                         DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(presence.event == again.event && presence.version == again.version &&
                         presence.peers == again.peers);
}

void round_trip_open(Bytes payload, std::uint32_t stream, std::uint8_t frame_flags) {
  Open open;
  Bytes body;
  if (parse_open(payload, open, body) != DecodeError::none) return;
  SWITCHBOARD_FUZZ_CHECK(open.metadata.size() <= kMaxMetadataEntries);
  // The session writes OPEN frames by this size; it must describe the parsed layout exactly.
  SWITCHBOARD_FUZZ_CHECK(open_prefix_size(open) + body.size() == payload.size());
  SWITCHBOARD_FUZZ_CHECK(body.empty() ||
                         body.data() + body.size() == payload.data() + payload.size());
  Buffer out;
  append_open(out, stream, open, body, (frame_flags & flags::kFin) != 0);
  const auto frame = redecode(out, FrameType::open);
  SWITCHBOARD_FUZZ_CHECK(frame.header.stream == stream);
  SWITCHBOARD_FUZZ_CHECK((frame.header.flags & flags::kFin) == (frame_flags & flags::kFin));
  Open again;
  Bytes again_body;
  SWITCHBOARD_FUZZ_CHECK(parse_open(frame.payload, again, again_body) == DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(
      std::tie(open.kind, open.deadline_ms, open.idle_ms, open.peer, open.metadata) ==
      std::tie(again.kind, again.deadline_ms, again.idle_ms, again.peer, again.metadata));
  SWITCHBOARD_FUZZ_CHECK(
      body.size() == again_body.size() &&
      (body.empty() || std::memcmp(body.data(), again_body.data(), body.size()) == 0));
}

void round_trip_end(Bytes payload, std::uint32_t stream) {
  End end;
  if (parse_end(payload, end) != DecodeError::none) return;
  SWITCHBOARD_FUZZ_CHECK(end.message.size() <= kMaxMessageSize);
  Buffer out;
  append_end(out, stream, end);
  End again;
  SWITCHBOARD_FUZZ_CHECK(parse_end(redecode(out, FrameType::end).payload, again) ==
                         DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(
      std::tie(end.status, end.app_code, end.delivered, end.dropped, end.message) ==
      std::tie(again.status, again.app_code, again.delivered, again.dropped, again.message));
}

void round_trip_reset(Bytes payload, std::uint32_t stream) {
  Reset reset;
  if (parse_reset(payload, reset) != DecodeError::none) return;
  SWITCHBOARD_FUZZ_CHECK(reset.message.size() <= kMaxMessageSize);
  Buffer out;
  append_reset(out, stream, reset);
  Reset again;
  SWITCHBOARD_FUZZ_CHECK(parse_reset(redecode(out, FrameType::reset).payload, again) ==
                         DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(std::tie(reset.status, reset.app_code, reset.message) ==
                         std::tie(again.status, again.app_code, again.message));
}

void round_trip_window(Bytes payload, std::uint32_t stream) {
  std::uint32_t increment = 0;
  if (parse_window(payload, increment) != DecodeError::none) return;
  SWITCHBOARD_FUZZ_CHECK(increment != 0);
  Buffer out;
  append_window(out, stream, increment);
  std::uint32_t again = 0;
  SWITCHBOARD_FUZZ_CHECK(parse_window(redecode(out, FrameType::window).payload, again) ==
                         DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(again == increment);
}

void round_trip_ping(Bytes payload, std::uint8_t frame_flags) {
  std::uint64_t opaque = 0;
  if (parse_ping(payload, opaque) != DecodeError::none) return;
  Buffer out;
  append_ping(out, opaque, (frame_flags & flags::kAck) != 0);
  std::uint64_t again = 0;
  SWITCHBOARD_FUZZ_CHECK(parse_ping(redecode(out, FrameType::ping).payload, again) ==
                         DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(again == opaque);
}

void round_trip_go_away(Bytes payload) {
  GoAway go_away;
  if (parse_go_away(payload, go_away) != DecodeError::none) return;
  Buffer out;
  append_go_away(out, go_away);
  GoAway again;
  SWITCHBOARD_FUZZ_CHECK(parse_go_away(redecode(out, FrameType::go_away).payload, again) ==
                         DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(std::tie(go_away.last_stream, go_away.status, go_away.message) ==
                         std::tie(again.last_stream, again.status, again.message));
}

void round_trip_error(Bytes payload) {
  Error error;
  if (parse_error(payload, error) != DecodeError::none) return;
  Buffer out;
  append_error(out, error);
  Error again;
  SWITCHBOARD_FUZZ_CHECK(parse_error(redecode(out, FrameType::error).payload, again) ==
                         DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(std::tie(error.status, error.message) ==
                         std::tie(again.status, again.message));
}

void round_trip_redirect(Bytes payload) {
  Redirect redirect;
  if (parse_redirect(payload, redirect) != DecodeError::none) return;
  Buffer out;
  append_redirect(out, redirect);
  Redirect again;
  SWITCHBOARD_FUZZ_CHECK(parse_redirect(redecode(out, FrameType::redirect).payload, again) ==
                         DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(
      std::tie(redirect.last_stream, redirect.revision, redirect.address, redirect.message) ==
      std::tie(again.last_stream, again.revision, again.address, again.message));
}

void round_trip(const Decoded& frame) {
  const Bytes payload = frame.payload;
  switch (frame.header.type) {
    case FrameType::hello:
      return round_trip_hello(payload);
    case FrameType::welcome:
      return round_trip_welcome(payload);
    case FrameType::presence:
      return round_trip_presence(payload, frame.header.flags);
    case FrameType::ping:
      return round_trip_ping(payload, frame.header.flags);
    case FrameType::go_away:
      return round_trip_go_away(payload);
    case FrameType::error:
      return round_trip_error(payload);
    case FrameType::redirect:
      return round_trip_redirect(payload);
    case FrameType::message:
      return round_trip_message(payload);
    case FrameType::message_report:
      return round_trip_message_report(payload);
    case FrameType::open:
      return round_trip_open(payload, frame.header.stream, frame.header.flags);
    case FrameType::data:
      return;
    case FrameType::end:
      return round_trip_end(payload, frame.header.stream);
    case FrameType::reset:
      return round_trip_reset(payload, frame.header.stream);
    case FrameType::window:
      return round_trip_window(payload, frame.header.stream);
  }
  SWITCHBOARD_FUZZ_CHECK(false && "decoded a frame of an unknown type");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const Bytes stream(data + 3, size - 3);
  const std::size_t split = ((std::size_t{data[0]} << 8) | data[1]) % (stream.size() + 1);
  const std::uint32_t max_frame = kMaxFrames[data[2] & 3];
  const std::size_t block_size = kBlockSizes[(data[2] >> 2) & 3];

  const Outcome whole = decode_whole(stream, max_frame);
  const Outcome pieces = decode_in_pieces(stream, split, max_frame, block_size);

  SWITCHBOARD_FUZZ_CHECK(whole.frames.size() == pieces.frames.size());
  for (std::size_t i = 0; i < whole.frames.size(); ++i) {
    SWITCHBOARD_FUZZ_CHECK(same_header(whole.frames[i].header, pieces.frames[i].header));
    SWITCHBOARD_FUZZ_CHECK(whole.frames[i].payload == pieces.frames[i].payload);
  }
  SWITCHBOARD_FUZZ_CHECK(whole.last == pieces.last);
  SWITCHBOARD_FUZZ_CHECK(whole.error == pieces.error);
  if (whole.last == Kind::need_more) {
    SWITCHBOARD_FUZZ_CHECK(whole.needed == pieces.needed);
    SWITCHBOARD_FUZZ_CHECK(whole.leftover == pieces.leftover);
  }
  for (const auto& frame : whole.frames) round_trip(frame);
  return 0;
}
