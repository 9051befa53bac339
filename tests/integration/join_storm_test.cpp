// Join storms: many peers joining one channel at once (and some leaving meanwhile) all end with
// the channel's exact member set and version, having seen every change in version order.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/clients.hpp"
#include "support/relay.hpp"
#include "switchboard/client.hpp"

namespace switchboard {
namespace {

namespace asio = boost::asio;
using client::Connection;
using Clock = std::chrono::steady_clock;

// One peer of the storm: its connection and what its presence view went through after the
// connect returned.
struct StormPeer {
  std::shared_ptr<Connection> connection;
  std::string failure;
  std::uint64_t base_version = 0;  // its view's version when its log began
  std::vector<std::uint64_t> versions;
  bool leave = false;  // leaves as soon as it has joined
};

core::Limits storm_limits() {
  core::Limits limits;
  limits.connect_rate_per_address = 0;  // every peer of the storm comes from 127.0.0.1
  return limits;
}

class JoinStorm : public ::testing::TestWithParam<int> {
protected:
  // Connects every peer at once on one thread; those marked leave close once joined. Runs
  // until the stayers' views reach `final_version` (the storm's changes) or `timeout` passes;
  // with `after_last_join` set, the views must be exact that long after the last connect
  // returned (the last change). One more peer joins first and stays: a channel that empties
  // goes away and starts its versions again, which a leaver that joins and leaves before
  // anyone else has joined would otherwise do.
  void storm(std::vector<StormPeer>& peers, std::uint64_t final_version,
             std::chrono::seconds timeout = std::chrono::seconds(60),
             std::optional<std::chrono::milliseconds> after_last_join = std::nullopt) {
    asio::io_context io;
    client::Outcome anchor_outcome;
    std::shared_ptr<Connection> anchor;
    bool anchor_done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          anchor = co_await Connection::connect(
              io.get_executor(), test::options_for(relay_.port(), channel_), anchor_outcome);
          anchor_done = true;
        },
        asio::detached);
    for (const auto bound = Clock::now() + timeout; !anchor_done && Clock::now() < bound;) {
      io.run_for(std::chrono::milliseconds(5));
    }
    ASSERT_TRUE(anchor) << anchor_outcome.describe();
    ++final_version;  // the anchor's join
    std::size_t connecting = peers.size();
    const auto start = Clock::now();
    Clock::time_point last_join{};
    for (auto& peer : peers) {
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            client::Outcome outcome;
            auto connection = co_await Connection::connect(
                io.get_executor(), test::options_for(relay_.port(), channel_), outcome);
            if (--connecting == 0) last_join = Clock::now();
            if (!connection) {
              peer.failure = outcome.describe();
              co_return;
            }
            if (peer.leave) {
              connection->close();
              co_return;
            }
            // Same thread as the connection's handlers: no change slips between these two.
            peer.base_version = connection->membership_version();
            connection->on_presence([&peer](const client::PresenceChange& change) {
              peer.versions.push_back(change.version);
            });
            peer.connection = std::move(connection);
          },
          asio::detached);
    }
    const auto settled = [&] {
      if (connecting > 0) return false;
      return std::all_of(peers.begin(), peers.end(), [&](const StormPeer& p) {
        return p.leave || !p.failure.empty() ||
               (p.connection && p.connection->membership_version() >= final_version);
      });
    };
    auto deadline = start + timeout;
    bool exact = false;
    while (!(exact = settled()) && Clock::now() < deadline) {
      if (after_last_join && connecting == 0)
        deadline = std::min(deadline, last_join + *after_last_join);
      io.run_for(std::chrono::milliseconds(5));
    }
    const auto now = Clock::now();
    std::printf(
        "storm of %zu peers settled in %.1f ms, %.1f ms after the last join (parameter %d ms)\n",
        peers.size(), std::chrono::duration<double, std::milli>(now - start).count(),
        connecting == 0 ? std::chrono::duration<double, std::milli>(now - last_join).count() : -1.0,
        GetParam());
    if (!exact) {
      // Which side stopped: the relay's own record of the channel, beside the views.
      std::uint64_t relay_version = 0;
      const auto members = relay_.registry().channel_peers(channel_, relay_version);
      std::size_t lowest = SIZE_MAX, behind = 0;
      for (const auto& p : peers) {
        if (p.leave || !p.connection) continue;
        lowest = std::min<std::size_t>(lowest, p.connection->membership_version());
        if (p.connection->membership_version() < final_version) ++behind;
      }
      std::printf(
          "not settled: relay at version %llu with %zu members; %zu views behind, lowest %zu\n",
          static_cast<unsigned long long>(relay_version), members ? members->size() : 0, behind,
          lowest);
    }
    if (after_last_join) {
      EXPECT_TRUE(exact) << "views not exact " << after_last_join->count()
                         << " ms after the last join";
    }
    check(peers, final_version, anchor->peer_id());
    anchor->close();
    for (auto& peer : peers) {
      if (peer.connection) peer.connection->close();
    }
    io.run_for(std::chrono::milliseconds(100));
    peers.clear();  // the connections go before the io_context they live on
    anchor.reset();
  }

  void check(const std::vector<StormPeer>& peers, std::uint64_t final_version, const Uuid& anchor) {
    std::vector<Uuid> members{anchor};
    for (const auto& peer : peers) {
      ASSERT_TRUE(peer.failure.empty()) << peer.failure;
      if (!peer.leave) members.push_back(peer.connection->peer_id());
    }
    std::sort(members.begin(), members.end());
    for (const auto& peer : peers) {
      if (peer.leave) continue;
      const auto& connection = *peer.connection;
      EXPECT_EQ(connection.membership_version(), final_version);
      auto view = connection.peers();
      view.push_back(connection.peer_id());
      std::sort(view.begin(), view.end());
      EXPECT_EQ(view, members) << "peer " << connection.peer_id().to_string();
      // Every change after the view's base, one version at a time, none skipped or repeated.
      auto expected = peer.base_version;
      for (const auto version : peer.versions) EXPECT_EQ(version, ++expected);
      EXPECT_EQ(expected, final_version);
    }
  }

  // A parameter of 0 or more is the presence_interval; a negative one is a presence_storm_hold
  // of that many milliseconds at the default presence_interval, with every change counted as a
  // storm (presence_storm_rate 1).
  core::Limits limits() const {
    auto limits = storm_limits();
    if (GetParam() >= 0) {
      limits.presence_interval = std::chrono::milliseconds(GetParam());
    } else {
      limits.presence_storm_rate = 1;
      limits.presence_storm_hold = std::chrono::milliseconds(-GetParam());
    }
    return limits;
  }

  test::InProcessRelay relay_{limits()};
  Uuid channel_ = Uuid::random();
};

