// Integration tests of client::Channels: one object in hundreds of channels of a real relay
// process, requests served per channel by another object, paced joins, leaving, and shared
// connections over mutual TLS.
#include "switchboard/channels.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/child_server.hpp"
#include "support/cut_proxy.hpp"
#include "support/test_pki.hpp"
#include "switchboard/client.hpp"
#include "switchboard/wire/frame.hpp"

namespace switchboard {
namespace {

using client::Channel;
using client::Channels;
using client::ChannelsOptions;
using client::JoinOptions;
using client::Target;
using test::ChildServer;
using Clock = std::chrono::steady_clock;

const std::string kServer = SWITCHBOARD_SERVER_BINARY;

// Polls `condition` until it holds or `timeout` passes (relay counters have no event to await).
template <typename F>
bool eventually(F condition, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto give_up = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::vector<std::uint8_t> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }

class ChannelsTest : public ::testing::Test {
protected:
  void start(std::vector<std::string> extra = {}) {
    // Two objects of a thousand connections each, in this process and in the relay.
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    std::vector<std::string> args{"--listen",       "127.0.0.1:0", "--grpc-listen", "",
                                  "--admin-listen", "127.0.0.1:0", "--log-level",   "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    relay_ = std::make_unique<ChildServer>(kServer, args);
    ASSERT_TRUE(relay_->wait_listening(true)) << relay_->err();
    port_ = relay_->port("core");
    admin_ = relay_->port("admin");
  }

  double metric(const std::string& series) {
    const auto response = test::http_request(admin_, "GET", "/metrics");
    return test::metric_value(response.body, series).value_or(-1);
  }
  double open_connections() { return metric("switchboard_connections_open{door=\"native\"}"); }

  ChannelsOptions options() {
    ChannelsOptions o;
    o.port = port_;
    return o;
  }

  std::unique_ptr<ChildServer> relay_;
  std::uint16_t port_ = 0;
  std::uint16_t admin_ = 0;
};

class ChannelsBothWays : public ChannelsTest, public ::testing::WithParamInterface<bool> {};

// 1,000 channels from one object (the relay's default per-address throttle in place), each
// served by another object: exact presence per channel, a request answered on each by that
// channel's responder, then leave and close release every connection on the relay. With shared
// connections (the default) each object's 1,000 memberships are lanes of one TCP connection;
// without, 1,000 connections paced under the throttle.
TEST_P(ChannelsBothWays, AThousandChannelsFromOneObject) {
  constexpr int kChannels = 1000;
  const bool shared = GetParam();
  // Every lane counts as a connection, and so does each of an object's shared connections: one
  // for each relay thread (a thousand random channels all on one thread: one chance in 2^999).
  const int carriers = shared ? 2 : 0;
  start({"--threads", "2"});
  std::vector<Uuid> ids;
  for (int i = 0; i < kChannels; ++i) ids.push_back(Uuid::random());

  auto o = options();
  o.share_connections = shared;
  const auto t0 = Clock::now();
  auto responders = std::make_unique<Channels>(o);
  for (const auto& id : ids) {
    JoinOptions join;
    join.accept_requests = true;
    auto channel = responders->join(id, join);
    channel->serve([id](const std::vector<std::uint8_t>& request) {
      auto response = bytes_of(id.to_string() + ":");
      response.insert(response.end(), request.begin(), request.end());
      return response;
    });
  }
  auto requesters = std::make_unique<Channels>(o);
  for (const auto& id : ids) requesters->join(id);
  EXPECT_EQ(responders->wait_all_joined(std::chrono::seconds(120)), kChannels);
  EXPECT_EQ(requesters->wait_all_joined(std::chrono::seconds(120)), kChannels);
  const auto joined_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::printf("joined 2 x %d channels (%s) in %lld ms; relay throttled %.0f connects\n", kChannels,
              shared ? "shared connections" : "a connection each",
              static_cast<long long>(joined_ms),
              metric("switchboard_connections_throttled_total{door=\"native\"}"));
  ASSERT_EQ(responders->size(), static_cast<std::size_t>(kChannels));
  ASSERT_EQ(requesters->size(), static_cast<std::size_t>(kChannels));
  // Connects the throttle turned away may still be closing: their count settles.
  EXPECT_TRUE(eventually([&] { return open_connections() == 2 * (kChannels + carriers); }))
      << open_connections();

  // Exact presence: on every channel each side sees the other and nobody else.
  for (const auto& id : ids) {
    auto mine = requesters->find(id);
    auto theirs = responders->find(id);
    ASSERT_TRUE(mine && theirs);
    ASSERT_TRUE(eventually([&] {
      return mine->peers().size() == 1 && theirs->peers().size() == 1;
    })) << id.to_string();
    EXPECT_EQ(mine->peers(), std::vector<Uuid>{theirs->peer_id()});
    EXPECT_EQ(theirs->peers(), std::vector<Uuid>{mine->peer_id()});
    EXPECT_EQ(mine->state(), client::ConnectionState::connected);
  }

  // A request on each channel, all in flight together, answered by that channel's responder.
  std::vector<std::future<client::Response>> responses;
  for (const auto& id : ids) {
    responses.push_back(requesters->find(id)->request(Target::any(), bytes_of("ping")));
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ASSERT_EQ(responses[i].wait_for(std::chrono::seconds(30)), std::future_status::ready);
    auto response = responses[i].get();
    ASSERT_TRUE(response.outcome.ok()) << response.outcome.describe();
    EXPECT_EQ(response.body, bytes_of(ids[i].to_string() + ":ping"));
  }

  // Leaving one channel: its responder sees the requester go, the relay drops the connection.
  auto left = requesters->find(ids[0]);
  left->leave();
  EXPECT_TRUE(eventually([&] { return responders->find(ids[0])->peers().empty(); }));
  EXPECT_EQ(left->state(), client::ConnectionState::closed);
  EXPECT_EQ(requesters->find(ids[0]), nullptr);
  EXPECT_TRUE(eventually([&] { return open_connections() == 2 * (kChannels + carriers) - 1; }));
  auto after_leave = left->request(Target::any(), bytes_of("late")).get();
  EXPECT_EQ(after_leave.outcome.status, Status::peer_gone);

  // close() and destruction release everything on the relay.
  requesters->close();
  EXPECT_TRUE(eventually([&] { return requesters->size() == 0; }));
  EXPECT_TRUE(eventually([&] { return open_connections() == kChannels + carriers; }));
  responders.reset();
  EXPECT_TRUE(eventually([&] { return open_connections() == 0; })) << open_connections();
  EXPECT_TRUE(eventually([&] { return metric("switchboard_peers") == 0; }));
  requesters.reset();
}

INSTANTIATE_TEST_SUITE_P(Sharing, ChannelsBothWays, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& param) {
                           return param.param ? "Shared" : "OwnConnections";
                         });

// Handlers per channel: presence and broadcast handlers set before the join (presence) and
// after it (broadcasts) each see their own channel's events only.
TEST_F(ChannelsTest, PresenceAndBroadcastHandlersPerChannel) {
  constexpr int kChannels = 20;
  start();
  std::vector<Uuid> ids;
  for (int i = 0; i < kChannels; ++i) ids.push_back(Uuid::random());
  Channels listeners(options());
  std::mutex mutex;
  std::map<Uuid, std::vector<Uuid>> joined_seen;  // channel -> peers seen joining
  std::map<Uuid, std::string> received;           // channel -> broadcast bodies
  for (const auto& id : ids) {
    auto channel = listeners.join(id);
    channel->on_presence([&, id](const client::PresenceChange& change) {
      std::lock_guard lock(mutex);
      if (change.joined) joined_seen[id].push_back(change.peer);
    });
  }
  ASSERT_EQ(listeners.wait_all_joined(std::chrono::seconds(30)), kChannels);
  for (const auto& id : ids) {
    listeners.find(id)->on_broadcast([&, id](std::shared_ptr<client::Stream> message) {
      while (auto chunk = message->try_read()) {
        std::lock_guard lock(mutex);
        received[id].append(reinterpret_cast<const char*>(chunk->data), chunk->size);
        if (chunk->size == 0) return;
      }
    });
  }
  Channels senders(options());
  for (const auto& id : ids) senders.join(id);
  ASSERT_EQ(senders.wait_all_joined(std::chrono::seconds(30)), kChannels);
  for (const auto& id : ids) {
    auto sender = senders.find(id);
    ASSERT_TRUE(eventually([&] {
      std::lock_guard lock(mutex);
      return joined_seen[id] == std::vector<Uuid>{sender->peer_id()};
    })) << id.to_string();
    ASSERT_TRUE(eventually([&] { return sender->peers().size() == 1; }));
    auto summary = sender->broadcast(bytes_of("to " + id.to_string())).get();
    EXPECT_TRUE(summary.ok()) << summary.describe();
    EXPECT_EQ(summary.delivered, 1u);
  }
  for (const auto& id : ids) {
    EXPECT_TRUE(eventually([&] {
      std::lock_guard lock(mutex);
      return received[id] == "to " + id.to_string();
    })) << id.to_string();
  }
}

// The channels of one object share one TCP connection per relay thread; when they are cut,
// every channel comes back on new shared connections, with its peer id, and serves requests
// again.
TEST_F(ChannelsTest, ACutSharedConnectionRejoinsEveryChannel) {
  constexpr int kChannels = 30;
  start({"--threads", "2"});
  test::CutProxy proxy(port_);
  std::vector<Uuid> ids;
  for (int i = 0; i < kChannels; ++i) ids.push_back(Uuid::random());
  std::mutex mutex;
  std::map<Uuid, std::vector<client::PresenceChange>> seen;  // channel -> what its responder saw
  Channels responders(options());
  for (const auto& id : ids) {
    JoinOptions join;
    join.accept_requests = true;
    auto channel = responders.join(id, join);
    channel->on_presence([&, id](const client::PresenceChange& change) {
      std::lock_guard lock(mutex);
      seen[id].push_back(change);
    });
    channel->serve([](const std::vector<std::uint8_t>& request) { return request; });
  }
  auto o = options();
  o.port = proxy.port();
  o.reconnect.initial_delay = std::chrono::milliseconds(20);
  o.reconnect.max_delay = std::chrono::milliseconds(200);
  Channels requesters(o);
  for (const auto& id : ids) requesters.join(id);
  ASSERT_EQ(responders.wait_all_joined(std::chrono::seconds(30)), kChannels);
  ASSERT_EQ(requesters.wait_all_joined(std::chrono::seconds(30)), kChannels);
  // Thirty memberships, one TCP connection for each of the relay's two threads (thirty random
  // channels all on one thread: one chance in 2^29).
  EXPECT_EQ(proxy.accepted(), 2u);

  const auto ask_everyone = [&](const std::string& text) {
    std::vector<std::future<client::Response>> responses;
    for (const auto& id : ids) {
      responses.push_back(requesters.find(id)->request(Target::any(), bytes_of(text)));
    }
    for (auto& response : responses) {
      ASSERT_EQ(response.wait_for(std::chrono::seconds(30)), std::future_status::ready);
      const auto answer = response.get();
      ASSERT_TRUE(answer.outcome.ok()) << answer.outcome.describe();
      EXPECT_EQ(answer.body, bytes_of(text));
    }
  };
  ask_everyone("before");
  std::map<Uuid, Uuid> identities;
  for (const auto& id : ids) identities[id] = requesters.find(id)->peer_id();

  proxy.cut();
  // Every responder sees its requester leave, then come back with the same id.
  for (const auto& id : ids) {
    EXPECT_TRUE(eventually([&] {
      std::lock_guard lock(mutex);
      const auto& changes = seen[id];
      const auto left = std::find_if(changes.begin(), changes.end(), [&](const auto& change) {
        return !change.joined && change.peer == identities[id];
      });
      return left != changes.end() && std::any_of(left, changes.end(), [&](const auto& change) {
               return change.joined && change.peer == identities[id];
             });
    })) << id.to_string();
    EXPECT_TRUE(eventually(
        [&] { return requesters.find(id)->state() == client::ConnectionState::connected; }));
  }
  EXPECT_EQ(proxy.accepted(), 4u);  // new shared connections, again one per relay thread
  ask_everyone("after");
}

// A lane rides the shared connection on its channel's relay thread (the MUX answer tells the
// thread count; wire::placement_shard is the rule), so one object keeps a shared connection per
// thread its channels are on. A relay not placing by channel gets one for all.
TEST_F(ChannelsTest, OneSharedConnectionPerRelayThreadItsChannelsUse) {
  constexpr std::uint32_t kThreads = 3;
  std::map<std::uint32_t, std::vector<Uuid>> by_shard;
  while (by_shard[0].size() < 4 || by_shard[2].empty()) {
    const auto id = Uuid::random();
    by_shard[wire::placement_shard(id, kThreads)].push_back(id);
  }
  const std::vector<Uuid> first_thread(by_shard[0].begin(), by_shard[0].begin() + 4);
  const Uuid third_thread = by_shard[2].front();

  for (const bool by_channel : {true, false}) {
    SCOPED_TRACE(by_channel ? "placement by channel" : "round-robin placement");
    start({"--threads", std::to_string(kThreads), "--placement",
           by_channel ? "channel" : "round_robin"});
    Channels channels(options());
    for (const auto& id : first_thread) channels.join(id);
    ASSERT_EQ(channels.wait_all_joined(std::chrono::seconds(30)), 4);
    // Four lanes and the one shared connection that carries them.
    EXPECT_TRUE(eventually([&] { return open_connections() == 5; })) << open_connections();
    channels.join(third_thread);
    ASSERT_EQ(channels.wait_all_joined(std::chrono::seconds(30)), 5);
    const int carriers = by_channel ? 2 : 1;
    EXPECT_TRUE(eventually([&] { return open_connections() == 5 + carriers; }))
        << open_connections();
    channels.close();
    EXPECT_TRUE(eventually([&] { return open_connections() == 0; })) << open_connections();
  }
}

// Unpaced joins against a tight per-address throttle: the relay refuses the excess with
// RESOURCE_EXHAUSTED, and the object retries until every channel is joined.
TEST_F(ChannelsTest, ThrottledJoinsAreRetried) {
  constexpr int kChannels = 60;
  start({"--connect-rate-per-address", "40", "--connect-burst-per-address", "10"});
  auto o = options();
  o.share_connections = false;  // the throttle is about TCP connects
  o.connect_rate = 0;           // unpaced: everything at once
  o.reconnect.initial_delay = std::chrono::milliseconds(50);
  o.reconnect.max_delay = std::chrono::milliseconds(500);
  Channels channels(o);
  for (int i = 0; i < kChannels; ++i) channels.join(Uuid::random());
  EXPECT_EQ(channels.wait_all_joined(std::chrono::seconds(60)), kChannels);
  const auto throttled = metric("switchboard_connections_throttled_total{door=\"native\"}");
  std::printf("relay turned away %.0f connects (retries included); all %d channels joined\n",
              throttled, kChannels);
  EXPECT_GT(throttled, 0);  // the rule under test: refusals happened and were passed
  EXPECT_TRUE(eventually([&] { return open_connections() == kChannels; })) << open_connections();
}

// Paced joins below the same throttle are not refused: the object waits instead.
TEST_F(ChannelsTest, PacedJoinsStayUnderTheThrottle) {
  constexpr int kChannels = 40;
  start({"--connect-rate-per-address", "40", "--connect-burst-per-address", "10"});
  auto o = options();
  o.share_connections = false;  // the pacing is of TCP connects
  o.connect_rate = 20;
  o.connect_burst = 5;
  Channels channels(o);
  const auto t0 = Clock::now();
  for (int i = 0; i < kChannels; ++i) channels.join(Uuid::random());
  EXPECT_EQ(channels.wait_all_joined(std::chrono::seconds(60)), kChannels);
  const auto seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto throttled = metric("switchboard_connections_throttled_total{door=\"native\"}");
  std::printf("%d paced joins in %.2f s; relay throttled %.0f\n", kChannels, seconds, throttled);
  // (40 - 5) connects at 20/s take at least 1.75 s: the pacing held.
  EXPECT_GE(seconds, 1.7);
  EXPECT_TRUE(eventually([&] { return open_connections() == kChannels; })) << open_connections();
}

// A relay that cannot be reached fails the join at once, without retries.
TEST_F(ChannelsTest, UnreachableRelayFailsTheJoin) {
  start();
  auto o = options();
  relay_->signal(SIGKILL);
  ASSERT_TRUE(relay_->wait_exit().has_value());
  Channels channels(o);
  auto channel = channels.join(Uuid::random());
  ASSERT_EQ(channel->joined().wait_for(std::chrono::seconds(20)), std::future_status::ready);
  const auto outcome = channel->wait_joined();
  EXPECT_FALSE(outcome.ok());
  EXPECT_TRUE(outcome.unreachable) << outcome.describe();
  EXPECT_EQ(channel->state(), client::ConnectionState::closed);
  EXPECT_EQ(channels.size(), 0u);
}

// ---- Shared connections over TLS ----

// Client settings trusting the test CA, presenting `who`'s certificate (none when empty).
client::TlsOptions client_tls(const test::TestPki& pki, const std::string& who) {
  client::TlsOptions tls;
  tls.enabled = true;
  tls.ca_file = pki.file("ca.pem");
  if (!who.empty()) {
    tls.cert_file = pki.file(who + ".pem");
    tls.key_file = pki.file(who + ".key");
  }
  return tls;
}

class ChannelsTlsTest : public ChannelsTest {
protected:
  void SetUp() override {
    // Two relay threads: over plain TCP, an object whose channels hash to both keeps two shared
    // connections; a TLS connection is not placed by channel, so it keeps one.
    start({"--threads", "2", "--tls-native", "--tls-cert-file", pki_.file("server.pem"),
           "--tls-key-file", pki_.file("server.key"), "--tls-client-ca-file", pki_.file("ca.pem")});
  }
  ChannelsOptions tls_options(const std::string& who, std::uint16_t port) {
    auto o = options();
    o.port = port;
    o.tls = client_tls(pki_, who);
    return o;
  }

