// Presence: snapshot on join, joined/left events with versions, crashes, keepalive, duplicates.
#include <gtest/gtest.h>

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

class Presence : public ::testing::Test {
protected:
  test::InProcessRelay relay_{test::fast_limits()};
  Uuid channel_ = Uuid::random();
};

TEST_F(Presence, SnapshotListsPeersAlreadyThereAndEventsCarryVersions) {
  PresenceLog log;  // outlives the client whose I/O thread writes into it
  BlockingClient first(options_for(relay_.port(), channel_));
  log.attach(first);
  EXPECT_TRUE(first.peers().empty());
  EXPECT_EQ(first.membership_version(), 1u);
  {
    BlockingClient second(options_for(relay_.port(), channel_));
    EXPECT_EQ(second.peers(), std::vector<Uuid>{first.peer_id()});
    EXPECT_EQ(second.membership_version(), 2u);
    auto joined = log.next();
    ASSERT_TRUE(joined);
    EXPECT_TRUE(joined->joined);
    EXPECT_EQ(joined->peer, second.peer_id());
    EXPECT_EQ(joined->version, 2u);
    EXPECT_EQ(first.peers(), std::vector<Uuid>{second.peer_id()});
  }
  auto left = log.next();
  ASSERT_TRUE(left);
  EXPECT_FALSE(left->joined);
  EXPECT_EQ(left->version, 3u);
  EXPECT_TRUE(first.peers().empty());
}

TEST_F(Presence, ChannelsAreIsolated) {
  BlockingClient a(options_for(relay_.port(), channel_));
  BlockingClient b(options_for(relay_.port(), Uuid::random()));
  EXPECT_TRUE(a.peers().empty());
  EXPECT_TRUE(b.peers().empty());
}

TEST_F(Presence, KilledPeerIsAnnouncedAsLeft) {
  PresenceLog log;  // outlives the client whose I/O thread writes into it
  BlockingClient watcher(options_for(relay_.port(), channel_));
  log.attach(watcher);
  test::RawPeer raw(relay_.port());
  const auto raw_id = raw.join(channel_);
  auto joined = log.next();
  ASSERT_TRUE(joined && joined->joined && joined->peer == raw_id);
  raw.abort();  // RST, no goodbye
  auto left = log.next();
  ASSERT_TRUE(left);
  EXPECT_FALSE(left->joined);
  EXPECT_EQ(left->peer, raw_id);
}

TEST_F(Presence, SilentPeerIsDetectedByKeepalive) {
  PresenceLog log;  // outlives the client whose I/O thread writes into it
  BlockingClient watcher(options_for(relay_.port(), channel_));
  log.attach(watcher);
  test::RawPeer raw(relay_.port());
  const auto raw_id = raw.join(channel_);
  ASSERT_TRUE(log.next());
  // The raw peer keeps its socket open but never answers the relay's PINGs.
  const auto start = std::chrono::steady_clock::now();
  auto left = log.next(std::chrono::seconds(5));
  ASSERT_TRUE(left);
  EXPECT_FALSE(left->joined);
  EXPECT_EQ(left->peer, raw_id);
  // Keepalive is 200 ms: dead after 2 intervals of silence (plus a watchdog tick).
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(300));
  EXPECT_TRUE(raw.expect_closed());
}

TEST_F(Presence, PeerAnsweringPingsStaysJoined) {
  PresenceLog log;  // outlives the client whose I/O thread writes into it
  BlockingClient watcher(options_for(relay_.port(), channel_));
  log.attach(watcher);
  BlockingClient quiet(options_for(relay_.port(), channel_));
  ASSERT_TRUE(log.next());
  // Several keepalive intervals pass with no application traffic: the client answers PINGs.
  EXPECT_FALSE(log.next(std::chrono::milliseconds(1200)));
  EXPECT_EQ(watcher.peers().size(), 1u);
}

TEST_F(Presence, DuplicatePeerIdIsRefusedAndFirstIsUndisturbed) {
  auto options = options_for(relay_.port(), channel_, true);
  options.peer_id = Uuid::random();
  BlockingClient first(options);
  first.serve(test::echo);
  EXPECT_EQ(first.peer_id(), options.peer_id);
  try {
    BlockingClient second(options);
    FAIL() << "duplicate peer id was accepted";
  } catch (const client::ConnectError& e) {
    EXPECT_EQ(e.outcome().status, Status::refused);
    EXPECT_NE(e.outcome().message.find("already on this channel"), std::string::npos);
  }
  BlockingClient sender(options_for(relay_.port(), channel_));
  std::vector<std::uint8_t> response;
  EXPECT_TRUE(
      sender.send(client::Target::to(options.peer_id), test::as_bytes("still there?"), response)
          .ok());
  // The same id on another channel is a different peer and is fine.
  auto elsewhere = options;
  elsewhere.channel = Uuid::random();
  EXPECT_NO_THROW(BlockingClient{elsewhere});
}

TEST_F(Presence, PeerCanRejoinUnderSameIdAfterLeaving) {
  auto options = options_for(relay_.port(), channel_);
  options.peer_id = Uuid::random();
  { BlockingClient first(options); }
  BlockingClient watcher(options_for(relay_.port(), channel_));
  // The first connection is gone once the relay has processed its close; rejoin then succeeds.
  ASSERT_TRUE(test::eventually([&] { return watcher.peers().empty(); }));
  BlockingClient again(options);
  EXPECT_EQ(again.peer_id(), options.peer_id);
}

TEST_F(Presence, ChannelFullIsResourceExhausted) {
  auto limits = test::fast_limits();
  limits.max_peers_per_channel = 2;
  test::InProcessRelay small(limits);
  BlockingClient a(options_for(small.port(), channel_));
  BlockingClient b(options_for(small.port(), channel_));
  try {
    BlockingClient c(options_for(small.port(), channel_));
    FAIL() << "third peer joined a full channel";
  } catch (const client::ConnectError& e) {
    EXPECT_EQ(e.outcome().status, Status::resource_exhausted);
  }
}

}  // namespace
}  // namespace switchboard
