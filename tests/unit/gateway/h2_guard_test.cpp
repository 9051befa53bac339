// The gRPC door's HTTP/2 guard: every limit, CONTINUATION rules, refusals, at every split.
#include "grpc_gateway/h2_guard.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/h2_frames.hpp"

namespace switchboard::gateway {
namespace {

namespace h2 = test::h2;
using h2::Bytes;
using Clock = H2Guard::Clock;

// What the guard reported, with absolute offsets into the whole input.
struct Event {
  GuardStep::Kind kind;
  std::size_t at;
  std::uint32_t stream;
  GuardViolation violation;
  H2Error code;
  bool operator==(const Event&) const = default;
};

std::string describe(const std::vector<Event>& events) {
  std::string text;
  for (const auto& e : events) {
    text += "[kind=" + std::to_string(static_cast<int>(e.kind)) + " at=" + std::to_string(e.at) +
            " stream=" + std::to_string(e.stream) +
            " violation=" + std::string(violation_name(e.violation)) + "] ";
  }
  return text;
}

// Feeds `bytes` in pieces of the given sizes (the rest as one last piece), like a read loop
// that forwards what the guard consumed. Stops at the first violation.
std::vector<Event> feed(H2Guard& guard, const Bytes& bytes, std::vector<std::size_t> pieces,
                        Clock::time_point now) {
  std::vector<Event> events;
  std::size_t at = 0;
  std::size_t piece = 0;
  while (at < bytes.size()) {
    std::size_t size = piece < pieces.size() ? pieces[piece++] : bytes.size() - at;
    size = std::min(size, bytes.size() - at);
    std::span<const std::uint8_t> rest(bytes.data() + at, size);
    std::size_t base = at;
    while (!rest.empty()) {
      const auto step = guard.client_bytes(rest, now);
      if (step.kind == GuardStep::Kind::violation) {
        events.push_back({step.kind, base, 0, step.violation, step.code});
        return events;
      }
      base += step.consumed;
      rest = rest.subspan(step.consumed);
      if (step.kind == GuardStep::Kind::refuse) {
        events.push_back({step.kind, base, step.stream, GuardViolation::count_, H2Error::no_error});
      }
    }
    at += size;
  }
  return events;
}

std::vector<Event> feed_whole(const H2GuardLimits& limits, const Bytes& bytes) {
  const auto now = Clock::now();
  H2Guard guard(limits, now);
  return feed(guard, bytes, {}, now);
}

// The events of one whole feed, then the same at every two-piece split and one byte at a time.
// A violation's offset is where the guard noticed it, which depends on the split: compared by
// kind only.
void expect_same_at_every_split(const H2GuardLimits& limits, const Bytes& bytes,
                                const std::vector<Event>& expected) {
  auto normalise = [](std::vector<Event> events) {
    for (auto& e : events) {
      if (e.kind == GuardStep::Kind::violation) e.at = 0;
    }
    return events;
  };
  const auto want = normalise(expected);
  const auto now = Clock::now();
  for (std::size_t split = 0; split <= bytes.size(); ++split) {
    H2Guard guard(limits, now);
    ASSERT_EQ(normalise(feed(guard, bytes, {split}, now)), want)
        << "split at " << split << ": " << describe(feed_whole(limits, bytes));
  }
  H2Guard guard(limits, now);
  ASSERT_EQ(normalise(feed(guard, bytes, std::vector<std::size_t>(bytes.size(), 1), now)), want)
      << "one byte at a time";
}

// The server's bytes, which the guard may rewrite.
void from_server(H2Guard& guard, Bytes bytes) { guard.server_bytes(bytes); }

Bytes start() { return h2::concat({h2::preface(), h2::settings({{4, 65535}})}); }

Bytes request(std::uint32_t stream, std::uint8_t extra_flags = 0) {
  return h2::frame(h2::kHeaders, h2::kEndHeaders | extra_flags, stream,
                   h2::grpc_request_headers("/switchboard.v1.SwitchboardService/Send"));
}

TEST(H2Guard, AWellBehavedConnectionPassesWholeAtEverySplit) {
  const Bytes bytes = h2::concat(
      {start(), request(1), h2::frame(h2::kData, 0, 1, Bytes(100, 7)),
       h2::frame(h2::kPing, 0, 0, Bytes(8, 0)), h2::frame(h2::kWindowUpdate, 0, 0, {0, 1, 0, 0}),
       h2::frame(h2::kData, h2::kEndStream, 1, {}), h2::frame(h2::kSettings, h2::kAck, 0, {})});
  expect_same_at_every_split({}, bytes, {});
  H2Guard guard({}, Clock::now());
  feed(guard, bytes, {}, Clock::now());
  EXPECT_EQ(guard.open_streams(), 1U);
  EXPECT_EQ(guard.last_client_stream(), 1U);
}

TEST(H2Guard, SomethingOtherThanThePrefaceIsAProtocolError) {
  const std::string text = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  const auto events = feed_whole({}, Bytes(text.begin(), text.end()));
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].violation, GuardViolation::bad_preface);
  EXPECT_EQ(events[0].code, H2Error::protocol_error);
  expect_same_at_every_split({}, Bytes(text.begin(), text.end()), events);
}

