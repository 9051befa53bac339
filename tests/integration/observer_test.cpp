// Observers (protocol version 2, HELLO flag OBSERVE): presence without membership.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "support/clients.hpp"
#include "support/presence_log.hpp"
#include "support/raw_peer.hpp"
#include "support/relay.hpp"

namespace switchboard {
namespace {

using client::BlockingClient;
using client::PresenceChange;
using test::options_for;
using test::PresenceLog;

client::ConnectOptions observer_options(std::uint16_t port, const Uuid& channel) {
  auto options = options_for(port, channel);
  options.observe = true;
  return options;
}

class Observer : public ::testing::Test {
protected:
  test::InProcessRelay relay_{test::fast_limits()};
  Uuid channel_ = Uuid::random();
};

TEST_F(Observer, SeesTheSnapshotAndEveryJoinAndLeaveOfOthers) {
  BlockingClient first(options_for(relay_.port(), channel_));
  PresenceLog log;
  BlockingClient observer(observer_options(relay_.port(), channel_));
  log.attach(observer);
  EXPECT_EQ(observer.peers(), std::vector<Uuid>{first.peer_id()});
  // Observing changes nothing: the snapshot's version is the one the first peer saw.
  const auto version = first.membership_version();
  EXPECT_EQ(observer.membership_version(), version);
  Uuid second_id;
  {
    BlockingClient second(options_for(relay_.port(), channel_, true));
    second_id = second.peer_id();
    auto joined = log.next();
    ASSERT_TRUE(joined);
    EXPECT_TRUE(joined->joined);
    EXPECT_EQ(joined->peer, second_id);
    EXPECT_EQ(joined->version, version + 1);
  }
  auto left = log.next();
  ASSERT_TRUE(left);
  EXPECT_FALSE(left->joined);
  EXPECT_EQ(left->peer, second_id);
  EXPECT_EQ(left->version, version + 2);
  EXPECT_EQ(observer.peers(), std::vector<Uuid>{first.peer_id()});
}

TEST_F(Observer, IsInNobodysPresence) {
  PresenceLog member_log;
  BlockingClient member(options_for(relay_.port(), channel_));
  member_log.attach(member);
  const auto version_before = member.membership_version();
  {
    BlockingClient observer(observer_options(relay_.port(), channel_));
    EXPECT_FALSE(observer.peer_id().is_nil());
    BlockingClient newcomer(options_for(relay_.port(), channel_));
    // The newcomer's snapshot and the member's first event know nothing of the observer.
    EXPECT_EQ(newcomer.peers(), std::vector<Uuid>{member.peer_id()});
    auto first_event = member_log.next();
    ASSERT_TRUE(first_event);
    EXPECT_EQ(first_event->peer, newcomer.peer_id());
    EXPECT_EQ(first_event->version, version_before + 1);
    std::uint64_t version = 0;
    const auto members = relay_.registry().members(channel_, version);
    EXPECT_EQ(members.size(), 2u);
    EXPECT_EQ(relay_.registry().stats().peers, 2u);
  }
  // The newcomer's leaving is the only other change; the observer's leaving is none.
  auto second_event = member_log.next();
  ASSERT_TRUE(second_event);
  EXPECT_FALSE(second_event->joined);
  EXPECT_EQ(second_event->version, version_before + 2);
  EXPECT_FALSE(member_log.next(std::chrono::milliseconds(200)));
}

TEST_F(Observer, CannotOpenStreamsAndStaysConnected) {
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  responder.serve(test::echo);
  // Declared before the observer, so it outlives the observer's I/O thread that feeds it.
  PresenceLog log;
  BlockingClient observer(observer_options(relay_.port(), channel_));

  auto request = observer.request(client::Target::any());
  (void)request.write(test::as_bytes("hello"), true);
  EXPECT_EQ(request.result().status, Status::permission_denied);

  auto direct = observer.request(client::Target::to(responder.peer_id()));
  (void)direct.write(test::as_bytes("hello"), true);
  EXPECT_EQ(direct.result().status, Status::permission_denied);

  auto broadcast = observer.broadcast();
  (void)broadcast.write(test::as_bytes("news"), true);
  EXPECT_EQ(broadcast.result().status, Status::permission_denied);

  // Still observing: a join after the refusals arrives.
  log.attach(observer);
  BlockingClient later(options_for(relay_.port(), channel_));
  auto joined = log.next();
  ASSERT_TRUE(joined);
  EXPECT_EQ(joined->peer, later.peer_id());
}

TEST_F(Observer, NeverReceivesRequestsOrBroadcasts) {
  BlockingClient observer(observer_options(relay_.port(), channel_));
  std::atomic<int> broadcasts{0};
  observer.on_broadcast([&](client::BlockingStream&) { ++broadcasts; });
  BlockingClient listener(options_for(relay_.port(), channel_));
  BlockingClient sender(options_for(relay_.port(), channel_));

  auto broadcast = sender.broadcast();
  ASSERT_TRUE(broadcast.write(test::as_bytes("to members only"), true).ok());
  const auto summary = broadcast.result();
  ASSERT_TRUE(summary.ok()) << summary.describe();
  EXPECT_EQ(summary.delivered, 1u);  // the listener; the observer is no receiver
  EXPECT_EQ(summary.dropped, 0u);

  auto to_observer = sender.request(client::Target::to(observer.peer_id()));
  (void)to_observer.write(test::as_bytes("?"), true);
  EXPECT_EQ(to_observer.result().status, Status::no_responders);
  auto to_any = sender.request(client::Target::any());
  (void)to_any.write(test::as_bytes("?"), true);
  EXPECT_EQ(to_any.result().status, Status::no_responders);
  EXPECT_EQ(broadcasts.load(), 0);
}

TEST_F(Observer, DoesNotCountTowardMaxPeersPerChannel) {
  auto limits = test::fast_limits();
  limits.max_peers_per_channel = 2;
  test::InProcessRelay small(limits);
  BlockingClient observer_a(observer_options(small.port(), channel_));
  BlockingClient observer_b(observer_options(small.port(), channel_));
  BlockingClient a(options_for(small.port(), channel_));
  BlockingClient b(options_for(small.port(), channel_));
  try {
    BlockingClient c(options_for(small.port(), channel_));
    FAIL() << "third peer joined a full channel";
  } catch (const client::ConnectError& e) {
    EXPECT_EQ(e.outcome().status, Status::resource_exhausted);
  }
  // A full channel still takes observers.
  BlockingClient observer_c(observer_options(small.port(), channel_));
  EXPECT_EQ(observer_c.peers().size(), 2u);
}

TEST_F(Observer, CountsTowardTheConnectionLimit) {
  auto limits = test::fast_limits();
  limits.max_connections = 1;
  test::InProcessRelay small(limits);
  BlockingClient observer(observer_options(small.port(), channel_));
  ASSERT_TRUE(
      test::eventually([&] { return small.counters().native.connections_open.load() == 1; }));
  // The limit is applied on accept, before any HELLO.
  test::RawPeer extra(small.port());
  auto frame = extra.expect_type(wire::FrameType::error);
  ASSERT_TRUE(frame);
  wire::Error error;
  ASSERT_EQ(wire::parse_error(frame->bytes(), error), wire::DecodeError::none);
  EXPECT_EQ(error.status, Status::resource_exhausted) << error.message;
}

TEST_F(Observer, ExcludesAcceptRequests) {
  auto options = observer_options(relay_.port(), channel_);
  options.accept_requests = true;
  try {
    BlockingClient both(options);
    FAIL() << "an observer accepting requests connected";
  } catch (const client::ConnectError& e) {
    EXPECT_EQ(e.outcome().status, Status::protocol_error);
  }
}

// The relay answers in the version the client spoke; in version 1 the OBSERVE bit is reserved,
// so ignored: such a HELLO joins as a peer.
TEST_F(Observer, VersionOneHelloWithTheBitJoinsAsAPeer) {
  PresenceLog log;
  BlockingClient member(options_for(relay_.port(), channel_));
  log.attach(member);
  test::RawPeer raw(relay_.port());
  wire::Hello hello;
  hello.version = 1;
  hello.hello_flags = wire::flags::kObserve;
  hello.channel = channel_;
  hello.max_frame = 1 << 20;
  hello.stream_window = 1 << 20;
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello);
  raw.send(bytes);
  auto frame = raw.expect_type(wire::FrameType::welcome);
  ASSERT_TRUE(frame);
  wire::Welcome welcome;
  ASSERT_EQ(wire::parse_welcome(frame->bytes(), welcome), wire::DecodeError::none);
  EXPECT_EQ(welcome.version, 1);
  auto joined = log.next();
  ASSERT_TRUE(joined);
  EXPECT_EQ(joined->peer, welcome.peer_id);
}

TEST_F(Observer, VersionTwoHelloIsAnsweredInVersionTwo) {
  test::RawPeer raw(relay_.port());
  wire::Hello hello;
  hello.version = 2;
  hello.hello_flags = wire::flags::kObserve;
  hello.channel = channel_;
  hello.max_frame = 1 << 20;
  hello.stream_window = 1 << 20;
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello);
  raw.send(bytes);
  auto frame = raw.expect_type(wire::FrameType::welcome);
  ASSERT_TRUE(frame);
  wire::Welcome welcome;
  ASSERT_EQ(wire::parse_welcome(frame->bytes(), welcome), wire::DecodeError::none);
  EXPECT_EQ(welcome.version, 2);
  auto snapshot = raw.expect_type(wire::FrameType::presence);
  ASSERT_TRUE(snapshot);
}

}  // namespace
}  // namespace switchboard
