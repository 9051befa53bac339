// Shared connections (protocol versions 4 and 5) from a raw socket: lanes are connections in every
// respect but the socket, bad input on the shared connection gets a clear error, and one lane's
// end disturbs no other lane.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <map>

#include "support/clients.hpp"
#include "support/presence_log.hpp"
#include "support/raw_peer.hpp"
#include "support/raw_shared.hpp"
#include "support/receivers.hpp"
#include "support/relay.hpp"
#include "support/stall.hpp"

namespace switchboard {
namespace {

using client::BlockingClient;
using test::options_for;
using test::RawShared;
using namespace std::chrono_literals;

// A member on each of two channels, over connections of their own, with the presence each sees.
struct Bystanders {
  explicit Bystanders(std::uint16_t port)
      : on_first(options_for(port, first)), on_second(options_for(port, second)) {
    first_log.attach(on_first);
    second_log.attach(on_second);
  }
  const Uuid first = Uuid::random();
  const Uuid second = Uuid::random();
  test::PresenceLog first_log;  // before the clients: it outlives the threads that feed it
  test::PresenceLog second_log;
  BlockingClient on_first;
  BlockingClient on_second;
};

class SharedConnection : public ::testing::Test {
protected:
  static core::Limits limits() {
    auto limits = test::fast_limits();
    limits.max_lanes_per_connection = 3;
    limits.keepalive_interval = 5s;  // lanes here answer no PING
    return limits;
  }

