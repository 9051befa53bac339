// A churn run: three relays killed, frozen, drained and restarted twenty times while requests of
// random sizes flow on twelve channels; no byte corrupted, no stream hung, no channel ever served
// by two relays at once, and every channel served again at the end.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cluster/placement.hpp"
#include "support/clients.hpp"
#include "tests/cluster/poll.hpp"
#include "tests/cluster/relay_process.hpp"
#include "tests/cluster/serving_checker.hpp"

namespace switchboard::test {
namespace {

using namespace std::chrono_literals;
using client::BlockingClient;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kRelays = 3;
constexpr std::size_t kChannels = 12;
constexpr std::size_t kMaxPayload = 1U << 20;
constexpr auto kDeadline = 5s;
// A request still running this long after it started neither completed nor failed: hung.
constexpr auto kHungAfter = kDeadline + 10s;
// Bounds of the traffic, whatever the churn does: it stops by itself.
constexpr std::uint64_t kMaxRequestsPerLane = 100'000;
constexpr auto kTrafficCap = 150s;

double seconds_since(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

std::int64_t ticks(Clock::time_point at) { return at.time_since_epoch().count(); }

client::ConnectOptions through(const Relay& relay, const Uuid& channel, bool accept_requests) {
  auto options = options_for(relay.port(), channel, accept_requests);
  options.host = relay.host();
  options.reconnect.enabled = true;
  options.reconnect.initial_delay = 20ms;
  options.reconnect.max_delay = 200ms;
  // A frozen relay accepts TCP connections it never answers: give up on one sooner.
  options.connect_timeout = 2s;
  return options;
}

// What every request ended with, from all lanes.
struct Tally {
  std::atomic<std::uint64_t> ok{0};
  std::atomic<std::uint64_t> bytes{0};  // echoed and checked
  std::atomic<std::uint64_t> corrupted{0};
  std::atomic<std::uint64_t> hung{0};
  std::mutex mutex;
  std::map<std::string, std::uint64_t> errors;  // by status (and how the connection failed)
  std::map<std::string, std::string> examples;  // the first message of each kind

  void error(const client::Outcome& outcome) {
    std::string kind(status_name(outcome.status));
    if (outcome.connection_lost) kind += " (connection lost)";
    if (outcome.unreachable) kind += " (unreachable)";
    std::lock_guard lock(mutex);
    ++errors[kind];
    examples.emplace(kind, outcome.message);
  }
  std::uint64_t error_count(Status status) {
    const std::string name(status_name(status));
    std::lock_guard lock(mutex);
    std::uint64_t count = 0;
    for (const auto& [kind, n] : errors) count += kind.starts_with(name) ? n : 0;
    return count;
  }
};

// One channel's traffic: an echo responder and a requester, and the thread that sends the
// requests; a third peer stays idle. Each enters through its own relay. The idle one leaves a
// relay giving the channel up at once, while the other two may still finish a stream there: a
// new owner that took the channel too early would be seen serving beside the old one.
struct Lane {
  std::size_t index = 0;
  Uuid channel;
  std::size_t responder_relay = 0;
  std::size_t requester_relay = 0;
  std::unique_ptr<BlockingClient> responder;
  std::unique_ptr<BlockingClient> requester;
  std::unique_ptr<BlockingClient> idle;
  std::thread loop;
  std::atomic<std::uint64_t> sequence{0};        // of the request in flight
  std::atomic<std::int64_t> started{0};          // when it started; 0 between requests
  std::atomic<std::uint64_t> flagged{0};         // sequence + 1 of the last request counted hung
  std::atomic<std::int64_t> last_ok_started{0};  // when the last whole echo had started
  std::atomic<bool> done{false};
};

/// Whether `peer` sees exactly `others` on its channel.
bool sees(BlockingClient& peer,
          std::initializer_list<std::reference_wrapper<BlockingClient>> others) {
  std::vector<Uuid> expected;
  for (auto& other : others) expected.push_back(other.get().peer_id());
  auto seen = peer.peers();
  std::sort(expected.begin(), expected.end());
  std::sort(seen.begin(), seen.end());
  return seen == expected;
}

// Requests on every lane, and a watchdog that counts the ones running past their deadline.
class Traffic {
public:
  explicit Traffic(std::vector<std::unique_ptr<Lane>>& lanes) : lanes_(lanes) {}
  ~Traffic() { stop(); }
  Traffic(const Traffic&) = delete;
  Traffic& operator=(const Traffic&) = delete;

  void start() {
    const auto cap = Clock::now() + kTrafficCap;
    for (auto& lane : lanes_) {
      lane->loop = std::thread([this, &one = *lane, cap] { run(one, cap); });
    }
    watchdog_ = std::thread([this, cap] {
      while (!stopping_.load() && Clock::now() < cap + kHungAfter) {
        for (auto& lane : lanes_) {
          const auto started = lane->started.load();
          if (started != 0 && Clock::now().time_since_epoch().count() - started >
                                  std::chrono::duration_cast<Clock::duration>(kHungAfter).count()) {
            count_hung(*lane, lane->sequence.load(), "still running");
          }
        }
        std::this_thread::sleep_for(100ms);
      }
    });
  }

  /// Ends the requests: each lane finishes the one in flight (bounded by the hung limit, then
  /// its clients are closed under it).
  void stop() {
    stopping_ = true;
    for (auto& lane : lanes_) {
      if (!lane->loop.joinable()) continue;
      if (!eventually([&] { return lane->done.load(); }, kHungAfter + 1s)) {
        count_hung(*lane, lane->sequence.load(), "not ended when the run stopped");
        lane->requester->close();
        lane->responder->close();
      }
      lane->loop.join();
    }
    if (watchdog_.joinable()) watchdog_.join();
  }

  Tally& tally() { return tally_; }

private:
  void run(Lane& lane, Clock::time_point cap) {
    std::mt19937_64 random(0x5eed + lane.index);
    // Sizes spread evenly over powers of two, from one byte to 1 MiB.
    std::uniform_real_distribution<double> exponent(0.0, std::log2(double(kMaxPayload)));
    std::vector<std::uint8_t> body;
    std::vector<std::uint8_t> response;
    const auto target = client::Target::to(lane.responder->peer_id());
    client::StreamOptions options;
    options.deadline = kDeadline;
    for (std::uint64_t n = 0; !stopping_.load() && n < kMaxRequestsPerLane && Clock::now() < cap;
         ++n) {
      body.resize(std::max<std::size_t>(1, static_cast<std::size_t>(std::exp2(exponent(random)))));
      fill_pattern(body, lane.index, n);
      lane.sequence = n;
      const auto started = Clock::now();
      lane.started = ticks(started);
      const auto outcome = lane.requester->send(target, body, response, options);
      lane.started = 0;
      if (Clock::now() - started > kHungAfter) count_hung(lane, n, "came back late");
      if (!outcome.ok()) {
        tally_.error(outcome);
        std::this_thread::sleep_for(50ms);  // the cluster is moving: let it
        continue;
      }
      if (response != body) {
        tally_.corrupted.fetch_add(1);
        const auto differ =
            std::mismatch(body.begin(), body.end(), response.begin(), response.end());
        std::printf(
            "CORRUPTED: lane %zu request %llu: sent %zu bytes, got %zu back, first "
            "difference at byte %zu\n",
            lane.index, static_cast<unsigned long long>(n), body.size(), response.size(),
            static_cast<std::size_t>(differ.first - body.begin()));
        continue;
      }
      tally_.ok.fetch_add(1);
      tally_.bytes.fetch_add(body.size());
      lane.last_ok_started = ticks(started);
    }
    lane.done = true;
  }

  void count_hung(Lane& lane, std::uint64_t sequence, const char* how) {
    auto seen = lane.flagged.load();
    if (seen == sequence + 1 || !lane.flagged.compare_exchange_strong(seen, sequence + 1)) return;
    tally_.hung.fetch_add(1);
    std::printf("HUNG: lane %zu request %llu %s after %.0f s\n", lane.index,
                static_cast<unsigned long long>(sequence), how,
                std::chrono::duration<double>(kHungAfter).count());
  }

  std::vector<std::unique_ptr<Lane>>& lanes_;
  std::atomic<bool> stopping_{false};
  std::thread watchdog_;
  Tally tally_;
};

enum class Action { kill, freeze, term, restart };

const char* action_name(Action action) {
  switch (action) {
    case Action::kill:
      return "kill -9";
    case Action::freeze:
      return "SIGSTOP past the lease, SIGCONT";
    case Action::term:
      return "SIGTERM (drain)";
    case Action::restart:
      return "restart";
  }
  return "?";
}

struct Event {
  Action action;
  std::size_t relay;
  bool at_once = false;  // straight after the previous event: no waiting for the cluster
};

// Twenty events over relays a, b, c (rotating each cycle); never more than two relays out:
// - kill a; kill b and restart it at once (before its old lease expires: the restarted relay
//   finds claims of its previous life); restart a; freeze c;
// - drain a; freeze b while a is gone (c alone serves); restart a; kill c; restart c.
std::vector<Event> schedule() {
  std::vector<Event> events;
  for (std::size_t cycle = 0; cycle < 4; ++cycle) {
    const auto a = cycle % kRelays;
    const auto b = (cycle + 1) % kRelays;
    const auto c = (cycle + 2) % kRelays;
    if (cycle % 2 == 0) {
      events.insert(events.end(), {{Action::kill, a},
                                   {Action::kill, b},
                                   {Action::restart, b, true},
                                   {Action::restart, a},
                                   {Action::freeze, c}});
    } else {
      events.insert(events.end(), {{Action::term, a},
                                   {Action::freeze, b},
                                   {Action::restart, a},
                                   {Action::kill, c},
                                   {Action::restart, c}});
    }
  }
  return events;
}

class ClusterChurn : public ::testing::Test {
protected:
  void SetUp() override {
    // A short keepalive: peers of a frozen relay notice within a second.
    for (std::size_t n = 1; n <= kRelays; ++n) {
      relays_.push_back(std::make_unique<Relay>(etcd_, static_cast<int>(n), "1s",
                                                std::vector<std::string>{"--keepalive-ms", "300"}));
    }
    ASSERT_TRUE(eventually([&] { return settled(); }));
  }

  /// Every relay that is up sees exactly the relays that are up, and is ready.
  bool settled() {
    const auto live = static_cast<double>(std::count(up_.begin(), up_.end(), true));
    for (std::size_t i = 0; i < kRelays; ++i) {
      if (!up_[i]) continue;
      if (relays_[i]->members() != live || relays_[i]->health().status != 200) return false;
    }
    return true;
  }

  /// The relay's lease; empty when it has none for 10 s (a relay fenced by a loaded machine
  /// registers again within moments).
  static std::string lease_of(const Relay& relay) {
    std::string lease;
    eventually(
        [&] {
          lease = relay.lease();
          return !lease.empty() && lease != "0";
        },
        10s);
    return lease == "0" ? std::string{} : lease;
  }

  bool lease_expired(const std::string& lease) {
    try {
      return etcd_.etcdctl({"lease", "timetolive", lease}).find("already expired") !=
             std::string::npos;
    } catch (const std::exception&) {
      return false;
    }
  }

  /// What is wrong with where `channels` are: each must be served by one relay, and its claim
  /// in etcd must name that relay. Empty when all is well.
  std::string misplaced(const std::vector<Uuid>& channels) {
    const std::string prefix = "/switchboard/channels/";
    std::map<std::string, std::string> claims;
    try {
      for (const auto& [key, value] : etcd_.get_prefix(prefix)) {
        claims[key.substr(prefix.size())] = value;
      }
    } catch (const std::exception& error) {
      return error.what();
    }
    std::string out;
    for (std::size_t c = 0; c < channels.size(); ++c) {
      std::string serving;
      int count = 0;
      for (std::size_t i = 0; i < kRelays; ++i) {
        if (up_[i] && relays_[i]->serves(channels[c]).value_or(false)) {
          serving += (count++ > 0 ? "," : "") + relays_[i]->id();
        }
      }
      const auto claim = claims.find(channels[c].to_string());
      const std::string holder = claim == claims.end() ? "none" : claim->second;
      if (count != 1 || holder != serving) {
        out += "channel " + std::to_string(c) + " served by [" + serving + "] claimed by " +
               holder + "; ";
      }
    }
    return out;
  }

  /// Channels placed evenly: four on each relay while all three are members.
  static std::vector<Uuid> channels() {
    const std::array<std::string, kRelays> ids{"r1", "r2", "r3"};
    std::array<std::size_t, kRelays> placed{};
    std::vector<Uuid> out;
    while (out.size() < kChannels) {
      const auto channel = Uuid::random();
      const auto owner = static_cast<std::size_t>(cluster::owner_of(channel, ids).back() - '1');
      if (placed[owner] == kChannels / kRelays) continue;
      ++placed[owner];
      out.push_back(channel);
    }
    return out;
  }

  EtcdServer etcd_;
  std::vector<std::unique_ptr<Relay>> relays_;
  std::array<bool, kRelays> up_{true, true, true};
};

TEST_F(ClusterChurn, TwentyKillsFreezesDrainsAndRestartsUnderTraffic) {
  const auto began = Clock::now();
  const auto channel_ids = channels();
  std::vector<std::unique_ptr<Lane>> lanes;
  for (std::size_t i = 0; i < kChannels; ++i) {
    auto lane = std::make_unique<Lane>();
    lane->index = i;
    lane->channel = channel_ids[i];
    lane->responder_relay = i % kRelays;
    lane->requester_relay = (i + 1) % kRelays;
    try {
      lane->responder = std::make_unique<BlockingClient>(
          through(*relays_[lane->responder_relay], lane->channel, true));
      lane->responder->serve(test::echo);
      lane->requester = std::make_unique<BlockingClient>(
          through(*relays_[lane->requester_relay], lane->channel, false));
      lane->idle = std::make_unique<BlockingClient>(
          through(*relays_[(i + 2) % kRelays], lane->channel, false));
    } catch (const client::ConnectError& error) {
      FAIL() << error.what();
    }
    lanes.push_back(std::move(lane));
  }
  for (auto& lane : lanes) {
    ASSERT_TRUE(eventually([&] { return lane->requester->peers().size() == 2; }));
  }

  std::vector<std::uint16_t> admin_ports;
  for (const auto& relay : relays_) admin_ports.push_back(relay->admin());
  // A relay that does not answer within 300 ms (frozen, or down) serves nothing; a pause of
  // 10 ms keeps the polls from taking a core of this machine. Bounded in rounds as well.
  ServingChecker checker(admin_ports, channel_ids,
                         {.read_timeout = 300ms, .pause = 10ms, .max_rounds = 100'000});
  Traffic traffic(lanes);
  traffic.start();
  auto& tally = traffic.tally();

  // Let traffic flow on every channel before the first event.
  const auto traffic_started = Clock::now();
  ASSERT_TRUE(eventually([&] {
    return std::all_of(lanes.begin(), lanes.end(), [&](const auto& lane) {
      return lane->last_ok_started.load() >= ticks(traffic_started);
    });
  }));

  struct Record {
    Event event;
    double settled_s = 0;    // from the event until every relay up agreed on the members
    double recovered_s = 0;  // from then until every channel whose relays are up served again
    bool recovered = true;
    std::string misplaced;    // channels not served where their claim says, once settled
    std::uint64_t ok_at = 0;  // requests OK when the event began
  };
  std::vector<Record> records;
  std::vector<std::string> pending_leases;  // of killed or frozen relays: must run out first
  const auto events = schedule();
  for (std::size_t e = 0; e < events.size(); ++e) {
    const auto& event = events[e];
    auto& relay = *relays_[event.relay];
    Record record{};
    record.event = event;
    record.ok_at = tally.ok.load();
    const auto at = Clock::now();
    switch (event.action) {
      case Action::kill: {
        const auto lease = lease_of(relay);
        ASSERT_FALSE(lease.empty()) << relay.id();
        pending_leases.push_back(lease);
        relay.process().signal(SIGKILL);
        ASSERT_TRUE(relay.process().wait_exit().has_value());
        up_[event.relay] = false;
        break;
      }
      case Action::freeze: {
        const auto lease = lease_of(relay);
        ASSERT_FALSE(lease.empty()) << relay.id();
        relay.process().signal(SIGSTOP);
        // Held until etcd has dropped its lease: the others take its channels meanwhile.
        const bool expired = eventually([&] { return lease_expired(lease); }, 20s);
        relay.process().signal(SIGCONT);
        ASSERT_TRUE(expired) << relay.id() << " lease " << lease;
        break;
      }
      case Action::term:
        relay.process().signal(SIGTERM);
        ASSERT_TRUE(relay.process().wait_exit(20s).has_value());
        up_[event.relay] = false;
        break;
      case Action::restart:
        relay.restart();
        up_[event.relay] = true;
        break;
    }
    if (e + 1 < events.size() && events[e + 1].at_once) {
      records.push_back(record);
      continue;
    }
    ASSERT_TRUE(eventually(
        [&] {
          return std::all_of(pending_leases.begin(), pending_leases.end(),
                             [&](const auto& lease) { return lease_expired(lease); });
        },
        20s));
    pending_leases.clear();
    ASSERT_TRUE(eventually([&] { return settled(); }, 30s)) << "after event " << e + 1;
    record.settled_s = seconds_since(at);
    const auto settled_at = Clock::now();
    record.recovered = eventually(
        [&] {
          return std::all_of(lanes.begin(), lanes.end(), [&](const auto& lane) {
            return !up_[lane->responder_relay] || !up_[lane->requester_relay] ||
                   lane->last_ok_started.load() >= ticks(settled_at);
          });
        },
        30s);
    record.recovered_s = seconds_since(settled_at);
    // The channels have settled too: each on one relay, under that relay's claim.
    if (!eventually([&] { return misplaced(channel_ids).empty(); }, 10s)) {
      record.misplaced = misplaced(channel_ids);
    }
    records.push_back(record);
  }
  const auto ok_at_end = tally.ok.load();
  traffic.stop();

  // Every channel works again: served by one relay, its three peers connected and seeing each
  // other there, and a last request of 1 MiB comes back whole.
  // A request that fails with a clear status (a relay fenced by a loaded machine, say) is
  // tried again, up to three times in all; the retries are printed. Wrong bytes are never
  // retried: they fail the run.
  std::size_t final_ok = 0;
  std::size_t final_retries = 0;
  for (auto& lane : lanes) {
    client::Outcome outcome{Status::cancelled, 0, "not sent"};
    std::vector<std::uint8_t> body(kMaxPayload);
    fill_pattern(body, 99, lane->index);
    std::vector<std::uint8_t> response;
    for (int attempt = 0; attempt < 3 && !outcome.ok(); ++attempt) {
      if (attempt > 0) {
        ++final_retries;
        std::printf("final round: channel %zu: %s; again\n", lane->index,
                    outcome.describe().c_str());
      }
      const bool ready = eventually(
          [&] {
            return checker.serving(lane->index) == 1 &&
                   lane->requester->state() == client::ConnectionState::connected &&
                   lane->responder->state() == client::ConnectionState::connected &&
                   lane->idle->state() == client::ConnectionState::connected &&
                   sees(*lane->requester, {*lane->responder, *lane->idle}) &&
                   sees(*lane->responder, {*lane->requester, *lane->idle});
          },
          30s);
      EXPECT_TRUE(ready) << "channel " << lane->index;
      client::StreamOptions options;
      options.deadline = kDeadline;
      outcome = lane->requester->send(client::Target::to(lane->responder->peer_id()), body,
                                      response, options);
      if (outcome.ok() && response != body) tally.corrupted.fetch_add(1);
    }
    EXPECT_TRUE(outcome.ok()) << "channel " << lane->index << ": " << outcome.describe();
    EXPECT_TRUE(response == body) << "channel " << lane->index;
    final_ok += outcome.ok() && response == body ? 1 : 0;
  }
  checker.stop();

  std::printf("churn: %zu events, %zu channels, lease TTL 1 s, request deadline %.0f s\n",
              records.size(), lanes.size(), std::chrono::duration<double>(kDeadline).count());
  for (std::size_t e = 0; e < records.size(); ++e) {
    const auto& r = records[e];
    const auto ok_after = (e + 1 < records.size() ? records[e + 1].ok_at : ok_at_end) - r.ok_at;
    std::printf("  %2zu. %-32s r%zu%s", e + 1, action_name(r.event.action), r.event.relay + 1,
                r.event.at_once ? " (at once)" : "");
    if (e + 1 < records.size() && records[e + 1].event.at_once) {
      std::printf("\n");
      continue;
    }
    std::printf(": settled %.2f s, channels served again %s %.2f s, %llu requests OK\n",
                r.settled_s, r.recovered ? "in" : "NOT in", r.recovered_s,
                static_cast<unsigned long long>(ok_after));
    if (!r.misplaced.empty()) std::printf("      MISPLACED: %s\n", r.misplaced.c_str());
  }
  std::uint64_t errors = 0;
  {
    std::lock_guard lock(tally.mutex);
    for (const auto& [kind, count] : tally.errors) errors += count;
  }
  std::printf(
      "requests: %llu OK (%.1f MiB echoed and compared), %llu errors, %llu corrupted, "
      "%llu hung\n",
      static_cast<unsigned long long>(tally.ok.load()),
      static_cast<double>(tally.bytes.load()) / (1 << 20), static_cast<unsigned long long>(errors),
      static_cast<unsigned long long>(tally.corrupted.load()),
      static_cast<unsigned long long>(tally.hung.load()));
  {
    std::lock_guard lock(tally.mutex);
    for (const auto& [kind, count] : tally.errors) {
      std::printf("  %-36s %6llu  e.g. \"%s\"\n", kind.c_str(),
                  static_cast<unsigned long long>(count), tally.examples[kind].c_str());
    }
  }
  const auto doubles = checker.found();
  std::printf("two-owner moments: %zu in %d polls of every relay\n", doubles.size(),
              checker.rounds());
  for (std::size_t i = 0; i < doubles.size() && i < 10; ++i) {
    std::printf("  channel %zu on r%zu and r%zu at %.3f s\n", doubles[i].channel,
                doubles[i].relay + 1, doubles[i].other + 1,
                std::chrono::duration<double>(doubles[i].at - began).count());
  }
  std::printf("final round: %zu of %zu channels OK (%zu retried); churn took %.1f s\n", final_ok,
              lanes.size(), final_retries, seconds_since(began));

  EXPECT_EQ(tally.corrupted.load(), 0U);
  EXPECT_EQ(tally.hung.load(), 0U);
  EXPECT_EQ(doubles.size(), 0U);
  EXPECT_EQ(final_ok, lanes.size());
  // Faults of the relay or the client, never of churn.
  EXPECT_EQ(tally.error_count(Status::protocol_error), 0U);
  EXPECT_EQ(tally.error_count(Status::internal), 0U);
  for (std::size_t e = 0; e < records.size(); ++e) {
    if (e + 1 < records.size() && records[e + 1].event.at_once) continue;
    EXPECT_TRUE(records[e].recovered) << "event " << e + 1;
    EXPECT_EQ(records[e].misplaced, "") << "event " << e + 1;
    const auto ok_after =
        (e + 1 < records.size() ? records[e + 1].ok_at : ok_at_end) - records[e].ok_at;
    EXPECT_GT(ok_after, 0U) << "event " << e + 1;
  }
}

}  // namespace
}  // namespace switchboard::test