TEST_P(JoinStorm, ConcurrentJoinersAllEndWithTheExactChannel) {
  std::vector<StormPeer> peers(160);
  storm(peers, peers.size());  // a fresh channel: one version per join
}

TEST_P(JoinStorm, LeavesDuringTheStormAreExactToo) {
  std::vector<StormPeer> peers(150);
  for (std::size_t i = 0; i < peers.size(); i += 3) peers[i].leave = true;
  const auto leaving = static_cast<std::uint64_t>((peers.size() + 2) / 3);
  storm(peers, peers.size() + leaving);  // a version per join and per leave
}

std::string param_name(const ::testing::TestParamInfo<int>& info) {
  return info.param >= 0 ? std::to_string(info.param) + "ms"
                         : "StormHold" + std::to_string(-info.param) + "ms";
}

// 0: every change written in its turn of the event loop; 200: the default coalescing; and the
// relay in a join storm from the first change, holding changes up to a second.
INSTANTIATE_TEST_SUITE_P(PresenceInterval, JoinStorm, ::testing::Values(0, 200, -1000), param_name);

// Once the joins stop, the changes a relay held back go out without a further change to carry
// them and without waiting for their due time. With presence_interval at 60 s a held write is
// due 7.5 s or more after the write before it, and in a storm with a 60 s hold 60 s after it,
// so views exact within 5 s of the last join (a bound for a loaded machine; the time it took is
// printed) were not waiting for that.
class JoinBurst : public JoinStorm {};

TEST_P(JoinBurst, ViewsBecomeExactOnceTheJoinsStop) {
  std::vector<StormPeer> peers(120);
  for (std::size_t i = 0; i < peers.size(); i += 4) peers[i].leave = true;
  const auto leaving = static_cast<std::uint64_t>((peers.size() + 3) / 4);
  storm(peers, peers.size() + leaving, std::chrono::seconds(60), std::chrono::seconds(5));
}

INSTANTIATE_TEST_SUITE_P(LongPresenceInterval, JoinBurst, ::testing::Values(60000, -60000),
                         param_name);

// A storm that never stops still delivers presence: a held change goes out once the hold has
// passed since the connection's last presence write, without waiting for a quiet tick. Four
// churners join and leave for as long as the watcher waits, so ticks keep finding changes; the
// watcher must see ten writes' worth of versions. With the hold ignored while changes keep
// coming, it sees its first change and then only what a quiet tick lets out (the churners
// stalling on a loaded machine), and the 30 s bound fails it.
TEST(StormHold, HeldPresenceIsWrittenWhileTheStormGoesOn) {
  auto limits = storm_limits();
  limits.presence_storm_rate = 1;
  limits.presence_storm_hold = std::chrono::milliseconds(50);
  test::InProcessRelay relay(limits);
  const auto channel = Uuid::random();
  asio::io_context io;
  client::Outcome outcome;
  std::shared_ptr<Connection> watcher;
  std::size_t changes_seen = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        watcher = co_await Connection::connect(io.get_executor(),
                                               test::options_for(relay.port(), channel), outcome);
        if (!watcher) co_return;
        watcher->on_presence([&](const client::PresenceChange&) { ++changes_seen; });
      },
      asio::detached);
  bool done = false;
  std::size_t churned = 0;
  std::string failure;
  for (int churner = 0; churner < 4; ++churner) {
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          while (!done && churned < 200000) {  // bounded: about 600 are needed
            client::Outcome churn_outcome;
            auto peer = co_await Connection::connect(
                io.get_executor(), test::options_for(relay.port(), channel), churn_outcome);
            if (!peer) {
              failure = churn_outcome.describe();
              co_return;
            }
            ++churned;
            peer->close();
          }
        },
        asio::detached);
  }
  std::uint64_t first_version = 0;
  const auto bound = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < bound && failure.empty()) {
    io.run_for(std::chrono::milliseconds(5));
    if (!watcher) continue;
    if (first_version == 0) first_version = watcher->membership_version();
    // A churned peer's join and leave are two versions. The watcher's first change after its
    // welcome is written at once; 40 versions need held writes after it.
    if (watcher->membership_version() >= first_version + 40) break;
  }
  done = true;
  ASSERT_TRUE(failure.empty()) << failure;
  ASSERT_TRUE(watcher) << outcome.describe();
  EXPECT_GE(watcher->membership_version(), first_version + 40)
      << "presence stopped while the storm went on: " << churned << " churned peers";
  std::printf("%zu churned peers, %zu presence changes seen\n", churned, changes_seen);
  watcher->close();
  io.run_for(std::chrono::milliseconds(100));
  watcher.reset();
}

}  // namespace
}  // namespace switchboard