  test::InProcessRelay relay_{limits()};
};

TEST_F(SharedConnection, LanesAreMembershipsOfTheirOwnChannels) {
  const auto first = Uuid::random();
  const auto second = Uuid::random();
  test::PresenceLog second_log;
  BlockingClient bystander(options_for(relay_.port(), second));
  second_log.attach(bystander);

  RawShared shared(relay_.port());
  EXPECT_EQ(shared.open(), 3u);
  const auto on_first = shared.join(1, first);
  const auto on_second = shared.join(2, second, true);
  ASSERT_FALSE(on_first.is_nil());
  ASSERT_FALSE(on_second.is_nil());

  // The second channel's member sees the lane's peer join, and only that one.
  const auto joined = second_log.next();
  ASSERT_TRUE(joined);
  EXPECT_TRUE(joined->joined);
  EXPECT_EQ(joined->peer, on_second);

  // A request to the lane's peer arrives on its lane; the answer goes back on it.
  std::vector<std::uint8_t> response;
  std::thread requester([&] {
    const auto outcome =
        bystander.send(client::Target::to(on_second), test::as_bytes("over a lane"), response);
    EXPECT_TRUE(outcome.ok()) << outcome.describe();
  });
  const auto open = shared.expect(2, wire::FrameType::open);
  ASSERT_TRUE(open);
  std::vector<std::uint8_t> answer;
  const std::string text = "answered";
  const auto at = answer.size();
  answer.resize(at + wire::kHeaderSize);
  wire::encode_header(
      wire::FrameHeader{wire::FrameType::data, wire::flags::kFin, open->header.stream,
                        static_cast<std::uint32_t>(text.size())},
      answer.data() + at);
  answer.insert(answer.end(), text.begin(), text.end());
  shared.send(RawShared::lane(2, answer));
  requester.join();
  EXPECT_EQ(std::string(response.begin(), response.end()), text);
}

// The answer to MUX is in the client's version: version 5 tells the relay's threads placed by
// channel (this relay has two), version 4 has no such field; both then carry lanes alike.
TEST_F(SharedConnection, AnswersInTheClientsVersionWithItsPlacementShards) {
  for (const std::uint16_t version : {std::uint16_t{4}, std::uint16_t{5}}) {
    RawShared shared(relay_.port());
    EXPECT_EQ(shared.open(version), 3u) << version;
    ASSERT_TRUE(shared.welcome()) << version;
    EXPECT_EQ(shared.welcome()->version, version);
    EXPECT_EQ(shared.welcome()->shards, version == 5 ? 2 : 0);
    EXPECT_FALSE(shared.join(1, Uuid::random()).is_nil()) << version;
  }
}

TEST_F(SharedConnection, ALaneThatEndsLeavesItsChannelAndNoOther) {
  Bystanders others(relay_.port());
  RawShared shared(relay_.port());
  ASSERT_GT(shared.open(), 0u);
  const auto one = shared.join(1, others.first);
  const auto two = shared.join(2, others.second);
  ASSERT_TRUE(others.first_log.next());
  ASSERT_TRUE(others.second_log.next());

  shared.send(RawShared::lane(1, {}, true));
  EXPECT_TRUE(shared.expect_lane_end(1));
  const auto left = others.first_log.next();
  ASSERT_TRUE(left);
  EXPECT_FALSE(left->joined);
  EXPECT_EQ(left->peer, one);

  // The other lane still works, and its channel saw no change.
  std::vector<std::uint8_t> ping;
  wire::append_ping(ping, 42, false);
  shared.send(RawShared::lane(2, ping));
  EXPECT_TRUE(shared.expect(2, wire::FrameType::ping));
  EXPECT_FALSE(others.second_log.next(50ms));
  const auto peers = others.on_second.peers();
  EXPECT_NE(std::find(peers.begin(), peers.end(), two), peers.end());
}

TEST_F(SharedConnection, LanesBeyondTheLimitAreRefusedOnTheirLane) {
  RawShared shared(relay_.port());
  ASSERT_EQ(shared.open(), 3u);
  for (std::uint32_t id = 1; id <= 3; ++id) ASSERT_FALSE(shared.join(id, Uuid::random()).is_nil());
  shared.send(RawShared::lane(4, RawShared::hello(Uuid::random())));
  const auto refusal = shared.expect(4, wire::FrameType::error);
  ASSERT_TRUE(refusal);
  wire::Error error;
  ASSERT_EQ(wire::parse_error(refusal->bytes(), error), wire::DecodeError::none);
  EXPECT_EQ(error.status, Status::resource_exhausted);
  EXPECT_NE(error.message.find("lane limit"), std::string::npos) << error.message;
  EXPECT_TRUE(shared.expect_lane_end(4));

  // Once a lane has ended, a new one fits.
  shared.send(RawShared::lane(2, {}, true));
  EXPECT_TRUE(shared.expect_lane_end(2));
  EXPECT_FALSE(shared.join(5, Uuid::random()).is_nil());
}

TEST_F(SharedConnection, BadInputOnTheSharedConnectionEndsEveryLane) {
  const auto channel = Uuid::random();
  test::PresenceLog log;
  BlockingClient bystander(options_for(relay_.port(), channel));
  log.attach(bystander);

  RawShared shared(relay_.port());
  ASSERT_GT(shared.open(), 0u);
  const auto member = shared.join(1, channel);
  ASSERT_TRUE(log.next());
  // A LANE longer than any LANE may be.
  std::vector<std::uint8_t> oversized(wire::kHeaderSize);
  wire::encode_lane_header(1, wire::kMaxLaneChunk + 1, false, oversized.data());
  shared.send(oversized);
  const auto error = shared.expect_connection_error();
  ASSERT_TRUE(error);
  EXPECT_EQ(error->status, Status::protocol_error);
  EXPECT_NE(error->message.find("LANE"), std::string::npos) << error->message;
  EXPECT_TRUE(shared.expect_closed());
  const auto left = log.next();
  ASSERT_TRUE(left);
  EXPECT_FALSE(left->joined);
  EXPECT_EQ(left->peer, member);
}

TEST_F(SharedConnection, EachMalformedStartGetsItsReason) {
  struct Case {
    std::vector<std::uint8_t> bytes;
    std::string reason;
  };
  std::vector<Case> cases;
  // Neither HELLO nor MUX first: a connection of its own that does not start with HELLO.
  cases.push_back({RawShared::lane(1, RawShared::hello(Uuid::random())), "unknown frame type"});
  cases.push_back({RawShared::mux_hello(6), "version 6"});
  cases.push_back({RawShared::mux_hello(3), "version 3"});
  auto short_mux = RawShared::mux_hello();
  short_mux[11] = 20;  // length 20 instead of 24
  short_mux.resize(wire::kHeaderSize + 20);
  cases.push_back({short_mux, "malformed MUX"});
  auto lane_zero = RawShared::mux_hello();
  const auto zero = RawShared::lane(0, {});
  lane_zero.insert(lane_zero.end(), zero.begin(), zero.end());
  cases.push_back({lane_zero, "lane 0"});
  auto other_type = RawShared::mux_hello();
  wire::append_ping(other_type, 7, false);
  cases.push_back({other_type, "only LANE"});
  for (const auto& each : cases) {
    RawShared shared(relay_.port());
    shared.send(each.bytes);
    const auto error = shared.expect_connection_error();
    ASSERT_TRUE(error) << each.reason;
    EXPECT_EQ(error->status, Status::protocol_error);
    EXPECT_NE(error->message.find(each.reason), std::string::npos) << error->message;
    EXPECT_TRUE(shared.expect_closed()) << each.reason;
  }
}

TEST_F(SharedConnection, ClosingTheSharedConnectionEndsEveryLane) {
  Bystanders others(relay_.port());
  RawShared shared(relay_.port());
  ASSERT_GT(shared.open(), 0u);
  const auto one = shared.join(1, others.first);
  const auto two = shared.join(2, others.second);
  ASSERT_TRUE(others.first_log.next());
  ASSERT_TRUE(others.second_log.next());
  shared.abort();
  const auto left_first = others.first_log.next();
  const auto left_second = others.second_log.next();
  ASSERT_TRUE(left_first);
  ASSERT_TRUE(left_second);
  EXPECT_EQ(left_first->peer, one);
  EXPECT_EQ(left_second->peer, two);
  EXPECT_FALSE(left_first->joined);
  EXPECT_FALSE(left_second->joined);
  EXPECT_TRUE(
      test::eventually([&] { return relay_.counters().native.connections_open.load() == 2; }));
}

TEST_F(SharedConnection, ASharedConnectionWithoutMuxTimesOut) {
  RawShared shared(relay_.port());
  // The first bytes say MUX; the rest never comes.
  auto partial = RawShared::mux_hello();
  partial.resize(wire::kHeaderSize + 4);
  shared.send(partial);
  const auto error = shared.expect_connection_error();
  ASSERT_TRUE(error);
  EXPECT_EQ(error->status, Status::protocol_error);
  EXPECT_NE(error->message.find("handshake timeout"), std::string::npos) << error->message;
  EXPECT_TRUE(shared.expect_closed());
}

// A client of a shared connection that stops reading holds a broadcast back only for the
// slow-consumer timeout, as a connection of its own would: its lane is dropped from the
// broadcast and stays a member, the healthy receivers get it whole, and once the client reads
// again its lane says why.
TEST(SharedConnectionStalled, HoldsABroadcastOnlyForTheSlowConsumerTimeout) {
  const auto limits = test::stall_limits();
  test::InProcessRelay relay{limits};
  test::BroadcastScene scene(relay.port());
  ASSERT_TRUE(scene.baseline.outcome.ok()) << scene.baseline.outcome.describe();
  ASSERT_EQ(scene.baseline.outcome.delivered, 2u);

  // Credit for the whole broadcast: only the shared connection's own bound on what waits for
  // its socket can stall the lane.
  RawShared stalled(relay.port(), 4096);
  ASSERT_GT(stalled.open(), 0u);
  const auto stalled_id = stalled.join(1, scene.channel, false, 32 * 1024 * 1024);
  const auto is_member = [&] {
    const auto members = scene.sender.client.peers();
    return std::find(members.begin(), members.end(), stalled_id) != members.end();
  };
  ASSERT_TRUE(test::eventually(is_member));

  scene.sent.emplace_back();
  const auto result = test::timed_broadcast(scene.sender.client, scene.sent.back());
  ASSERT_TRUE(result.outcome.ok()) << result.outcome.describe();
  EXPECT_EQ(result.outcome.delivered, 2u);
  EXPECT_EQ(result.outcome.dropped, 1u);
  test::expect_within_bound(result.elapsed, scene.baseline.elapsed, limits);
  for (auto& receiver : scene.receivers) {
    ASSERT_TRUE(test::eventually([&] { return receiver->count() == scene.sent.size(); }, 10s));
    for (std::size_t i = 0; i < scene.sent.size(); ++i) {
      EXPECT_EQ(receiver->sums[i].value(), scene.sent[i].value());
      EXPECT_EQ(receiver->sums[i].size(), scene.sent[i].size());
    }
  }
  EXPECT_EQ(relay.counters().native.slow_consumer_drops.load(), 1u);
  EXPECT_TRUE(is_member());

  const auto reset = stalled.expect(1, wire::FrameType::reset);
  ASSERT_TRUE(reset);
  wire::Reset parsed;
  ASSERT_EQ(wire::parse_reset(reset->bytes(), parsed), wire::DecodeError::none);
  EXPECT_EQ(parsed.status, Status::slow_consumer);
}

}  // namespace
}  // namespace switchboard