TEST(H2Guard, TheFirstFrameMustBeSettings) {
  const auto bytes = h2::concat({h2::preface(), request(1)});
  const auto events = feed_whole({}, bytes);
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].violation, GuardViolation::bad_preface);
  expect_same_at_every_split({}, bytes, events);
}

TEST(H2Guard, AFrameLargerThanTheServerAcceptsIsAFrameSizeErrorAtItsHeader) {
  const auto big = h2::frame(h2::kData, 0, 1, {}, 16385);
  const auto bytes = h2::concat({start(), request(1), big});
  H2Guard guard({}, Clock::now());
  // Noticed from the header alone: not one payload byte is needed.
  const auto events = feed(guard, Bytes(bytes.begin(), bytes.end() - 16385), {}, Clock::now());
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].violation, GuardViolation::frame_too_large);
  EXPECT_EQ(events[0].code, H2Error::frame_size_error);
  // 16384 is fine.
  EXPECT_TRUE(
      feed_whole({}, h2::concat({start(), request(1), h2::frame(h2::kData, 0, 1, {}, 16384)}))
          .empty());
}

TEST(H2Guard, LargerFramesPassOnceTheServerAnnouncedThem) {
  const auto announced = h2::settings({{3, 100}, {5, 65536}, {6, 8192}});
  for (std::size_t split = 0; split <= announced.size(); ++split) {
    auto server = announced;
    H2Guard guard({}, Clock::now());
    guard.server_bytes(std::span(server.data(), split));
    EXPECT_FALSE(split < server.size() && split > 0 && guard.server_at_frame_boundary());
    guard.server_bytes(std::span(server.data() + split, server.size() - split));
    EXPECT_TRUE(guard.server_at_frame_boundary());
    EXPECT_EQ(guard.max_frame(), 65536U) << "split " << split;
    EXPECT_TRUE(feed(guard,
                     h2::concat({start(), request(1), h2::frame(h2::kData, 0, 1, {}, 65536)}), {},
                     Clock::now())
                    .empty());
  }
}

TEST(H2Guard, TheHeaderBlockIsBoundedAcrossContinuations) {
  H2GuardLimits limits;
  limits.max_header_block = 16 * 1024;
  const Bytes exactly = h2::concat({start(), h2::frame(h2::kHeaders, 0, 1, {}, 8192),
                                    h2::frame(h2::kContinuation, 0, 1, {}, 4096),
                                    h2::frame(h2::kContinuation, h2::kEndHeaders, 1, {}, 4096)});
  EXPECT_TRUE(feed_whole(limits, exactly).empty());
  const Bytes over = h2::concat({start(), h2::frame(h2::kHeaders, 0, 1, {}, 8192),
                                 h2::frame(h2::kContinuation, 0, 1, {}, 8192),
                                 h2::frame(h2::kContinuation, h2::kEndHeaders, 1, {}, 1)});
  const auto events = feed_whole(limits, over);
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].violation, GuardViolation::header_block_too_large);
  EXPECT_EQ(events[0].code, H2Error::enhance_your_calm);
  // Noticed at the third frame's header, before its payload.
  EXPECT_EQ(feed_whole(limits, Bytes(over.begin(), over.end() - 1)), events);
  // One HEADERS frame over the limit on its own.
  H2GuardLimits small;
  small.max_header_block = 8192;
  const auto single = feed_whole(
      small, h2::concat({start(), h2::frame(h2::kHeaders, h2::kEndHeaders, 1, {}, 8193)}));
  ASSERT_EQ(single.size(), 1U);
  EXPECT_EQ(single[0].violation, GuardViolation::header_block_too_large);
  // The flood of the review: a block continued far past the limit, split everywhere.
  Bytes flood = h2::concat({start(), h2::frame(h2::kHeaders, 0, 1, {}, 1000)});
  for (int i = 0; i < 40; ++i) {
    const auto more = h2::frame(h2::kContinuation, 0, 1, {}, 1000);
    flood.insert(flood.end(), more.begin(), more.end());
  }
  expect_same_at_every_split(limits, flood, feed_whole(limits, flood));
  EXPECT_EQ(feed_whole(limits, flood).at(0).violation, GuardViolation::header_block_too_large);
}

