// Unit tests for the transport-agnostic registry (registry.hpp): membership, presence
// announcements, routing, draining, limits validation, and concurrent joins and leaves.
#include "registry/registry.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "registry/limits.hpp"
#include "registry/peer.hpp"

namespace switchboard {
// Readable gtest output for the enums; found by argument-dependent lookup.
static void PrintTo(Status status, std::ostream* os) {
  *os << status_name(status) << " (" << static_cast<unsigned>(status) << ")";
}
static void PrintTo(const Uuid& id, std::ostream* os) { *os << id.to_string(); }
}  // namespace switchboard

namespace switchboard::wire {
static void PrintTo(PresenceEvent event, std::ostream* os) {
  switch (event) {
    case PresenceEvent::snapshot:
      *os << "snapshot";
      return;
    case PresenceEvent::joined:
      *os << "joined";
      return;
    case PresenceEvent::left:
      *os << "left";
      return;
  }
  *os << "PresenceEvent(" << static_cast<unsigned>(event) << ")";
}
}  // namespace switchboard::wire

namespace switchboard::core {
namespace {

using wire::PresenceEvent;

// ---------------------------------------------------------------------------------------------
// Fakes

/// Records everything delivered to it.
class FakeEndpoint final : public Endpoint {
public:
  void deliver_data(wire::Slice payload, bool fin) override {
    std::lock_guard lock(mutex_);
    data.emplace_back(std::vector<std::uint8_t>(payload.bytes().begin(), payload.bytes().end()),
                      fin);
  }
  void deliver_end(wire::End end) override {
    std::lock_guard lock(mutex_);
    ends.push_back(std::move(end));
  }
  void deliver_reset(wire::Reset reset) override {
    std::lock_guard lock(mutex_);
    resets.push_back(std::move(reset));
  }
  void deliver_credit(std::uint32_t bytes, std::uint32_t sink) override {
    std::lock_guard lock(mutex_);
    credits.emplace_back(bytes, sink);
  }
  void deliver_sink_done(std::uint32_t sink, Status status) override {
    std::lock_guard lock(mutex_);
    sinks_done.emplace_back(sink, status);
  }

  std::vector<std::pair<std::vector<std::uint8_t>, bool>> data;
  std::vector<wire::End> ends;
  std::vector<wire::Reset> resets;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> credits;
  std::vector<std::pair<std::uint32_t, Status>> sinks_done;

private:
  std::mutex mutex_;
};

/// A channel member that records presence events and stream offers. `capacity` answers
/// has_capacity(); `refuse` makes accept_stream return nullptr.
class FakePeer final : public Peer {
public:
  void on_presence(const wire::Presence& event) override {
    std::lock_guard lock(mutex_);
    events_.push_back(event);
  }
  std::shared_ptr<Endpoint> accept_stream(StreamOffer offer) override {
    std::lock_guard lock(mutex_);
    offers_.push_back(std::move(offer));
    if (refuse.load()) return nullptr;
    auto endpoint = std::make_shared<FakeEndpoint>();
    endpoints_.push_back(endpoint);
    return endpoint;
  }
  bool has_capacity() const override { return capacity.load(); }
  void relocate(const cluster::Verdict& next) override {
    std::lock_guard lock(mutex_);
    relocations_.push_back(next);
  }

  std::vector<cluster::Verdict> relocations() const {
    std::lock_guard lock(mutex_);
    return relocations_;
  }
  std::vector<wire::Presence> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }
  std::vector<StreamOffer> offers() const {
    std::lock_guard lock(mutex_);
    return offers_;
  }
  std::vector<std::shared_ptr<FakeEndpoint>> endpoints() const {
    std::lock_guard lock(mutex_);
    return endpoints_;
  }

  std::atomic<bool> capacity{true};
  std::atomic<bool> refuse{false};
  // Set by the concurrency test after joining (read after all threads are done).
  Uuid id;
  std::uint64_t join_version = 0;

private:
  mutable std::mutex mutex_;
  std::vector<wire::Presence> events_;
  std::vector<StreamOffer> offers_;
  std::vector<std::shared_ptr<FakeEndpoint>> endpoints_;
  std::vector<cluster::Verdict> relocations_;
};

// ---------------------------------------------------------------------------------------------
// Helpers

Uuid make_uuid(std::uint8_t seed) {
  Uuid id;
  for (std::size_t i = 0; i < id.bytes.size(); ++i) {
    id.bytes[i] = static_cast<std::uint8_t>(seed + 7 * i + 1);
  }
  return id;
}

std::set<Uuid> as_set(const std::vector<Uuid>& ids) { return {ids.begin(), ids.end()}; }

/// A registry with its limits (the registry keeps a reference to them).
struct Fixture {
  explicit Fixture(Limits l = {}) : limits(l), registry(limits) {}

