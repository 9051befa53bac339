// The etcd directory in-process against a real etcd: placement decides, the claim follows it,
// a joining member takes its share through relinquish, etcd outages and leaving. A ledger
// checks that no two directories serve one channel at any time.
#include <gtest/gtest.h>

#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "cluster/etcd_directory.hpp"
#include "cluster/placement.hpp"
#include "support/etcd_server.hpp"
#include "tests/cluster/poll.hpp"

namespace switchboard::cluster {
namespace {

using namespace std::chrono_literals;
using test::eventually;

/// Who serves each channel, as the directories said: serve adds, relinquish removes. A serve
/// verdict while another directory serves the channel is the one thing that must never happen.
class Ledger {
public:
  void served(const std::string& node, const Uuid& channel) {
    std::lock_guard lock(mutex_);
    auto& servers = serving_[channel];
    servers.insert(node);
    if (servers.size() > 1) ++double_serves_;
  }
  void relinquished(const std::string& node, const Uuid& channel, const Verdict& next) {
    std::lock_guard lock(mutex_);
    serving_[channel].erase(node);
    relinquishes_.push_back({node, channel, next});
  }
  int double_serves() const {
    std::lock_guard lock(mutex_);
    return double_serves_;
  }
  struct Relinquished {
    std::string node;
    Uuid channel;
    Verdict next;
  };
  std::vector<Relinquished> relinquishes() const {
    std::lock_guard lock(mutex_);
    return relinquishes_;
  }

private:
  mutable std::mutex mutex_;
  std::map<Uuid, std::set<std::string>> serving_;
  std::vector<Relinquished> relinquishes_;
  int double_serves_ = 0;
};

class Node {
public:
  Node(const std::string& etcd, const std::string& id, Ledger& ledger,
       std::chrono::seconds ttl = 2s)
      : id_(id), ledger_(ledger) {
    EtcdDirectoryConfig config;
    config.etcd = etcd;
    config.self = {id, "127.0.0.1:" + std::to_string(7000 + id.back()), ""};
    config.lease_ttl = ttl;
    directory_ = std::make_unique<EtcdDirectory>(config);
    directory_->on_relinquish([this](const Uuid& channel, const Verdict& next) {
      ledger_.relinquished(id_, channel, next);
    });
    directory_->start();
  }

  Verdict resolve(const Uuid& channel) {
    auto promise = std::make_shared<std::promise<Verdict>>();
    auto answer = promise->get_future();
    directory_->resolve(channel, [promise](Verdict verdict) { promise->set_value(verdict); });
    EXPECT_EQ(answer.wait_for(20s), std::future_status::ready) << id_;
    const auto verdict = answer.get();
    if (verdict.kind == Verdict::Kind::serve) ledger_.served(id_, channel);
    return verdict;
  }