TEST(H2Guard, ContinuationOnlyDirectlyAfterAnUnfinishedHeadersOnItsStream) {
  const auto misuse = [](const Bytes& frames) {
    const auto bytes = h2::concat({start(), frames});
    const auto events = feed_whole({}, bytes);
    EXPECT_EQ(events.size(), 1U) << describe(events);
    if (events.size() != 1) return;
    EXPECT_EQ(events[0].violation, GuardViolation::continuation);
    EXPECT_EQ(events[0].code, H2Error::protocol_error);
    expect_same_at_every_split({}, bytes, events);
  };
  // Without any HEADERS.
  misuse(h2::frame(h2::kContinuation, h2::kEndHeaders, 1, {}, 10));
  // After a finished header block.
  misuse(h2::concat({request(1), h2::frame(h2::kContinuation, h2::kEndHeaders, 1, {}, 10)}));
  // On another stream.
  misuse(h2::concat({h2::frame(h2::kHeaders, 0, 1, {}, 10),
                     h2::frame(h2::kContinuation, h2::kEndHeaders, 3, {}, 10)}));
  // Another frame inside the block: DATA, PING, a second HEADERS.
  misuse(h2::concat({h2::frame(h2::kHeaders, 0, 1, {}, 10), h2::frame(h2::kData, 0, 1, {}, 10)}));
  misuse(h2::concat({h2::frame(h2::kHeaders, 0, 1, {}, 10), h2::frame(h2::kPing, 0, 0, {}, 8)}));
  misuse(h2::concat({h2::frame(h2::kHeaders, 0, 1, {}, 10), request(3)}));
}

TEST(H2Guard, HeadersOnStreamZeroOrAServerStreamIdIsAProtocolError) {
  for (std::uint32_t stream : {0U, 2U}) {
    const auto events = feed_whole({}, h2::concat({start(), request(stream)}));
    ASSERT_EQ(events.size(), 1U);
    EXPECT_EQ(events[0].violation, GuardViolation::bad_stream_id);
  }
}

TEST(H2Guard, StreamsBeyondTheLimitAreRefusedAfterTheirHeaderBlock) {
  H2GuardLimits limits;
  limits.max_streams = 2;
  const Bytes third = h2::concat({h2::frame(h2::kHeaders, 0, 5, {}, 20),
                                  h2::frame(h2::kContinuation, h2::kEndHeaders, 5, {}, 20)});
  const Bytes bytes = h2::concat(
      {start(), request(1), request(3), third, h2::frame(h2::kData, 0, 5, {}, 30), request(7)});
  const std::size_t third_end = start().size() + 2 * request(1).size() + third.size();
  const std::vector<Event> expected{
      {GuardStep::Kind::refuse, third_end, 5, GuardViolation::count_, H2Error::no_error},
      {GuardStep::Kind::refuse, bytes.size(), 7, GuardViolation::count_, H2Error::no_error}};
  EXPECT_EQ(feed_whole(limits, bytes), expected) << describe(feed_whole(limits, bytes));
  expect_same_at_every_split(limits, bytes, expected);
}

