// Limits at their boundary: the last connection or channel within a limit is served, the first
// beyond it is refused with its status and counted; and the per-address connect throttle.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "support/raw_peer.hpp"
#include "support/relay.hpp"

namespace switchboard {
namespace {

using test::RawPeer;
using namespace std::chrono_literals;

std::vector<std::uint8_t> hello_bytes(const Uuid& channel) {
  wire::Hello hello;
  hello.channel = channel;
  hello.max_frame = 65536;
  hello.stream_window = 65536;
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello);
  return bytes;
}

// The ERROR frame a refused connection receives, after which the relay closes it.
wire::Error expect_error_and_close(RawPeer& raw) {
  wire::Error error;
  auto frame = raw.expect_type(wire::FrameType::error);
  if (!frame) {
    ADD_FAILURE() << "no ERROR frame";
    return error;
  }
  EXPECT_EQ(wire::parse_error(frame->bytes(), error), wire::DecodeError::none);
  EXPECT_TRUE(raw.expect_closed());
  return error;
}

wire::Bytes test_bytes() {
  static const std::uint8_t kBody[] = {'h', 'i'};
  return {kBody, sizeof(kBody)};
}

core::Limits limits_without_throttle() {
  auto limits = test::fast_limits();
  limits.connect_rate_per_address = 0;
  return limits;
}

TEST(Limits, MaxConnectionsServesNAndRefusesTheNext) {
  constexpr std::uint32_t kMax = 4;
  auto limits = limits_without_throttle();
  limits.max_connections = kMax;
  test::InProcessRelay relay(limits);
  const auto channel = Uuid::random();
  std::vector<std::unique_ptr<RawPeer>> peers;
  for (std::uint32_t i = 0; i < kMax; ++i) {
    peers.push_back(std::make_unique<RawPeer>(relay.port()));
    peers.back()->join(channel);
  }
  ASSERT_TRUE(
      test::eventually([&] { return relay.counters().native.connections_open.load() == kMax; }));

  RawPeer extra(relay.port());
  const auto error = expect_error_and_close(extra);
  EXPECT_EQ(error.status, Status::resource_exhausted);
  EXPECT_NE(error.message.find("connection limit"), std::string::npos) << error.message;
  EXPECT_EQ(relay.counters().native.connections_refused.load(), 1u);
  EXPECT_EQ(relay.counters().native.connections_throttled.load(), 0u);

  // A slot freed is a slot served again.
  peers.back()->close();
  peers.pop_back();
  ASSERT_TRUE(test::eventually(
      [&] { return relay.counters().native.connections_open.load() == kMax - 1; }));
  RawPeer again(relay.port());
  again.join(channel);
  EXPECT_EQ(relay.counters().native.connections_refused.load(), 1u);
}

// A connection that has not sent its HELLO yet waits to be placed on its channel's thread
// before it has a session; it still takes a slot, and the relay still ends it.
TEST(Limits, ConnectionsThatHaveNotSpokenYetCountAgainstMaxConnections) {
  constexpr std::uint32_t kMax = 3;
  auto limits = limits_without_throttle();
  limits.max_connections = kMax;
  limits.handshake_timeout = 500ms;
  test::InProcessRelay relay(limits, 2);
  std::vector<std::unique_ptr<RawPeer>> silent;
  for (std::uint32_t i = 0; i < kMax; ++i)
    silent.push_back(std::make_unique<RawPeer>(relay.port()));
  // Accepted in connection order, so these are counted before the next one is seen.
  RawPeer extra(relay.port());
  EXPECT_EQ(expect_error_and_close(extra).status, Status::resource_exhausted);
  EXPECT_EQ(relay.counters().native.connections_refused.load(), 1u);
  // Silence past the handshake timeout: each gets its error and is closed, freeing its slot.
  for (auto& peer : silent) {
    const auto error = expect_error_and_close(*peer);
    EXPECT_NE(error.message.find("handshake timeout"), std::string::npos) << error.message;
  }
  ASSERT_TRUE(
      test::eventually([&] { return relay.counters().native.connections_open.load() == 0; }));
  RawPeer again(relay.port());
  again.join(Uuid::random());
  EXPECT_EQ(relay.counters().native.connections_refused.load(), 1u);
}

// A HELLO that comes after the relay accepted the connection (the relay found nothing to read
// and waits for it) still places the connection on its channel's thread and joins it.
TEST(Limits, AConnectionThatSpeaksAfterItWasAcceptedJoins) {
  auto limits = limits_without_throttle();
  limits.max_connections = 1;
  limits.handshake_timeout = 60s;  // the HELLO comes late, but never that late
  test::InProcessRelay relay(limits, 2);
  RawPeer late(relay.port());
  // Refused at the limit: the silent connection was accepted and is waiting for its HELLO.
  RawPeer extra(relay.port());
  EXPECT_EQ(expect_error_and_close(extra).status, Status::resource_exhausted);
  const auto channel = Uuid::random();
  const auto peer_id = late.join(channel);
  EXPECT_FALSE(peer_id.is_nil());
  ASSERT_TRUE(
      test::eventually([&] { return relay.counters().native.connections_open.load() == 1; }));
  EXPECT_EQ(relay.registry().stats().peers, 1u);
}

TEST(Limits, MaxChannelsServesNAndRefusesANewOne) {
  constexpr std::uint32_t kMax = 3;
  auto limits = limits_without_throttle();
  limits.max_channels = kMax;
  test::InProcessRelay relay(limits);
  std::vector<Uuid> channels;
  std::vector<std::unique_ptr<RawPeer>> peers;
  for (std::uint32_t i = 0; i < kMax; ++i) {
    channels.push_back(Uuid::random());
    peers.push_back(std::make_unique<RawPeer>(relay.port()));
    peers.back()->join(channels.back());
  }
  EXPECT_EQ(relay.registry().stats().channels, kMax);
  const auto refused_before =
      relay.counters()
          .native.handshake_failures[static_cast<std::size_t>(core::HandshakeFailure::refused)]
          .load();

  RawPeer newcomer(relay.port());
  newcomer.send(hello_bytes(Uuid::random()));
  const auto error = expect_error_and_close(newcomer);
  EXPECT_EQ(error.status, Status::resource_exhausted);
  EXPECT_NE(error.message.find("channel limit"), std::string::npos) << error.message;
  EXPECT_EQ(
      relay.counters()
          .native.handshake_failures[static_cast<std::size_t>(core::HandshakeFailure::refused)]
          .load(),
      refused_before + 1);

  // An existing channel still takes more peers.
  RawPeer joiner(relay.port());
  joiner.join(channels.front());
  EXPECT_EQ(relay.registry().stats().channels, kMax);
}

TEST(Limits, MaxStreamsPerConnectionRefusesTheNextAndKeepsTheOthers) {
  constexpr std::uint32_t kMax = 3;
  auto limits = limits_without_throttle();
  limits.max_streams_per_connection = kMax;
  test::InProcessRelay relay(limits);
  const auto channel = Uuid::random();
  RawPeer responder(relay.port());
  const auto responder_id = responder.join(channel, true);
  RawPeer opener(relay.port());
  opener.join(channel);
  // Presence frames (each hears of the other) are skipped by expect_type below.

  wire::Open open;
  open.kind = wire::StreamKind::to_peer;
  open.peer = responder_id;
  for (std::uint32_t i = 0; i < kMax; ++i) {
    std::vector<std::uint8_t> bytes;
    wire::append_open(bytes, 2 * i + 1, open, {}, false);
    opener.send(bytes);
    auto delivered = responder.expect_type(wire::FrameType::open);
    ASSERT_TRUE(delivered.has_value()) << "stream " << 2 * i + 1 << " never reached the responder";
  }

  const std::uint32_t over = 2 * kMax + 1;
  std::vector<std::uint8_t> bytes;
  wire::append_open(bytes, over, open, {}, false);
  opener.send(bytes);
  auto frame = opener.expect_type(wire::FrameType::reset);
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ(frame->header.stream, over);
  wire::Reset reset;
  ASSERT_EQ(wire::parse_reset(frame->bytes(), reset), wire::DecodeError::none);
  EXPECT_EQ(reset.status, Status::resource_exhausted);
  EXPECT_NE(reset.message.find("too many open streams"), std::string::npos) << reset.message;
  EXPECT_TRUE(responder.expect_nothing(100ms)) << "the refused stream reached the responder";

  // The connection and its streams go on: data on the first stream still arrives.
  std::vector<std::uint8_t> data;
  wire::append_data(data, 1, test_bytes(), false);
  opener.send(data);
  auto arrived = responder.expect_type(wire::FrameType::data);
  ASSERT_TRUE(arrived.has_value());
  EXPECT_EQ(relay.counters().native.streams_open.load(), static_cast<std::int64_t>(2 * kMax));
  EXPECT_EQ(relay.counters().native.connections_open.load(), 2);
}

TEST(Limits, ConnectionBufferClosesAClientThatDoesNotRead) {
  auto limits = limits_without_throttle();
  limits.max_frame = 1024;
  limits.stream_window = 1024;
  limits.max_connection_buffer = limits.stream_window + limits.max_frame;  // the least allowed
  test::InProcessRelay relay(limits);
  RawPeer sluggard(relay.port());
  sluggard.join(Uuid::random());

  // Every PING queues a PONG for a client that reads none of them: 200 PONGs (4000 bytes) are
  // more than the connection's 2 KiB buffer. One send, so the relay reads it all before it
  // closes the connection (unread input would turn its close into a reset that loses the ERROR).
  std::vector<std::uint8_t> pings;
  for (int i = 0; i < 200; ++i) wire::append_ping(pings, static_cast<std::uint64_t>(i), false);
  sluggard.send(pings);
  ASSERT_TRUE(
      test::eventually([&] { return relay.counters().native.slow_consumer_drops.load() == 1; }));

  // Reading at last: after any PONGs written before the limit passed, the relay's last word.
  auto frame = sluggard.expect_type(wire::FrameType::error);
  ASSERT_TRUE(frame.has_value());
  wire::Error error;
  ASSERT_EQ(wire::parse_error(frame->bytes(), error), wire::DecodeError::none);
  EXPECT_EQ(error.status, Status::slow_consumer);
  EXPECT_TRUE(sluggard.expect_closed());
  EXPECT_TRUE(
      test::eventually([&] { return relay.counters().native.connections_open.load() == 0; }));
}

TEST(Limits, ConnectThrottleAdmitsTheBurstRefusesTheNextAndRefills) {
  constexpr std::uint32_t kBurst = 5;
  auto limits = test::fast_limits();
  limits.connect_rate_per_address = 2;  // one token every 500 ms
  limits.connect_burst_per_address = kBurst;
  test::InProcessRelay relay(limits);
  const auto channel = Uuid::random();

  std::vector<std::unique_ptr<RawPeer>> peers;
  for (std::uint32_t i = 0; i < kBurst; ++i) {
    peers.push_back(std::make_unique<RawPeer>(relay.port()));
    peers.back()->join(channel);
  }
  EXPECT_EQ(relay.counters().native.connections_throttled.load(), 0u);

  // Five connections took well under the 500 ms a token takes to come back (were the machine so
  // slow that one did come back, the throttled count below would say so by being 0).
  RawPeer over(relay.port());
  const auto error = expect_error_and_close(over);
  EXPECT_EQ(error.status, Status::resource_exhausted);
  EXPECT_EQ(error.message, "too many connections from your address");
  EXPECT_EQ(relay.counters().native.connections_throttled.load(), 1u);
  EXPECT_EQ(relay.counters().native.connections_refused.load(), 0u);

  // The refused connection did not disturb those admitted: all still on the channel.
  EXPECT_EQ(relay.counters().native.connections_open.load(), static_cast<std::int64_t>(kBurst));
  EXPECT_EQ(relay.registry().stats().peers, kBurst);

  // After refill: probe (bounded by eventually's timeout) until a connection is admitted again;
  // each refused probe is counted, so the throttled count grows by exactly those.
  std::uint64_t refused_probes = 0;
  const bool admitted = test::eventually([&] {
    RawPeer probe(relay.port());
    probe.send(hello_bytes(channel));
    const auto frame = probe.expect_frame();
    if (frame && frame->header.type == wire::FrameType::welcome) return true;
    EXPECT_TRUE(frame && frame->header.type == wire::FrameType::error);
    ++refused_probes;
    return false;
  });
  EXPECT_TRUE(admitted);
  EXPECT_EQ(relay.counters().native.connections_throttled.load(), 1u + refused_probes);
}

TEST(Limits, ConnectThrottleOffAdmitsBeyondAnyBurst) {
  auto limits = limits_without_throttle();
  limits.connect_burst_per_address = 1;
  test::InProcessRelay relay(limits);
  const auto channel = Uuid::random();
  std::vector<std::unique_ptr<RawPeer>> peers;
  for (int i = 0; i < 10; ++i) {
    peers.push_back(std::make_unique<RawPeer>(relay.port()));
    peers.back()->join(channel);
  }
  EXPECT_EQ(relay.counters().native.connections_throttled.load(), 0u);
}

}  // namespace
}  // namespace switchboard