  EtcdDirectory& directory() { return *directory_; }
  const std::string& id() const { return id_; }
  std::size_t members() const { return directory_->status().members.size(); }
  bool ready() const { return !directory_->not_ready_reason(); }

private:
  std::string id_;
  Ledger& ledger_;
  std::unique_ptr<EtcdDirectory> directory_;
};

std::vector<Uuid> some_channels(int count) {
  std::vector<Uuid> out;
  for (int i = 0; i < count; ++i) out.push_back(Uuid::random());
  return out;
}

std::map<std::string, std::string> claims(const test::EtcdServer& etcd) {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : etcd.get_prefix("/switchboard/channels/")) {
    out[key.substr(std::string("/switchboard/channels/").size())] = value;
  }
  return out;
}

TEST(EtcdDirectory, UnavailableWithoutAViewAndStopsPromptly) {
  Ledger ledger;
  // Nothing listens there: no lease, no view.
  Node lonely("http://127.0.0.1:" + std::to_string(test::free_loopback_port()), "lonely", ledger);
  const auto verdict = lonely.resolve(Uuid::random());
  EXPECT_EQ(verdict.kind, Verdict::Kind::unavailable);
  EXPECT_EQ(verdict.reason, "no membership view yet");
  EXPECT_EQ(lonely.directory().not_ready_reason().value_or(""), "no membership view yet");
  lonely.directory().stop();
}

TEST(EtcdDirectory, PlacementOwnerClaimsAndTheOthersRedirect) {
  test::EtcdServer etcd;
  Ledger ledger;
  Node a(etcd.url(), "relay-a", ledger);
  Node b(etcd.url(), "relay-b", ledger);
  ASSERT_TRUE(
      eventually([&] { return a.ready() && b.ready() && a.members() == 2 && b.members() == 2; }));
  const std::vector<std::string> ids{"relay-a", "relay-b"};
  const auto channels = some_channels(40);
  for (const auto& channel : channels) {
    const auto owner = owner_of(channel, ids);
    auto& mine = owner == "relay-a" ? a : b;
    auto& other = owner == "relay-a" ? b : a;
    const auto elsewhere = other.resolve(channel);
    ASSERT_EQ(elsewhere.kind, Verdict::Kind::redirect) << elsewhere.reason;
    EXPECT_EQ(elsewhere.owner.node_id, owner);
    EXPECT_EQ(elsewhere.owner.native, "127.0.0.1:" + std::to_string(7000 + owner.back()));
    EXPECT_EQ(mine.resolve(channel).kind, Verdict::Kind::serve);
    EXPECT_EQ(mine.resolve(channel).kind, Verdict::Kind::serve);  // held: answered inline
  }
  const auto held = claims(etcd);
  ASSERT_EQ(held.size(), channels.size());
  for (const auto& channel : channels)
    EXPECT_EQ(held.at(channel.to_string()), owner_of(channel, ids));
  const auto sa = a.directory().status();
  const auto sb = b.directory().status();
  EXPECT_EQ(sa.claims_won + sb.claims_won, channels.size());
  EXPECT_EQ(sa.channels_held + sb.channels_held, channels.size());
  EXPECT_EQ(sa.revision, sb.revision);

  // An emptied channel's claim goes; the owner claims it again when asked.
  const auto& first = channels.front();
  auto& first_owner = owner_of(first, ids) == "relay-a" ? a : b;
  first_owner.directory().channel_emptied(first);
  ASSERT_TRUE(eventually([&] { return !claims(etcd).contains(first.to_string()); }));
  EXPECT_EQ(first_owner.resolve(first).kind, Verdict::Kind::serve);
  EXPECT_EQ(ledger.double_serves(), 0);
}

TEST(EtcdDirectory, AJoiningMemberTakesItsShareOnlyAfterTheHolderEmptiesIt) {
  test::EtcdServer etcd;
  Ledger ledger;
  Node a(etcd.url(), "relay-a", ledger);
  Node b(etcd.url(), "relay-b", ledger);
  ASSERT_TRUE(
      eventually([&] { return a.ready() && b.ready() && a.members() == 2 && b.members() == 2; }));
  const std::vector<std::string> two{"relay-a", "relay-b"};
  const std::vector<std::string> three{"relay-a", "relay-b", "relay-c"};
  const auto channels = some_channels(60);
  std::set<Uuid> moving;
  for (const auto& channel : channels) {
    auto& owner = owner_of(channel, two) == "relay-a" ? a : b;
    ASSERT_EQ(owner.resolve(channel).kind, Verdict::Kind::serve);
    if (owner_of(channel, three) == "relay-c") moving.insert(channel);
  }
  ASSERT_FALSE(moving.empty());

  Node c(etcd.url(), "relay-c", ledger);
  ASSERT_TRUE(eventually([&] { return c.ready() && a.members() == 3 && b.members() == 3; }));
  // Exactly the channels placement gives to relay-c are relinquished, once each, towards it.
  ASSERT_TRUE(eventually([&] { return ledger.relinquishes().size() == moving.size(); }));
  std::set<Uuid> relinquished;
  for (const auto& r : ledger.relinquishes()) {
    EXPECT_TRUE(moving.contains(r.channel));
    EXPECT_EQ(r.node, owner_of(r.channel, two));
    EXPECT_EQ(r.next.kind, Verdict::Kind::redirect);
    EXPECT_EQ(r.next.owner.node_id, "relay-c");
    relinquished.insert(r.channel);
  }
  EXPECT_EQ(relinquished, moving);

  // Until the old holder reports the channel empty, relay-c sends peers to it, and it asks
  // them to come back: nobody else serves it.
  const auto& channel = *moving.begin();
  auto& holder = owner_of(channel, two) == "relay-a" ? a : b;
  const auto at_new_owner = c.resolve(channel);
  ASSERT_EQ(at_new_owner.kind, Verdict::Kind::redirect) << at_new_owner.reason;
  EXPECT_EQ(at_new_owner.owner.node_id, holder.id());
  EXPECT_EQ(holder.resolve(channel).kind, Verdict::Kind::unavailable);
  EXPECT_EQ(c.directory().status().claims_lost, 1U);

  for (const auto& r : ledger.relinquishes()) {
    (r.node == "relay-a" ? a : b).directory().channel_emptied(r.channel);
  }
  for (const auto& moved : moving) {
    ASSERT_TRUE(eventually([&] { return c.resolve(moved).kind == Verdict::Kind::serve; }));
  }
  const auto held = claims(etcd);
  for (const auto& each : channels) EXPECT_EQ(held.at(each.to_string()), owner_of(each, three));
  EXPECT_EQ(ledger.double_serves(), 0);
}

// The share of a thousand held channels that a fourth relay takes: placement predicts about a
// quarter, only towards the newcomer; the figure is printed.
TEST(EtcdDirectory, AFourthRelayTakesAboutAQuarterOfAThousandChannels) {
  test::EtcdServer etcd;
  Ledger ledger;
  Node a(etcd.url(), "relay-a", ledger);
  Node b(etcd.url(), "relay-b", ledger);
  Node c(etcd.url(), "relay-c", ledger);
  ASSERT_TRUE(eventually([&] {
    return a.ready() && b.ready() && c.ready() && a.members() == 3 && b.members() == 3 &&
           c.members() == 3;
  }));
  const std::vector<std::string> three{"relay-a", "relay-b", "relay-c"};
  const auto channels = some_channels(1000);
  for (const auto& channel : channels) {
    const auto owner = owner_of(channel, three);
    auto& node = owner == "relay-a" ? a : owner == "relay-b" ? b : c;
    ASSERT_EQ(node.resolve(channel).kind, Verdict::Kind::serve);
  }
  const std::vector<std::string> four{"relay-a", "relay-b", "relay-c", "relay-d"};
  std::size_t predicted = 0;
  for (const auto& channel : channels) predicted += owner_of(channel, four) == "relay-d" ? 1 : 0;

  Node d(etcd.url(), "relay-d", ledger);
  ASSERT_TRUE(eventually([&] { return d.ready() && a.members() == 4 && c.members() == 4; }));
  ASSERT_TRUE(eventually([&] { return ledger.relinquishes().size() == predicted; }));
  for (const auto& r : ledger.relinquishes()) {
    EXPECT_EQ(r.next.owner.node_id, "relay-d");
  }
  const double share = static_cast<double>(predicted) / static_cast<double>(channels.size());
  std::printf("a fourth relay takes %zu of %zu held channels (%.1f%%; 1/4 = 25%%)\n", predicted,
              channels.size(), 100.0 * share);
  // Rendezvous hashing: about 1/4, with the spread of 1,000 draws (5 standard deviations).
  EXPECT_GT(share, 0.18);
  EXPECT_LT(share, 0.32);
  EXPECT_EQ(ledger.double_serves(), 0);
}

TEST(EtcdDirectory, EtcdOutageKeepsHeldChannelsUntilTheFenceThenRegistersAgain) {
  test::EtcdServer etcd;
  Ledger ledger;
  // A longer lease: the time between the outage and the fence must hold a few resolves.
  Node a(etcd.url(), "relay-a", ledger, 6s);
  ASSERT_TRUE(eventually([&] { return a.ready() && a.members() == 1; }));
  const auto held = Uuid::random();
  ASSERT_EQ(a.resolve(held).kind, Verdict::Kind::serve);

  etcd.stop();
  // The lease is still valid: the held channel is served, a new one cannot be claimed.
  EXPECT_EQ(a.resolve(held).kind, Verdict::Kind::serve);
  const auto fresh = a.resolve(Uuid::random());
  EXPECT_EQ(fresh.kind, Verdict::Kind::unavailable);
  EXPECT_EQ(fresh.reason, "etcd unreachable: cannot claim the channel");

  // The fence: the held channel is relinquished as unavailable and refused from then on.
  ASSERT_TRUE(eventually([&] { return ledger.relinquishes().size() == 1; }));
  EXPECT_EQ(ledger.relinquishes()[0].channel, held);
  EXPECT_EQ(ledger.relinquishes()[0].next.kind, Verdict::Kind::unavailable);
  const auto fenced = a.resolve(held);
  EXPECT_EQ(fenced.kind, Verdict::Kind::unavailable);
  EXPECT_EQ(fenced.reason, "relay fenced: cannot renew its lease");
  EXPECT_TRUE(a.directory().status().fenced);

  etcd.start();
  ASSERT_TRUE(eventually([&] { return a.ready(); }, 30s))
      << a.directory().not_ready_reason().value_or("") << " " << a.directory().json();
  EXPECT_EQ(a.directory().status().lease_grants, 2U);
  EXPECT_EQ(a.directory().status().channels_held, 0U);
  // etcd restored the old lease with its claim; the relay revokes it.
  EXPECT_TRUE(eventually([&] { return claims(etcd).empty(); }));
  // The old lease was revoked with its claim; the channel is claimed anew.
  EXPECT_EQ(a.resolve(held).kind, Verdict::Kind::serve);
  EXPECT_EQ(claims(etcd).size(), 1U);
  EXPECT_EQ(ledger.double_serves(), 0);
}

TEST(EtcdDirectory, LeavingHandsChannelsOverAndRevokesTheLease) {
  test::EtcdServer etcd;
  Ledger ledger;
  Node a(etcd.url(), "relay-a", ledger, 10s);
  Node b(etcd.url(), "relay-b", ledger, 10s);
  ASSERT_TRUE(
      eventually([&] { return a.ready() && b.ready() && a.members() == 2 && b.members() == 2; }));
  const std::vector<std::string> ids{"relay-a", "relay-b"};
  std::vector<Uuid> on_a;
  for (const auto& channel : some_channels(30)) {
    if (owner_of(channel, ids) != "relay-a") continue;
    ASSERT_EQ(a.resolve(channel).kind, Verdict::Kind::serve);
    on_a.push_back(channel);
  }
  ASSERT_FALSE(on_a.empty());
  a.directory().leave(std::chrono::steady_clock::now() + 60s);
  ASSERT_EQ(ledger.relinquishes().size(), on_a.size());
  for (const auto& r : ledger.relinquishes()) {
    EXPECT_EQ(r.next.kind, Verdict::Kind::redirect);
    EXPECT_EQ(r.next.owner.node_id, "relay-b");
  }
  // While leaving, new channels go to the others.
  const auto redirected = a.resolve(Uuid::random());
  EXPECT_EQ(redirected.kind, Verdict::Kind::redirect);
  EXPECT_EQ(redirected.owner.node_id, "relay-b");
  EXPECT_EQ(b.members(), 2U);
  for (const auto& channel : on_a) a.directory().channel_emptied(channel);
  // The lease is revoked once all are emptied: relay-b sees relay-a go long before its TTL.
  ASSERT_TRUE(eventually([&] { return b.members() == 1; }, 8s));
  EXPECT_TRUE(claims(etcd).empty());
  for (const auto& channel : on_a) EXPECT_EQ(b.resolve(channel).kind, Verdict::Kind::serve);
  EXPECT_EQ(ledger.double_serves(), 0);
}

TEST(EtcdDirectory, ARelayRestartedUnderItsNodeIdWaitsForItsEarlierLeasesClaims) {
  test::EtcdServer etcd;
  Ledger ledger;
  // The earlier process under node id "same" (still alive here, as a frozen one would be).
  Node earlier(etcd.url(), "same", ledger);
  ASSERT_TRUE(eventually([&] { return earlier.ready(); }));
  const auto channel = Uuid::random();
  ASSERT_EQ(earlier.resolve(channel).kind, Verdict::Kind::serve);
  Node restarted(etcd.url(), "same", ledger);
  ASSERT_TRUE(eventually([&] { return restarted.ready(); }));
  // Its id holds the claim, but on another lease: not ours until that lease is gone.
  const auto verdict = restarted.resolve(channel);
  EXPECT_EQ(verdict.kind, Verdict::Kind::unavailable);
  EXPECT_NE(verdict.reason.find("earlier lease"), std::string::npos) << verdict.reason;
  // Nor may the restarted process delete the earlier one's claim.
  restarted.directory().channel_emptied(channel);
  EXPECT_EQ(restarted.resolve(channel).kind, Verdict::Kind::unavailable);
  EXPECT_EQ(claims(etcd).count(channel.to_string()), 1U);
  // Once the earlier process is gone with its lease, the claim is free.
  earlier.directory().leave(std::chrono::steady_clock::now());
  ASSERT_TRUE(eventually([&] { return !claims(etcd).contains(channel.to_string()); }));
  ASSERT_TRUE(eventually([&] { return restarted.resolve(channel).kind == Verdict::Kind::serve; }));
  EXPECT_EQ(ledger.double_serves(), 0);
}

}  // namespace
}  // namespace switchboard::cluster