TEST(H2Guard, StreamsCloseOnBothEndsOrAResetFromEitherSide) {
  H2GuardLimits limits;
  limits.max_streams = 2;
  const auto now = Clock::now();
  H2Guard guard(limits, now);
  EXPECT_TRUE(
      feed(guard, h2::concat({start(), request(1, h2::kEndStream), request(3)}), {}, now).empty());
  EXPECT_EQ(guard.open_streams(), 2U);
  // The client ended stream 1; the server's trailers end it too.
  from_server(guard, h2::frame(h2::kHeaders, h2::kEndHeaders | h2::kEndStream, 1, {}, 5));
  EXPECT_EQ(guard.open_streams(), 1U);
  EXPECT_TRUE(feed(guard, request(5), {}, now).empty());
  EXPECT_EQ(guard.open_streams(), 2U);
  // The server ends stream 3 but the client has not: still open, so stream 7 is refused.
  from_server(guard, h2::frame(h2::kData, h2::kEndStream, 3, {}, 0));
  auto events = feed(guard, request(7), {}, now);
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].kind, GuardStep::Kind::refuse);
  // A client reset closes 3, a server reset closes 5.
  EXPECT_TRUE(feed(guard, h2::frame(h2::kRstStream, 0, 3, {0, 0, 0, 8}), {}, now).empty());
  from_server(guard, h2::frame(h2::kRstStream, 0, 5, {0, 0, 0, 0}));
  EXPECT_EQ(guard.open_streams(), 0U);
  EXPECT_TRUE(feed(guard, h2::concat({request(9), request(11)}), {}, now).empty());
  EXPECT_EQ(guard.open_streams(), 2U);
}

TEST(H2Guard, ControlFramesAreRateLimited) {
  H2GuardLimits limits;
  limits.control_frames_per_second = 10;
  const auto now = Clock::now();
  H2Guard guard(limits, now);
  // The SETTINGS of the start counts as one.
  EXPECT_TRUE(feed(guard, start(), {}, now).empty());
  for (int i = 0; i < 9; ++i) {
    ASSERT_TRUE(feed(guard, h2::frame(h2::kPing, 0, 0, {}, 8), {}, now).empty()) << i;
  }
  auto events = feed(guard, h2::frame(h2::kPing, 0, 0, {}, 8), {}, now);
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].violation, GuardViolation::control_flood);
  EXPECT_EQ(events[0].code, H2Error::enhance_your_calm);
  // Spent: the same violation again.
  EXPECT_EQ(feed(guard, h2::frame(h2::kData, 0, 1, {}, 1), {}, now).at(0).violation,
            GuardViolation::control_flood);

  // Refilled at the rate: one frame per 100 ms, so a steady 10 a second never trips.
  H2Guard steady(limits, now);
  EXPECT_TRUE(feed(steady, start(), {}, now).empty());
  for (int i = 1; i <= 50; ++i) {
    ASSERT_TRUE(feed(steady, h2::frame(h2::kSettings, h2::kAck, 0, {}), {},
                     now + std::chrono::milliseconds(100 * i))
                    .empty())
        << i;
  }
}

TEST(H2Guard, EmptyFramesCountAsControlFrames) {
  H2GuardLimits limits;
  limits.control_frames_per_second = 5;
  const auto now = Clock::now();
  H2Guard guard(limits, now);
  EXPECT_TRUE(feed(guard, h2::concat({start(), request(1)}), {}, now).empty());
  std::vector<Event> events;
  int sent = 0;
  while (events.empty() && sent < 10) {
    events = feed(guard, h2::frame(h2::kData, 0, 1, {}), {}, now);
    ++sent;
  }
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].violation, GuardViolation::control_flood);
  EXPECT_EQ(sent, 5);  // 4 tokens left after the SETTINGS
  // An empty DATA that ends the stream is progress, not a flood.
  H2Guard fine(limits, now);
  EXPECT_TRUE(
      feed(fine, h2::concat({start(), request(1), request(3), request(5)}), {}, now).empty());
  for (std::uint32_t stream : {1U, 3U, 5U}) {
    EXPECT_TRUE(feed(fine, h2::frame(h2::kData, h2::kEndStream, stream, {}), {}, now).empty());
  }
}