  test::TestPki pki_;
};

// Two objects on a relay that requires client certificates, each in 24 channels: each object's
// memberships are lanes of one TLS connection (24 random channels all on one of two relay
// threads: one chance in 2^23 that plain TCP would need just one too), presence is exact, and
// every channel answers its requests.
TEST_F(ChannelsTlsTest, ChannelsShareOneTlsConnection) {
  constexpr int kChannels = 24;
  test::CutProxy proxy(port_);
  std::vector<Uuid> ids;
  for (int i = 0; i < kChannels; ++i) ids.push_back(Uuid::random());
  Channels responders(tls_options("alice", port_));
  for (const auto& id : ids) {
    JoinOptions join;
    join.accept_requests = true;
    responders.join(id, join)->serve([id](const std::vector<std::uint8_t>& request) {
      auto response = bytes_of(id.to_string() + ":");
      response.insert(response.end(), request.begin(), request.end());
      return response;
    });
  }
  Channels requesters(tls_options("bob", proxy.port()));
  for (const auto& id : ids) requesters.join(id);
  ASSERT_EQ(responders.wait_all_joined(std::chrono::seconds(60)), kChannels);
  ASSERT_EQ(requesters.wait_all_joined(std::chrono::seconds(60)), kChannels);
  EXPECT_EQ(proxy.accepted(), 1u);
  // Every lane counts as a connection, and so does each object's one TLS connection.
  EXPECT_TRUE(eventually([&] { return open_connections() == 2 * (kChannels + 1); }))
      << open_connections();

  std::vector<std::future<client::Response>> responses;
  for (const auto& id : ids) {
    auto mine = requesters.find(id);
    auto theirs = responders.find(id);
    ASSERT_TRUE(eventually([&] { return mine->peers().size() == 1; })) << id.to_string();
    EXPECT_EQ(mine->peers(), std::vector<Uuid>{theirs->peer_id()});
    responses.push_back(mine->request(Target::any(), bytes_of("over tls")));
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ASSERT_EQ(responses[i].wait_for(std::chrono::seconds(30)), std::future_status::ready);
    const auto response = responses[i].get();
    ASSERT_TRUE(response.outcome.ok()) << response.outcome.describe();
    EXPECT_EQ(response.body, bytes_of(ids[i].to_string() + ":over tls"));
  }
  requesters.close();
  responders.close();
  EXPECT_TRUE(eventually([&] { return open_connections() == 0; })) << open_connections();
}

// A shared TLS connection that the relay refuses (no client certificate), or whose relay the
// client does not trust (another CA), fails each of its joins with UNAUTHENTICATED and TLS's
// reason, as a connection of its own would; a channel already joined is not disturbed.
TEST_F(ChannelsTlsTest, RefusedTlsFailsTheJoinsClearly) {
  const auto id = Uuid::random();
  Channels good(tls_options("alice", port_));
  JoinOptions join;
  join.accept_requests = true;
  good.join(id, join)->serve([](const std::vector<std::uint8_t>& request) { return request; });
  ASSERT_EQ(good.wait_all_joined(std::chrono::seconds(30)), 1);

  struct Case {
    std::string name;
    ChannelsOptions options;
    std::string reason;  // in the outcome's message
  };
  std::vector<Case> cases{{"no client certificate", tls_options("", port_), "TLS session"},
                          {"untrusted relay", tls_options("alice", port_), "certificate verify"}};
  cases[1].options.tls.ca_file = pki_.file("rogue-ca.pem");
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    Channels refused(c.options);
    std::vector<std::shared_ptr<Channel>> channels{refused.join(id), refused.join(Uuid::random())};
    for (const auto& channel : channels) {
      ASSERT_EQ(channel->joined().wait_for(std::chrono::seconds(30)), std::future_status::ready);
      const auto outcome = channel->wait_joined();
      EXPECT_EQ(outcome.status, Status::unauthenticated) << outcome.describe();
      EXPECT_NE(outcome.message.find(c.reason), std::string::npos) << outcome.describe();
    }
  }
  Channels requester(tls_options("bob", port_));
  auto asking = requester.join(id);
  ASSERT_TRUE(asking->wait_joined().ok());
  const auto answer = asking->request(Target::any(), bytes_of("still here")).get();
  ASSERT_TRUE(answer.outcome.ok()) << answer.outcome.describe();
  EXPECT_EQ(answer.body, bytes_of("still here"));
  EXPECT_EQ(good.find(id)->peers(), std::vector<Uuid>{asking->peer_id()});
}

// A group shares a TLS connection only between Connections whose TLS settings are the same: a
// client certificate is an identity, so Alice's lanes and Bob's never ride one connection.
TEST_F(ChannelsTlsTest, SharingKeepsTlsIdentitiesApart) {
  test::CutProxy proxy(port_);
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread thread([&] { io.run(); });
  const auto group = client::share_connections(io.get_executor());
  const auto channel = Uuid::random();
  const auto connect = [&](const std::string& who, const Uuid& on) {
    client::ConnectOptions o;
    o.port = proxy.port();
    o.channel = on;
    o.tls = client_tls(pki_, who);
    o.sharing = group;
    return boost::asio::co_spawn(
               io,
               [o]() -> boost::asio::awaitable<
                         std::pair<std::shared_ptr<client::Connection>, client::Outcome>> {
                 client::Outcome outcome;
                 auto connection = co_await client::Connection::connect(
                     co_await boost::asio::this_coro::executor, o, outcome);
                 co_return std::make_pair(std::move(connection), outcome);
               },
               boost::asio::use_future)
        .get();
  };
  auto alice = connect("alice", channel);
  auto bob = connect("bob", channel);
  auto alice_again = connect("alice", Uuid::random());
  for (const auto* joined : {&alice, &bob, &alice_again}) {
    ASSERT_TRUE(joined->second.ok()) << joined->second.describe();
  }
  EXPECT_EQ(proxy.accepted(), 2u);
  // Both of the channel's members are live: each sees the other.
  EXPECT_TRUE(eventually([&] {
    return alice.first->peers() == std::vector<Uuid>{bob.first->peer_id()} &&
           bob.first->peers() == std::vector<Uuid>{alice.first->peer_id()};
  }));
  boost::asio::post(io, [&] {
    alice.first->close();
    bob.first->close();
    alice_again.first->close();
  });
  EXPECT_TRUE(eventually([&] { return open_connections() == 0; })) << open_connections();
  work.reset();
  io.stop();
  thread.join();
}

}  // namespace
}  // namespace switchboard