  /// Joins a new FakePeer and expects success.
  std::shared_ptr<FakePeer> join(const Uuid& channel, const Uuid& id = {}, bool accepts = true) {
    auto peer = std::make_shared<FakePeer>();
    const JoinResult r = registry.join(channel, id, accepts, peer);
    EXPECT_EQ(r.status, Status::ok) << r.message;
    EXPECT_TRUE(r.message.empty()) << r.message;
    EXPECT_FALSE(r.peer_id.is_nil());
    if (!id.is_nil()) {
      EXPECT_EQ(r.peer_id, id);
    }
    peer->id = r.peer_id;
    peer->join_version = r.version;
    return peer;
  }

  std::uint64_t version(const Uuid& channel) {
    std::uint64_t v = 0;
    registry.members(channel, v);
    return v;
  }

  Limits limits;
  Registry registry;
};

const Uuid kChannel = make_uuid(0x10);
const Uuid kOtherChannel = make_uuid(0x20);

void expect_event(const wire::Presence& event, PresenceEvent kind, std::uint64_t version,
                  const Uuid& subject) {
  EXPECT_EQ(event.event, kind);
  EXPECT_EQ(event.version, version);
  ASSERT_EQ(event.peers.size(), 1u);
  EXPECT_EQ(event.peers[0], subject);
}

// ---------------------------------------------------------------------------------------------
// 0. Giving a channel up to another relay of the cluster

cluster::Verdict redirect_to(std::string node, std::uint64_t revision) {
  cluster::Verdict verdict;
  verdict.kind = cluster::Verdict::Kind::redirect;
  verdict.owner = cluster::NodeAddress{node, node + ":7400", ""};
  verdict.revision = revision;
  return verdict;
}

TEST(RegistryRelinquish, RelocatesEveryMemberAndRefusesJoinsUntilEmpty) {
  Fixture f;
  std::vector<Uuid> emptied;
  f.registry.set_channel_hooks(nullptr, [&](const Uuid& channel) { emptied.push_back(channel); });
  auto a = f.join(kChannel);
  auto b = f.join(kChannel);
  auto other = f.join(kOtherChannel);
  f.registry.relinquish(kChannel, redirect_to("relay-b", 7));
  for (const auto& peer : {a, b}) {
    const auto moves = peer->relocations();
    ASSERT_EQ(moves.size(), 1u);
    EXPECT_EQ(moves[0].kind, cluster::Verdict::Kind::redirect);
    EXPECT_EQ(moves[0].owner.native, "relay-b:7400");
    EXPECT_EQ(moves[0].revision, 7u);
  }
  EXPECT_TRUE(other->relocations().empty());

  auto late = std::make_shared<FakePeer>();
  const JoinResult refused = f.registry.join(kChannel, {}, true, late);
  EXPECT_EQ(refused.status, Status::refused);
  ASSERT_TRUE(refused.moved.has_value());
  EXPECT_EQ(refused.moved->owner.node_id, "relay-b");
  // The other channel is not moving.
  f.join(kOtherChannel);

  f.registry.leave(kChannel, a->id);
  EXPECT_TRUE(emptied.empty());
  f.registry.leave(kChannel, b->id);
  ASSERT_EQ(emptied.size(), 1u);
  EXPECT_EQ(emptied[0], kChannel);
  // Emptied, the channel is this relay's to admit again (the directory decides beforehand).
  f.join(kChannel);
}

TEST(RegistryRelinquish, AnEmptyChannelIsEmptiedAtOnce) {
  Fixture f;
  std::vector<Uuid> emptied;
  f.registry.set_channel_hooks(nullptr, [&](const Uuid& channel) { emptied.push_back(channel); });
  f.registry.relinquish(kChannel, redirect_to("relay-c", 3));
  ASSERT_EQ(emptied.size(), 1u);
  EXPECT_EQ(emptied[0], kChannel);
  f.join(kChannel);  // nothing was left marked as moving
}

TEST(RegistryRelinquish, AChannelTheDirectoryNoLongerHoldsIsNotCreated) {
  Fixture f;
  bool holds = false;
  f.registry.set_channel_hooks([&](const Uuid&) { return holds; }, nullptr);
  auto peer = std::make_shared<FakePeer>();
  const JoinResult refused = f.registry.join(kChannel, {}, true, peer);
  EXPECT_EQ(refused.status, Status::refused);
  EXPECT_TRUE(refused.resolve_again);
  EXPECT_EQ(f.registry.stats().channels, 0u);
  holds = true;
  auto first = f.join(kChannel);
  holds = false;  // asked only for a channel's first member
  f.join(kChannel);
}

TEST(RegistryRelinquish, LastMemberLeavingReportsTheChannelEmptied) {
  Fixture f;
  std::vector<Uuid> emptied;
  f.registry.set_channel_hooks(nullptr, [&](const Uuid& channel) { emptied.push_back(channel); });
  auto a = f.join(kChannel);
  f.registry.leave(kChannel, a->id);
  EXPECT_EQ(emptied, std::vector<Uuid>{kChannel});
}

// ---------------------------------------------------------------------------------------------
// 1. Joining

TEST(RegistryJoin, AssignsAFreshIdWhenNil) {
  Fixture f;
  auto a = f.join(kChannel);
  auto b = f.join(kChannel);
  EXPECT_NE(a->id, b->id);
  std::uint64_t version = 0;
  EXPECT_EQ(as_set(f.registry.members(kChannel, version)), (std::set<Uuid>{a->id, b->id}));
  EXPECT_EQ(version, 2u);
  const RegistryStats stats = f.registry.stats();
  EXPECT_EQ(stats.channels, 1u);
  EXPECT_EQ(stats.peers, 2u);
}

TEST(RegistryJoin, KeepsARequestedId) {
  Fixture f;
  const Uuid id = make_uuid(0x33);
  auto peer = std::make_shared<FakePeer>();
  const JoinResult r = f.registry.join(kChannel, id, true, peer);
  ASSERT_EQ(r.status, Status::ok);
  EXPECT_EQ(r.peer_id, id);
  EXPECT_EQ(r.version, 1u);
  EXPECT_TRUE(r.others.empty());
  std::uint64_t version = 0;
  EXPECT_EQ(f.registry.members(kChannel, version), std::vector<Uuid>{id});
}

TEST(RegistryJoin, DuplicateIdOnTheSameChannelIsRefused) {
  Fixture f;
  const Uuid id = make_uuid(0x44);
  auto first = f.join(kChannel, id);
  auto second = std::make_shared<FakePeer>();
  const JoinResult r = f.registry.join(kChannel, id, true, second);
  EXPECT_EQ(r.status, Status::refused);
  EXPECT_FALSE(r.message.empty());
  EXPECT_NE(r.message.find(id.to_string()), std::string::npos) << r.message;
  EXPECT_TRUE(r.others.empty());

  // The existing member is untouched: no events, still the routing target, version unchanged.
  EXPECT_TRUE(first->events().empty());
  EXPECT_TRUE(second->events().empty());
  EXPECT_EQ(f.version(kChannel), 1u);
  EXPECT_EQ(f.registry.stats().peers, 1u);
  const RouteResult route = f.registry.route_to_peer(kChannel, make_uuid(0x99), id);
  ASSERT_EQ(route.status, Status::ok);
  EXPECT_EQ(route.peer, first);

  // The refused join consumed no version: the next change is version 2.
  auto third = f.join(kChannel);
  const auto events = first->events();
  ASSERT_EQ(events.size(), 1u);
  expect_event(events[0], PresenceEvent::joined, 2, third->id);
  EXPECT_TRUE(second->events().empty());
}

TEST(RegistryJoin, SameIdOnAnotherChannelIsFine) {
  Fixture f;
  const Uuid id = make_uuid(0x55);
  auto a = f.join(kChannel, id);
  auto b = f.join(kOtherChannel, id);
  EXPECT_TRUE(a->events().empty());
  EXPECT_TRUE(b->events().empty());
  EXPECT_EQ(f.registry.stats().channels, 2u);
  EXPECT_EQ(f.registry.stats().peers, 2u);
  EXPECT_EQ(f.registry.route_to_peer(kChannel, Uuid{}, id).peer, a);
  EXPECT_EQ(f.registry.route_to_peer(kOtherChannel, Uuid{}, id).peer, b);
}

TEST(RegistryJoin, SnapshotListsTheExistingMembers) {
  Fixture f;
  std::vector<Uuid> ids;
  for (std::uint8_t i = 0; i < 5; ++i) {
    auto peer = std::make_shared<FakePeer>();
    const JoinResult r = f.registry.join(kChannel, Uuid{}, i % 2 == 0, peer);
    ASSERT_EQ(r.status, Status::ok);
    EXPECT_EQ(r.version, i + 1u);
    EXPECT_EQ(r.others.size(), ids.size());
    EXPECT_EQ(as_set(r.others), as_set(ids));  // accepting or not, every member is listed
    ids.push_back(r.peer_id);
  }
  // A peer on another channel sees none of them.
  auto peer = std::make_shared<FakePeer>();
  const JoinResult r = f.registry.join(kOtherChannel, Uuid{}, true, peer);
  EXPECT_TRUE(r.others.empty());
  EXPECT_EQ(r.version, 1u);
}

// ---------------------------------------------------------------------------------------------
// 2. Presence

TEST(RegistryPresence, JoinedAndLeftGoToEveryOtherMemberInVersionOrder) {
  Fixture f;
  auto a = f.join(kChannel);
  auto b = f.join(kChannel, make_uuid(0x0B), false);
  auto c = f.join(kChannel);
  EXPECT_EQ(a->join_version, 1u);
  EXPECT_EQ(b->join_version, 2u);
  EXPECT_EQ(c->join_version, 3u);
  f.registry.leave(kChannel, b->id);
  auto d = f.join(kChannel);
  f.registry.leave(kChannel, a->id);
  EXPECT_EQ(d->join_version, 5u);
  EXPECT_EQ(f.version(kChannel), 6u);

  {
    const auto events = a->events();
    ASSERT_EQ(events.size(), 4u);
    expect_event(events[0], PresenceEvent::joined, 2, b->id);
    expect_event(events[1], PresenceEvent::joined, 3, c->id);
    expect_event(events[2], PresenceEvent::left, 4, b->id);
    expect_event(events[3], PresenceEvent::joined, 5, d->id);
  }
  {
    const auto events = b->events();  // nothing after its own leave
    ASSERT_EQ(events.size(), 1u);
    expect_event(events[0], PresenceEvent::joined, 3, c->id);
  }
  {
    const auto events = c->events();
    ASSERT_EQ(events.size(), 3u);
    expect_event(events[0], PresenceEvent::left, 4, b->id);
    expect_event(events[1], PresenceEvent::joined, 5, d->id);
    expect_event(events[2], PresenceEvent::left, 6, a->id);
  }
  {
    const auto events = d->events();
    ASSERT_EQ(events.size(), 1u);
    expect_event(events[0], PresenceEvent::left, 6, a->id);
  }
}

TEST(RegistryPresence, ChannelsAreIndependent) {
  Fixture f;
  auto a = f.join(kChannel);
  auto b = f.join(kOtherChannel);
  auto c = f.join(kOtherChannel);
  f.registry.leave(kOtherChannel, c->id);
  EXPECT_TRUE(a->events().empty());
  EXPECT_EQ(b->events().size(), 2u);
  EXPECT_EQ(f.version(kChannel), 1u);
  EXPECT_EQ(f.version(kOtherChannel), 3u);
}

TEST(RegistryPresence, LeaveOfAnUnknownIdIsANoOp) {
  Fixture f;
  auto a = f.join(kChannel);
  auto b = f.join(kChannel);
  const auto before = a->events().size();
  f.registry.leave(kChannel, make_uuid(0x77));
  f.registry.leave(kChannel, Uuid{});
  f.registry.leave(kOtherChannel, a->id);  // unknown channel
  EXPECT_EQ(a->events().size(), before);
  EXPECT_TRUE(b->events().empty());
  EXPECT_EQ(f.version(kChannel), 2u);
  EXPECT_EQ(f.registry.stats().peers, 2u);
  EXPECT_EQ(f.registry.stats().channels, 1u);

  // A second leave of the same peer is a no-op as well.
  f.registry.leave(kChannel, b->id);
  f.registry.leave(kChannel, b->id);
  EXPECT_EQ(a->events().size(), before + 1);
  EXPECT_EQ(f.version(kChannel), 3u);
  EXPECT_EQ(f.registry.stats().peers, 1u);
}

TEST(RegistryPresence, ChannelDisappearsWhenEmptyAndItsVersionRestarts) {
  Fixture f;
  auto a = f.join(kChannel);
  auto b = f.join(kChannel);
  f.registry.leave(kChannel, a->id);
  EXPECT_EQ(f.registry.stats().channels, 1u);
  f.registry.leave(kChannel, b->id);
  EXPECT_EQ(f.registry.stats().channels, 0u);
  EXPECT_EQ(f.registry.stats().peers, 0u);
  std::uint64_t version = 99;
  EXPECT_TRUE(f.registry.members(kChannel, version).empty());
  EXPECT_EQ(version, 0u);
  EXPECT_TRUE(f.registry.broadcast_targets(kChannel, Uuid{}).empty());

  auto c = f.join(kChannel);
  EXPECT_EQ(c->join_version, 1u);
  EXPECT_EQ(f.registry.stats().channels, 1u);
  auto d = f.join(kChannel);
  const auto events = c->events();
  ASSERT_EQ(events.size(), 1u);
  expect_event(events[0], PresenceEvent::joined, 2, d->id);
}

// ---------------------------------------------------------------------------------------------
// 3. Limits enforced on join

TEST(RegistryLimits, MaxPeersPerChannelIsResourceExhausted) {
  Limits limits;
  limits.max_peers_per_channel = 2;
  Fixture f(limits);
  auto a = f.join(kChannel);
  auto b = f.join(kChannel);
  auto extra = std::make_shared<FakePeer>();
  const JoinResult r = f.registry.join(kChannel, Uuid{}, true, extra);
  EXPECT_EQ(r.status, Status::resource_exhausted);
  EXPECT_FALSE(r.message.empty());
  EXPECT_EQ(f.registry.stats().peers, 2u);
  EXPECT_EQ(f.version(kChannel), 2u);
  EXPECT_EQ(a->events().size(), 1u);  // only b's join
  EXPECT_TRUE(b->events().empty());
  EXPECT_TRUE(extra->events().empty());

  // Another channel has its own allowance, and a leave makes room again.
  f.join(kOtherChannel);
  f.join(kOtherChannel);
  f.registry.leave(kChannel, a->id);
  f.join(kChannel);
  EXPECT_EQ(f.registry.stats().peers, 4u);
}

TEST(RegistryLimits, MaxChannelsIsResourceExhausted) {
  Limits limits;
  limits.max_channels = 2;
  Fixture f(limits);
  auto a = f.join(make_uuid(1));
  f.join(make_uuid(2));
  auto extra = std::make_shared<FakePeer>();
  const JoinResult r = f.registry.join(make_uuid(3), Uuid{}, true, extra);
  EXPECT_EQ(r.status, Status::resource_exhausted);
  EXPECT_FALSE(r.message.empty());
  EXPECT_EQ(f.registry.stats().channels, 2u);
  EXPECT_EQ(f.registry.stats().peers, 2u);
  std::uint64_t version = 0;
  EXPECT_TRUE(f.registry.members(make_uuid(3), version).empty());

  // Existing channels still take members; an emptied channel frees its slot.
  f.join(make_uuid(1));
  f.registry.leave(make_uuid(2), f.registry.members(make_uuid(2), version).at(0));
  EXPECT_EQ(f.registry.stats().channels, 1u);
  f.join(make_uuid(3));
  EXPECT_EQ(f.registry.stats().channels, 2u);
  EXPECT_EQ(f.registry.stats().peers, 3u);
}

// ---------------------------------------------------------------------------------------------
// 4. Routing to a given peer

TEST(RegistryRouteToPeer, AcceptingMemberIsOk) {
  Fixture f;
  auto sender = f.join(kChannel, Uuid{}, false);
  auto target = f.join(kChannel, Uuid{}, true);
  const RouteResult r = f.registry.route_to_peer(kChannel, sender->id, target->id);
  ASSERT_EQ(r.status, Status::ok) << r.message;
  EXPECT_EQ(r.peer, target);
  EXPECT_EQ(r.peer_id, target->id);

  // The opener offers the stream to the routed peer, which hands back its endpoint.
  StreamOffer offer;
  offer.kind = wire::StreamKind::to_peer;
  offer.sender = sender->id;
  offer.deadline_ms = 500;
  offer.metadata = {{"k", "v"}};
  offer.first_chunk = wire::Slice::copy_of(std::vector<std::uint8_t>{1, 2, 3});
  offer.fin = true;
  auto endpoint = r.peer->accept_stream(offer);
  ASSERT_NE(endpoint, nullptr);
  const auto offers = target->offers();
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_EQ(offers[0].sender, sender->id);
  EXPECT_EQ(offers[0].deadline_ms, 500u);
  EXPECT_EQ(offers[0].metadata, offer.metadata);
  EXPECT_EQ(offers[0].first_chunk.size, 3u);
  EXPECT_TRUE(offers[0].fin);
  ASSERT_EQ(target->endpoints().size(), 1u);
  EXPECT_EQ(endpoint, target->endpoints()[0]);
  endpoint->deliver_data(wire::Slice::copy_of(std::vector<std::uint8_t>{9}), true);
  EXPECT_EQ(target->endpoints()[0]->data.size(), 1u);

  // A refusing peer records the offer and returns nullptr.
  target->refuse = true;
  EXPECT_EQ(r.peer->accept_stream(offer), nullptr);
  EXPECT_EQ(target->offers().size(), 2u);
  EXPECT_EQ(target->endpoints().size(), 1u);
  EXPECT_TRUE(sender->offers().empty());
}

TEST(RegistryRouteToPeer, NoRespondersForEveryUnroutableTarget) {
  Fixture f;
  auto sender = f.join(kChannel, Uuid{}, true);
  auto passive = f.join(kChannel, Uuid{}, false);
  struct Case {
    std::string name;
    Uuid channel;
    Uuid target;
  };
  const Case cases[] = {
      {"member not accepting requests", kChannel, passive->id},
      {"unknown id", kChannel, make_uuid(0x66)},
      {"nil id", kChannel, Uuid{}},
      {"the sender itself", kChannel, sender->id},
      {"unknown channel", kOtherChannel, passive->id},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const RouteResult r = f.registry.route_to_peer(c.channel, sender->id, c.target);
    EXPECT_EQ(r.status, Status::no_responders);
    EXPECT_EQ(r.peer, nullptr);
  }
  // Capacity does not matter for a Send to a given peer; only accepting requests does.
  auto busy = f.join(kChannel, Uuid{}, true);
  busy->capacity = false;
  EXPECT_EQ(f.registry.route_to_peer(kChannel, sender->id, busy->id).status, Status::ok);
  EXPECT_TRUE(sender->offers().empty());
  EXPECT_TRUE(passive->offers().empty());
}

TEST(RegistryRouteToPeer, PeerThatLeftIsNoLongerRoutable) {
  Fixture f;
  auto sender = f.join(kChannel, Uuid{}, false);
  auto target = f.join(kChannel, Uuid{}, true);
  f.registry.leave(kChannel, target->id);
  EXPECT_EQ(f.registry.route_to_peer(kChannel, sender->id, target->id).status,
            Status::no_responders);
}

// ---------------------------------------------------------------------------------------------
// 5. Routing to any peer

TEST(RegistryRouteToAny, RoundRobinInAStableRotation) {
  Fixture f;
  auto sender = f.join(kChannel, Uuid{}, false);
  std::vector<std::shared_ptr<FakePeer>> responders;
  for (int i = 0; i < 3; ++i) responders.push_back(f.join(kChannel, Uuid{}, true));
  f.join(kChannel, Uuid{}, false);  // a passive member is never chosen

  std::vector<Uuid> chosen;
  std::map<Uuid, int> counts;
  for (int i = 0; i < 30; ++i) {
    const RouteResult r = f.registry.route_to_any(kChannel, sender->id);
    ASSERT_EQ(r.status, Status::ok) << r.message;
    ASSERT_NE(r.peer, nullptr);
    const auto it = std::find_if(responders.begin(), responders.end(),
                                 [&](const auto& p) { return p->id == r.peer_id; });
    ASSERT_NE(it, responders.end());
    EXPECT_EQ(r.peer, *it);
    chosen.push_back(r.peer_id);
    ++counts[r.peer_id];
  }
  ASSERT_EQ(counts.size(), 3u);
  for (const auto& [id, count] : counts) EXPECT_EQ(count, 10) << id.to_string();
  // The same rotation every time round.
  EXPECT_EQ(as_set({chosen[0], chosen[1], chosen[2]}).size(), 3u);
  for (std::size_t i = 3; i < chosen.size(); ++i) EXPECT_EQ(chosen[i], chosen[i - 3]) << i;
}

TEST(RegistryRouteToAny, SkipsTheSender) {
  Fixture f;
  auto a = f.join(kChannel, Uuid{}, true);
  auto b = f.join(kChannel, Uuid{}, true);
  auto c = f.join(kChannel, Uuid{}, true);
  std::map<Uuid, int> counts;
  for (int i = 0; i < 20; ++i) {
    const RouteResult r = f.registry.route_to_any(kChannel, b->id);
    ASSERT_EQ(r.status, Status::ok);
    EXPECT_NE(r.peer_id, b->id);
    ++counts[r.peer_id];
  }
  EXPECT_EQ(counts[a->id], 10);
  EXPECT_EQ(counts[c->id], 10);
  EXPECT_EQ(counts.count(b->id), 0u);
}

TEST(RegistryRouteToAny, SkipsMembersWithoutCapacity) {
  Fixture f;
  auto sender = f.join(kChannel, Uuid{}, false);
  auto a = f.join(kChannel, Uuid{}, true);
  auto b = f.join(kChannel, Uuid{}, true);
  auto c = f.join(kChannel, Uuid{}, true);
  b->capacity = false;
  std::map<Uuid, int> counts;
  for (int i = 0; i < 20; ++i) {
    const RouteResult r = f.registry.route_to_any(kChannel, sender->id);
    ASSERT_EQ(r.status, Status::ok);
    ++counts[r.peer_id];
  }
  EXPECT_EQ(counts[a->id], 10);
  EXPECT_EQ(counts[c->id], 10);
  EXPECT_EQ(counts.count(b->id), 0u);

  // Capacity back: b is in the rotation again.
  b->capacity = true;
  counts.clear();
  for (int i = 0; i < 30; ++i) ++counts[f.registry.route_to_any(kChannel, sender->id).peer_id];
  EXPECT_EQ(counts[a->id], 10);
  EXPECT_EQ(counts[b->id], 10);
  EXPECT_EQ(counts[c->id], 10);
}

TEST(RegistryRouteToAny, NoRespondersWhenNobodyCanTakeIt) {
  Fixture f;
  EXPECT_EQ(f.registry.route_to_any(kChannel, Uuid{}).status, Status::no_responders);

  auto sender = f.join(kChannel, Uuid{}, true);
  {
    SCOPED_TRACE("only the sender accepts requests");
    const RouteResult r = f.registry.route_to_any(kChannel, sender->id);
    EXPECT_EQ(r.status, Status::no_responders);
    EXPECT_EQ(r.peer, nullptr);
    EXPECT_FALSE(r.message.empty());
  }
  auto passive = f.join(kChannel, Uuid{}, false);
  {
    SCOPED_TRACE("other member does not accept requests");
    EXPECT_EQ(f.registry.route_to_any(kChannel, sender->id).status, Status::no_responders);
  }
  auto a = f.join(kChannel, Uuid{}, true);
  auto b = f.join(kChannel, Uuid{}, true);
  a->capacity = false;
  b->capacity = false;
  {
    SCOPED_TRACE("responders have no capacity");
    const RouteResult r = f.registry.route_to_any(kChannel, sender->id);
    EXPECT_EQ(r.status, Status::no_responders);
    EXPECT_EQ(r.peer, nullptr);
  }
  b->capacity = true;
  EXPECT_EQ(f.registry.route_to_any(kChannel, sender->id).peer, b);
  {
    SCOPED_TRACE("unknown channel");
    EXPECT_EQ(f.registry.route_to_any(kOtherChannel, sender->id).status, Status::no_responders);
  }
}

TEST(RegistryRouteToAny, RotationStaysFairWhenAResponderLeaves) {
  Fixture f;
  auto sender = f.join(kChannel, Uuid{}, false);
  auto a = f.join(kChannel, Uuid{}, true);
  auto b = f.join(kChannel, Uuid{}, true);
  auto c = f.join(kChannel, Uuid{}, true);
  for (int i = 0; i < 2; ++i) f.registry.route_to_any(kChannel, sender->id);
  f.registry.leave(kChannel, c->id);
  std::map<Uuid, int> counts;
  for (int i = 0; i < 20; ++i) {
    const RouteResult r = f.registry.route_to_any(kChannel, sender->id);
    ASSERT_EQ(r.status, Status::ok);
    ++counts[r.peer_id];
  }
  EXPECT_EQ(counts[a->id], 10);
  EXPECT_EQ(counts[b->id], 10);
  EXPECT_EQ(counts.count(c->id), 0u);
}

// ---------------------------------------------------------------------------------------------
// 6. Broadcast targets

TEST(RegistryBroadcast, TargetsAreEveryOtherMember) {
  Fixture f;
  auto a = f.join(kChannel, Uuid{}, true);
  auto b = f.join(kChannel, Uuid{}, false);
  auto c = f.join(kChannel, Uuid{}, true);
  c->capacity = false;
  f.join(kOtherChannel);

  const auto targets = f.registry.broadcast_targets(kChannel, a->id);
  ASSERT_EQ(targets.size(), 2u);
  std::map<Uuid, std::shared_ptr<Peer>> by_id(targets.begin(), targets.end());
  ASSERT_EQ(by_id.size(), 2u);
  EXPECT_EQ(by_id[b->id], b);  // not accepting requests: still receives broadcasts
  EXPECT_EQ(by_id[c->id], c);
  EXPECT_EQ(by_id.count(a->id), 0u);

  // A sender that is not a member (or nil) gets every member.
  EXPECT_EQ(f.registry.broadcast_targets(kChannel, Uuid{}).size(), 3u);
  EXPECT_TRUE(f.registry.broadcast_targets(make_uuid(0x42), a->id).empty());
  // The only member broadcasting reaches nobody.
  auto alone = f.join(make_uuid(0x43));
  EXPECT_TRUE(f.registry.broadcast_targets(make_uuid(0x43), alone->id).empty());
}

// ---------------------------------------------------------------------------------------------
// 7. Draining

TEST(RegistryDraining, RefusesJoinsAndRouting) {
  Fixture f;
  auto a = f.join(kChannel, Uuid{}, true);
  auto b = f.join(kChannel, Uuid{}, true);
  EXPECT_FALSE(f.registry.draining());
  f.registry.start_draining();
  EXPECT_TRUE(f.registry.draining());

  auto late = std::make_shared<FakePeer>();
  const JoinResult join = f.registry.join(kChannel, Uuid{}, true, late);
  EXPECT_EQ(join.status, Status::refused);
  EXPECT_FALSE(join.message.empty());
  EXPECT_EQ(f.registry.join(kOtherChannel, make_uuid(0x01), true, late).status, Status::refused);
  EXPECT_EQ(f.registry.stats().peers, 2u);
  EXPECT_EQ(f.registry.stats().channels, 1u);

  const RouteResult to_peer = f.registry.route_to_peer(kChannel, a->id, b->id);
  EXPECT_EQ(to_peer.status, Status::refused);
  EXPECT_EQ(to_peer.peer, nullptr);
  EXPECT_FALSE(to_peer.message.empty());
  const RouteResult to_any = f.registry.route_to_any(kChannel, a->id);
  EXPECT_EQ(to_any.status, Status::refused);
  EXPECT_EQ(to_any.peer, nullptr);
  EXPECT_FALSE(to_any.message.empty());
  EXPECT_TRUE(a->events().size() == 1u && b->events().empty());

  // Members can still leave, and are announced as usual.
  f.registry.leave(kChannel, b->id);
  const auto events = a->events();
  ASSERT_EQ(events.size(), 2u);
  expect_event(events[1], PresenceEvent::left, 3, b->id);
  f.registry.leave(kChannel, a->id);
  EXPECT_EQ(f.registry.stats().channels, 0u);
  EXPECT_EQ(f.registry.stats().peers, 0u);
}

// ---------------------------------------------------------------------------------------------
// 8. Limits::validate

TEST(LimitsValidate, AcceptsTheDefaults) { EXPECT_NO_THROW(Limits{}.validate()); }

TEST(LimitsValidate, AcceptsBoundaryValues) {
  Limits smallest;
  smallest.max_frame = 1024;
  smallest.read_block_size = 1024 + 12;
  smallest.stream_window = 1;
  smallest.message_window = 1024;
  smallest.max_connection_buffer = 1 + 1024;
  smallest.max_streams_per_connection = 1;
  smallest.max_peers_per_channel = 1;
  smallest.max_channels = 1;
  smallest.max_connections = 1;
  smallest.handshake_timeout = Milliseconds{1};
  smallest.keepalive_interval = Milliseconds{1};
  smallest.slow_consumer_timeout = Milliseconds{1};
  smallest.default_idle_timeout = Milliseconds{0};
  smallest.drain_timeout = Milliseconds{0};
  EXPECT_NO_THROW(smallest.validate());

  Limits largest;
  largest.max_frame = 16 * 1024 * 1024;
  largest.read_block_size = largest.max_frame + 12;
  largest.max_connection_buffer = std::size_t{largest.stream_window} + largest.max_frame;
  EXPECT_NO_THROW(largest.validate());
}

TEST(LimitsValidate, RejectsEachInconsistentSettingNamingIt) {
  struct Case {
    std::string key;
    std::function<void(Limits&)> change;
  };
  const Case cases[] = {
      {"max_frame", [](Limits& l) { l.max_frame = 1023; }},
      {"max_frame", [](Limits& l) { l.max_frame = 0; }},
      {"max_frame",
       [](Limits& l) {
         l.max_frame = 16 * 1024 * 1024 + 1;
         l.read_block_size = 32 * 1024 * 1024;
       }},
      {"stream_window", [](Limits& l) { l.stream_window = 0; }},
      {"message_window", [](Limits& l) { l.message_window = 1023; }},
      {"message_window", [](Limits& l) { l.message_window = wire::kMaxWindow + 1U; }},
      {"max_streams_per_connection", [](Limits& l) { l.max_streams_per_connection = 0; }},
      {"max_peers_per_channel", [](Limits& l) { l.max_peers_per_channel = 0; }},
      {"max_channels", [](Limits& l) { l.max_channels = 0; }},
      {"max_connections", [](Limits& l) { l.max_connections = 0; }},
      {"read_block_size", [](Limits& l) { l.read_block_size = l.max_frame + 11; }},
      {"read_block_size", [](Limits& l) { l.read_block_size = 0; }},
      {"read_block_size", [](Limits& l) { l.max_frame = 1024 * 1024; }},  // default block 256K
      {"max_connection_buffer",
       [](Limits& l) { l.max_connection_buffer = std::size_t{l.stream_window} + l.max_frame - 1; }},
      {"handshake_timeout", [](Limits& l) { l.handshake_timeout = Milliseconds{0}; }},
      {"handshake_timeout", [](Limits& l) { l.handshake_timeout = Milliseconds{-5}; }},
      {"keepalive_interval", [](Limits& l) { l.keepalive_interval = Milliseconds{0}; }},
      {"slow_consumer_timeout", [](Limits& l) { l.slow_consumer_timeout = Milliseconds{0}; }},
      {"default_idle_timeout", [](Limits& l) { l.default_idle_timeout = Milliseconds{-1}; }},
      {"drain_timeout", [](Limits& l) { l.drain_timeout = Milliseconds{-1}; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.key);
    Limits limits;
    c.change(limits);
    try {
      limits.validate();
      ADD_FAILURE() << "validate() accepted an invalid " << c.key;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(c.key), std::string::npos) << e.what();
    } catch (...) {
      ADD_FAILURE() << "validate() threw something other than std::invalid_argument";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 9. Concurrency

TEST(RegistryConcurrency, ParallelJoinsAndLeavesKeepPresenceOrdered) {
  constexpr int kThreads = 4;
  constexpr int kPeersPerThread = 500;
  constexpr std::uint8_t kChannels = 8;
  Fixture f;
  std::vector<Uuid> channels;
  for (std::uint8_t i = 0; i < kChannels; ++i) {
    channels.push_back(make_uuid(static_cast<std::uint8_t>(0x80 + 8 * i)));
  }

  std::vector<std::vector<std::shared_ptr<FakePeer>>> peers(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<std::uint32_t>(t + 1));
      std::vector<std::pair<Uuid, Uuid>> live;  // channel, peer id
      auto& mine = peers[static_cast<std::size_t>(t)];
      for (int i = 0; i < kPeersPerThread; ++i) {
        auto peer = std::make_shared<FakePeer>();
        const Uuid& channel = channels[rng() % kChannels];
        const JoinResult r = f.registry.join(channel, Uuid{}, i % 2 == 0, peer);
        if (r.status != Status::ok) {
          ++failures;
          continue;
        }
        peer->id = r.peer_id;
        peer->join_version = r.version;
        mine.push_back(peer);
        live.emplace_back(channel, r.peer_id);
        // Some routing traffic alongside membership changes.
        f.registry.route_to_any(channel, r.peer_id);
        f.registry.broadcast_targets(channel, r.peer_id);
        if (rng() % 3 != 0) {
          const std::size_t victim = rng() % live.size();
          f.registry.leave(live[victim].first, live[victim].second);
          live[victim] = live.back();
          live.pop_back();
        }
      }
      for (const auto& [channel, id] : live) f.registry.leave(channel, id);
    });
  }
  for (auto& thread : threads) thread.join();

  EXPECT_EQ(failures.load(), 0);
  const RegistryStats stats = f.registry.stats();
  EXPECT_EQ(stats.peers, 0u);
  EXPECT_EQ(stats.channels, 0u);

  std::size_t total_peers = 0;
  std::size_t total_events = 0;
  for (const auto& mine : peers) {
    for (const auto& peer : mine) {
      ++total_peers;
      const auto events = peer->events();
      total_events += events.size();
      std::uint64_t previous = peer->join_version;
      for (const auto& event : events) {
        // Every change while the peer was a member, in order and without gaps.
        ASSERT_EQ(event.version, previous + 1) << "peer " << peer->id.to_string();
        ASSERT_NE(event.event, PresenceEvent::snapshot);
        ASSERT_EQ(event.peers.size(), 1u);
        ASSERT_NE(event.peers[0], peer->id);
        previous = event.version;
      }
    }
  }
  EXPECT_EQ(total_peers, std::size_t{kThreads} * kPeersPerThread);
  EXPECT_GT(total_events, 0u);
}

}  // namespace
}  // namespace switchboard::core