TEST(H2Guard, ResetsAndRefusalsAreRateLimited) {
  H2GuardLimits limits;
  limits.resets_per_second = 20;
  limits.max_streams = 1000;
  const auto now = Clock::now();
  H2Guard guard(limits, now);
  EXPECT_TRUE(feed(guard, start(), {}, now).empty());
  // Rapid reset: open and reset at once.
  std::vector<Event> events;
  std::uint32_t stream = 1;
  for (; stream < 100 && events.empty(); stream += 2) {
    events = feed(guard,
                  h2::concat({request(stream), h2::frame(h2::kRstStream, 0, stream, {0, 0, 0, 8})}),
                  {}, now);
  }
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].violation, GuardViolation::reset_flood);
  EXPECT_EQ(stream, 43U);  // the 21st reset
  EXPECT_EQ(guard.open_streams(), 0U);

  // Refused streams count too.
  limits.max_streams = 1;
  H2Guard refusing(limits, now);
  EXPECT_TRUE(feed(refusing, h2::concat({start(), request(1)}), {}, now).empty());
  std::size_t refusals = 0;
  events.clear();
  for (stream = 3; events.empty() || events.back().kind == GuardStep::Kind::refuse; stream += 2) {
    events = feed(refusing, request(stream), {}, now);
    ASSERT_EQ(events.size(), 1U);
    if (events[0].kind == GuardStep::Kind::refuse) ++refusals;
  }
  EXPECT_EQ(refusals, 20U);
  EXPECT_EQ(events[0].violation, GuardViolation::reset_flood);
}

TEST(H2Guard, UnlimitedRatesWhenZero) {
  H2GuardLimits limits;
  limits.control_frames_per_second = 0;
  limits.resets_per_second = 0;
  const auto now = Clock::now();
  H2Guard guard(limits, now);
  EXPECT_TRUE(feed(guard, start(), {}, now).empty());
  for (int i = 0; i < 10'000; ++i) {
    ASSERT_TRUE(feed(guard, h2::frame(h2::kPing, 0, 0, {}, 8), {}, now).empty());
  }
}

TEST(H2Guard, ServerFrameBoundaryFollowsSplits) {
  H2Guard guard({}, Clock::now());
  const auto frames = h2::concat({h2::settings({{4, 1000}}), h2::frame(h2::kData, 0, 1, {}, 100)});
  for (std::size_t i = 0; i < frames.size(); ++i) {
    guard.server_bytes(std::span(const_cast<std::uint8_t*>(frames.data()) + i, 1));
    const bool boundary = i + 1 == 15 || i + 1 == frames.size();
    EXPECT_EQ(guard.server_at_frame_boundary(), boundary) << i;
  }
}

TEST(H2Guard, TheServersStreamLimitIsRewrittenToTheGuardsAtEverySplit) {
  H2GuardLimits limits;
  limits.max_streams = 0x01020304;
  const auto original = h2::settings({{5, 16384}, {3, 0x7fffffff}, {4, 65535}});
  const auto wanted = h2::settings({{5, 16384}, {3, 0x01020304}, {4, 65535}});
  for (std::size_t first = 0; first <= original.size(); ++first) {
    for (std::size_t second = first; second <= original.size(); ++second) {
      H2Guard guard(limits, Clock::now());
      auto bytes = original;
      guard.server_bytes(std::span(bytes.data(), first));
      guard.server_bytes(std::span(bytes.data() + first, second - first));
      guard.server_bytes(std::span(bytes.data() + second, bytes.size() - second));
      ASSERT_EQ(bytes, wanted) << first << " " << second;
    }
  }
  // A SETTINGS acknowledgement and other frames pass untouched.
  H2Guard guard(limits, Clock::now());
  auto other = h2::concat(
      {h2::frame(h2::kSettings, h2::kAck, 0, {}), h2::frame(h2::kData, 0, 1, {0, 3, 0, 0, 0, 9})});
  const auto copy = other;
  guard.server_bytes(other);
  EXPECT_EQ(other, copy);
}

TEST(H2Guard, GoawayAndRstStreamFrames) {
  const auto goaway = goaway_frame(7, H2Error::enhance_your_calm, "too big");
  const Bytes want = h2::concat({h2::frame(
      h2::kGoaway, 0, 0, {0, 0, 0, 7, 0, 0, 0, 0xb, 't', 'o', 'o', ' ', 'b', 'i', 'g'})});
  EXPECT_EQ(goaway, want);
  const auto reset = rst_stream_frame(9, H2Error::refused_stream);
  EXPECT_EQ(Bytes(reset.begin(), reset.end()), h2::frame(h2::kRstStream, 0, 9, {0, 0, 0, 7}));
}

}  // namespace
}  // namespace switchboard::gateway
