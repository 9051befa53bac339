// Peers of one channel entering a three-relay cluster through different relays: redirects to
// the relay that serves the channel, a drain that moves them on, a killed owner, and what old
// clients are told, and where gRPC callers are told the channel is.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "cluster/placement.hpp"
#include "support/clients.hpp"
#include "support/raw_peer.hpp"
#include "switchboard/channels.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"
#include "switchboard/wire/codec.hpp"
#include "tests/cluster/poll.hpp"
#include "tests/cluster/relay_process.hpp"
#include "tests/cluster/serving_checker.hpp"

namespace switchboard::test {
namespace {

using namespace std::chrono_literals;
using client::BlockingClient;
using client::BlockingStream;
using client::ConnectionEvent;
using client::Target;

// Peers of many channels on one io_context thread (a BlockingClient each would cost a thread
// each): connected through given relays with reconnect on, each remembering when it last
// reconnected.
class PeerCrowd {
public:
  using Clock = std::chrono::steady_clock;

  PeerCrowd(std::vector<Uuid> channels, std::size_t per_channel,
            const std::function<client::ConnectOptions(std::size_t, const Uuid&)>& options_for)
      : channels_(std::move(channels)),
        per_channel_(per_channel),
        members_(channels_.size() * per_channel),
        work_(boost::asio::make_work_guard(io_)),
        runner_([this] { io_.run(); }) {
    for (std::size_t i = 0; i < members_.size(); ++i) {
      boost::asio::co_spawn(
          io_,
          [this, i, options = options_for(i, channels_[i / per_channel_])]() mutable
          -> boost::asio::awaitable<void> {
            client::Outcome outcome;
            auto connection = co_await client::Connection::connect(io_.get_executor(),
                                                                   std::move(options), outcome);
            if (!connection) {
              failed_.fetch_add(1);
              co_return;
            }
            connection->on_connection_event([this, i](const ConnectionEvent& event) {
              if (event.kind == ConnectionEvent::Kind::reconnected) members_[i].back = Clock::now();
            });
            members_[i].connection = std::move(connection);
            connected_.fetch_add(1);
          },
          boost::asio::detached);
    }
  }
  ~PeerCrowd() {
    on_io([this] {
      for (auto& m : members_) {
        if (m.connection) m.connection->close();
      }
      return true;
    });
    work_.reset();
    runner_.join();
    // The connections' timers belong to io_: they go before it does.
    members_.clear();
  }
  PeerCrowd(const PeerCrowd&) = delete;
  PeerCrowd& operator=(const PeerCrowd&) = delete;

  std::size_t size() const { return members_.size(); }
  bool all_connected() const { return connected_.load() + failed_.load() == members_.size(); }
  std::size_t failed() const { return failed_.load(); }
  /// Every peer connected and seeing exactly the other peers of its channel.
  bool exact_presence() {
    return on_io([this] {
      for (std::size_t i = 0; i < members_.size(); ++i) {
        auto seen = members_[i].connection->peers();
        std::vector<Uuid> expected;
        const auto first = i / per_channel_ * per_channel_;
        for (std::size_t j = first; j < first + per_channel_; ++j) {
          if (j != i) expected.push_back(members_[j].connection->peer_id());
        }
        std::sort(seen.begin(), seen.end());
        std::sort(expected.begin(), expected.end());
        if (seen != expected ||
            members_[i].connection->state() != client::ConnectionState::connected) {
          return false;
        }
      }
      return true;
    });
  }
  /// Every peer reconnected after `since`.
  bool all_back_since(Clock::time_point since) {
    return on_io([&] {
      return std::all_of(members_.begin(), members_.end(),
                         [&](const Member& m) { return m.back > since; });
    });
  }
  /// "p50 X s, p99 Y s, max Z s" of the time each peer took to reconnect after `since`.
  std::string spread_since(Clock::time_point since) {
    auto seconds = on_io([&] {
      std::vector<double> out;
      for (const auto& m : members_) {
        out.push_back(std::chrono::duration<double>(m.back - since).count());
      }
      return out;
    });
    std::sort(seconds.begin(), seconds.end());
    const auto at = [&](double q) {
      return seconds[std::min(seconds.size() - 1,
                              static_cast<std::size_t>(q * static_cast<double>(seconds.size())))];
    };
    char text[128];
    std::snprintf(text, sizeof text, "p50 %.3f s, p99 %.3f s, max %.3f s", at(0.50), at(0.99),
                  seconds.back());
    return text;
  }

private:
  struct Member {
    std::shared_ptr<client::Connection> connection;
    Clock::time_point back{};  // when it last reconnected
  };
  // Every look at a connection happens on its thread.
  template <class Task>
  std::invoke_result_t<std::decay_t<Task>&> on_io(Task&& task) {
    std::packaged_task<std::invoke_result_t<std::decay_t<Task>&>()> packaged(
        std::forward<Task>(task));
    auto result = packaged.get_future();
    boost::asio::post(io_, [&packaged] { packaged(); });
    return result.get();
  }

  std::vector<Uuid> channels_;
  std::size_t per_channel_;
  std::vector<Member> members_;
  std::atomic<std::size_t> connected_{0};
  std::atomic<std::size_t> failed_{0};
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread runner_;
};

class ClusterRouting : public ::testing::Test {
protected:
  void SetUp() override {
    // A short keepalive: peers of a frozen relay notice within a second.
    for (int n = 1; n <= 3; ++n) {
      relays_.push_back(std::make_unique<Relay>(etcd_, n, "1s",
                                                std::vector<std::string>{"--keepalive-ms", "300"}));
    }
    ASSERT_TRUE(eventually([&] {
      for (const auto& relay : relays_) {
        if (relay->members() != 3) return false;
      }
      return true;
    }));
  }

  /// The relay placement makes the owner of `channel`, and one that is not.
  Relay& owner_of(const Uuid& channel) { return *relays_.at(owner_index(channel)); }
  Relay& other_than_owner(const Uuid& channel, int skip = 0) {
    const auto owner = owner_index(channel);
    for (std::size_t i = 0; i < relays_.size(); ++i) {
      if (i != owner && skip-- == 0) return *relays_[i];
    }
    throw std::logic_error("no such relay");
  }
  std::size_t owner_index(const Uuid& channel) const {
    const std::array<std::string, 3> ids{"r1", "r2", "r3"};
    const auto owner = cluster::owner_of(channel, ids);
    return static_cast<std::size_t>(owner.back() - '1');
  }

  static client::ConnectOptions through(const Relay& relay, const Uuid& channel,
                                        bool accept_requests = false, bool reconnect = false,
                                        std::chrono::milliseconds connect_timeout = 10s) {
    auto options = options_for(relay.port(), channel, accept_requests);
    options.host = relay.host();
    options.reconnect.enabled = reconnect;
    options.reconnect.initial_delay = 20ms;
    options.reconnect.max_delay = 200ms;
    options.connect_timeout = connect_timeout;
    return options;
  }

  /// 300 peers of 100 channels, all served by r1, connected through r2 and r3, reconnect on.
  std::unique_ptr<PeerCrowd> crowd_on_r1() {
    std::vector<Uuid> channels;
    while (channels.size() < 100) {
      const auto channel = Uuid::random();
      if (owner_index(channel) == 0) channels.push_back(channel);
    }
    return std::make_unique<PeerCrowd>(std::move(channels), 3,
                                       [this](std::size_t i, const Uuid& c) {
                                         return through(*relays_[1 + i % 2], c, true, true);
                                       });
  }

  static double peers_on(const Relay& relay) {
    return relay.metric("switchboard_peers").value_or(-1);
  }
  static double redirects(const Relay& relay) {
    return relay.metric("switchboard_redirects_total{door=\"native\"}").value_or(0);
  }

  EtcdServer etcd_;
  std::vector<std::unique_ptr<Relay>> relays_;
};

std::vector<std::uint8_t> pattern(std::size_t size, std::uint64_t seed) {
  std::vector<std::uint8_t> bytes(size);
  fill_pattern(bytes, seed, 0);
  return bytes;
}

TEST_F(ClusterRouting, PeersEnteringThroughEveryRelayMeetOnTheOwner) {
  const Uuid channel = Uuid::random();
  Relay& owner = owner_of(channel);
  Relay& first = other_than_owner(channel, 0);
  Relay& second = other_than_owner(channel, 1);

  BlockingClient responder(through(first, channel, true));
  responder.serve(test::echo);
  std::atomic<int> broadcasts_seen{0};
  Checksum broadcast_sum;
  responder.on_broadcast([&](BlockingStream& stream) {
    for (;;) {
      auto chunk = stream.read_chunk();
      if (chunk.size == 0) break;
      broadcast_sum.update(chunk.bytes());
    }
    broadcasts_seen.fetch_add(1);
  });
  BlockingClient via_second(through(second, channel));
  BlockingClient via_owner(through(owner, channel));

  // All three are peers of one channel on one relay: each sees the other two.
  ASSERT_TRUE(eventually([&] {
    return via_second.peers().size() == 2 && via_owner.peers().size() == 2 &&
           responder.peers().size() == 2;
  }));
  EXPECT_EQ(peers_on(owner), 3);
  EXPECT_EQ(peers_on(first), 0);
  EXPECT_EQ(peers_on(second), 0);
  EXPECT_GE(redirects(first), 1);
  EXPECT_GE(redirects(second), 1);
  EXPECT_EQ(redirects(owner), 0);

  // 64 MiB through the owner from a peer that entered elsewhere, checksummed both ways.
  const auto body = pattern(64U << 20, 7);
  std::vector<std::uint8_t> response;
  const auto outcome = via_second.send(Target::to(responder.peer_id()), body, response);
  ASSERT_TRUE(outcome.ok()) << outcome.describe();
  Checksum sent;
  sent.update(body);
  Checksum echoed;
  echoed.update(response);
  EXPECT_EQ(echoed.size(), sent.size());
  EXPECT_EQ(echoed.value(), sent.value());

  // A broadcast from the peer that entered at the owner reaches the responder.
  auto broadcast = via_owner.broadcast();
  const auto chunk = pattern(1U << 20, 9);
  ASSERT_TRUE(broadcast.write(chunk, true).ok());
  ASSERT_TRUE(broadcast.result().ok());
  ASSERT_TRUE(eventually([&] { return broadcasts_seen.load() == 1; }));
  Checksum expected;
  expected.update(chunk);
  EXPECT_EQ(broadcast_sum.value(), expected.value());
}

// Memberships that share a TCP connection are redirected one by one: each lane goes to the
// owner of its channel (on a shared connection to that relay), the others stay where they are.
TEST_F(ClusterRouting, SharedConnectionsCarryEachChannelToItsOwner) {
  constexpr std::size_t kChannels = 30;
  std::vector<Uuid> channels;
  std::array<double, 3> owned{};
  for (std::size_t i = 0; i < kChannels; ++i) {
    channels.push_back(Uuid::random());
    owned[owner_index(channels.back())] += 1;
  }
  const auto through_relay = [&](const Relay& relay) {
    client::ChannelsOptions options;
    options.host = relay.host();
    options.port = relay.port();
    EXPECT_TRUE(options.share_connections);
    return options;
  };
  client::Channels responders(through_relay(*relays_[0]));
  client::Channels requesters(through_relay(*relays_[1]));
  for (const auto& channel : channels) {
    client::JoinOptions join;
    join.accept_requests = true;
    responders.join(channel, join)->serve([](const std::vector<std::uint8_t>& request) {
      return request;
    });
    requesters.join(channel);
  }
  ASSERT_EQ(responders.wait_all_joined(std::chrono::seconds(60)), kChannels);
  ASSERT_EQ(requesters.wait_all_joined(std::chrono::seconds(60)), kChannels);

  // Every membership is on its channel's owner: two peers per channel it owns.
  for (std::size_t i = 0; i < relays_.size(); ++i) {
    EXPECT_TRUE(eventually([&] { return peers_on(*relays_[i]) == 2 * owned[i]; }))
        << "r" << i + 1 << ": " << peers_on(*relays_[i]) << " peers, owns " << owned[i];
  }
  // Only the lanes of channels another relay owns were redirected.
  EXPECT_EQ(redirects(*relays_[0]), kChannels - owned[0]);
  EXPECT_EQ(redirects(*relays_[1]), kChannels - owned[1]);
  EXPECT_EQ(redirects(*relays_[2]), 0);

  std::vector<std::future<client::Response>> responses;
  for (const auto& channel : channels) {
    const auto text = channel.to_string();
    responses.push_back(requesters.find(channel)->request(
        Target::any(), std::vector<std::uint8_t>(text.begin(), text.end())));
  }
  for (std::size_t i = 0; i < kChannels; ++i) {
    ASSERT_EQ(responses[i].wait_for(30s), std::future_status::ready);
    const auto response = responses[i].get();
    ASSERT_TRUE(response.outcome.ok()) << response.outcome.describe();
    EXPECT_EQ(std::string(response.body.begin(), response.body.end()), channels[i].to_string());
  }
}

TEST_F(ClusterRouting, AVersionOneClientIsToldWhereTheChannelIs) {
  const Uuid channel = Uuid::random();
  Relay& owner = owner_of(channel);
  Relay& other = other_than_owner(channel);
  RawPeer raw(other.port(), 0, other.host().c_str());
  wire::Hello hello;
  hello.version = 1;
  hello.channel = channel;
  hello.max_frame = 65536;
  hello.stream_window = 65536;
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello);
  raw.send(bytes);
  const auto frame = raw.expect_type(wire::FrameType::error);
  ASSERT_TRUE(frame.has_value());
  wire::Error error;
  ASSERT_EQ(wire::parse_error(frame->bytes(), error), wire::DecodeError::none);
  EXPECT_EQ(error.status, Status::refused);
  EXPECT_NE(error.message.find(owner.native()), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("cannot follow redirects"), std::string::npos) << error.message;
  EXPECT_TRUE(raw.expect_closed());
}

TEST_F(ClusterRouting, ADrainingOwnerMovesItsPeersToTheNextOwner) {
  const Uuid channel = Uuid::random();
  Relay& owner = owner_of(channel);
  Relay& entry = other_than_owner(channel);
  BlockingClient responder(through(entry, channel, true, true));
  responder.serve(test::echo);
  BlockingClient requester(through(entry, channel, false, true));
  std::atomic<int> reconnected{0};
  requester.on_connection_event([&](const ConnectionEvent& event) {
    if (event.kind == ConnectionEvent::Kind::reconnected) reconnected.fetch_add(1);
  });
  ASSERT_TRUE(eventually([&] { return requester.peers().size() == 1; }));
  ASSERT_EQ(peers_on(owner), 2);

  owner.process().signal(SIGTERM);
  // Both peers land on one surviving relay and see each other again there.
  ASSERT_TRUE(eventually([&] { return reconnected.load() >= 1; }, 20s));
  ASSERT_TRUE(eventually(
      [&] {
        return requester.peers() == std::vector<Uuid>{responder.peer_id()} &&
               responder.peers() == std::vector<Uuid>{requester.peer_id()};
      },
      20s));
  ASSERT_TRUE(owner.process().wait_exit(20s).has_value());
  std::vector<std::uint8_t> response;
  const auto body = pattern(4096, 3);
  const auto outcome = requester.send(Target::to(responder.peer_id()), body, response);
  ASSERT_TRUE(outcome.ok()) << outcome.describe();
  EXPECT_EQ(response, body);
}

TEST_F(ClusterRouting, PeersOfAKilledOwnerComeBackThroughAnyRelay) {
  const Uuid channel = Uuid::random();
  Relay& owner = owner_of(channel);
  Relay& entry = other_than_owner(channel);
  BlockingClient responder(through(entry, channel, true, true));
  responder.serve(test::echo);
  BlockingClient requester(through(entry, channel, false, true));
  ASSERT_TRUE(eventually([&] { return requester.peers().size() == 1; }));

  owner.process().signal(SIGKILL);
  ASSERT_TRUE(owner.process().wait_exit().has_value());
  // After the owner's lease runs out another relay claims the channel; both peers are there
  // with exact presence.
  ASSERT_TRUE(eventually(
      [&] {
        return requester.peers() == std::vector<Uuid>{responder.peer_id()} &&
               responder.peers() == std::vector<Uuid>{requester.peer_id()} &&
               requester.state() == client::ConnectionState::connected;
      },
      20s));
  std::vector<std::uint8_t> response;
  const auto body = pattern(4096, 5);
  const auto outcome = requester.send(Target::to(responder.peer_id()), body, response);
  ASSERT_TRUE(outcome.ok()) << outcome.describe();
  EXPECT_EQ(response, body);
}

// The owner of 300 peers is killed: every peer must come back, on the new owner, seeing exactly
// the other two peers of its channel. The time each took is printed (a benchmark figure, not
// asserted: it depends on the lease TTL and on how loaded this machine is).
TEST_F(ClusterRouting, AKilledOwnersThreeHundredPeersAllComeBackWithExactPresence) {
  auto crowd = crowd_on_r1();
  ASSERT_TRUE(eventually([&] { return crowd->all_connected(); }, 60s));
  ASSERT_EQ(crowd->failed(), 0U);
  ASSERT_TRUE(eventually([&] { return crowd->exact_presence(); }, 30s));
  Relay& owner = *relays_[0];
  ASSERT_EQ(owner.metric("switchboard_peers"), static_cast<double>(crowd->size()));

  const auto killed_at = PeerCrowd::Clock::now();
  owner.process().signal(SIGKILL);
  ASSERT_TRUE(owner.process().wait_exit().has_value());
  ASSERT_TRUE(eventually([&] { return crowd->all_back_since(killed_at); }, 60s));
  ASSERT_TRUE(eventually([&] { return crowd->exact_presence(); }, 30s));
  EXPECT_EQ(relays_[1]->metric("switchboard_peers").value_or(0) +
                relays_[2]->metric("switchboard_peers").value_or(0),
            static_cast<double>(crowd->size()));
  std::printf("failover after kill -9 (lease TTL 1 s, %zu peers): %s\n", crowd->size(),
              crowd->spread_since(killed_at).c_str());
}

// The owner of 300 peers drains (SIGTERM): each channel's peers are redirected to its next
// owner; none is lost, every one is back with exact presence; the time is printed.
TEST_F(ClusterRouting, ADrainingOwnersThreeHundredPeersAllMoveWithExactPresence) {
  auto crowd = crowd_on_r1();
  ASSERT_TRUE(eventually([&] { return crowd->all_connected(); }, 60s));
  ASSERT_EQ(crowd->failed(), 0U);
  ASSERT_TRUE(eventually([&] { return crowd->exact_presence(); }, 30s));
  Relay& owner = *relays_[0];

  const auto drained_at = PeerCrowd::Clock::now();
  owner.process().signal(SIGTERM);
  ASSERT_TRUE(eventually([&] { return crowd->all_back_since(drained_at); }, 60s));
  ASSERT_TRUE(eventually([&] { return crowd->exact_presence(); }, 30s));
  EXPECT_TRUE(owner.process().wait_exit(20s).has_value());
  EXPECT_EQ(relays_[1]->metric("switchboard_peers").value_or(0) +
                relays_[2]->metric("switchboard_peers").value_or(0),
            static_cast<double>(crowd->size()));
  std::printf("drain by SIGTERM (%zu peers moved): %s\n", crowd->size(),
              crowd->spread_since(drained_at).c_str());
}

// A relay frozen past its lease (SIGSTOP): its peers move to a new owner; resumed, it fences
// itself and never serves the channel again. A checker polls what every relay serves
// throughout: at no poll do two relays both have peers on the channel.
TEST_F(ClusterRouting, AFrozenOwnerNeverServesAlongsideTheNewOne) {
  const Uuid channel = Uuid::random();
  Relay& owner = owner_of(channel);
  Relay& entry = other_than_owner(channel);
  // A frozen relay accepts TCP connections it never answers: give up on one sooner.
  BlockingClient responder(through(entry, channel, true, true, 2s));
  responder.serve(test::echo);
  BlockingClient requester(through(entry, channel, false, true, 2s));
  ASSERT_TRUE(eventually([&] { return requester.peers().size() == 1; }));

  // Bounded: the test ends it, and it stops by itself after 2,000 rounds.
  std::vector<std::uint16_t> admin_ports;
  for (const auto& relay : relays_) admin_ports.push_back(relay->admin());
  ServingChecker checker(admin_ports, {channel}, {});
  owner.process().signal(SIGSTOP);
  // The peers notice the silence, and come back on a new owner once the lease is gone.
  ASSERT_TRUE(eventually(
      [&] {
        return requester.peers() == std::vector<Uuid>{responder.peer_id()} &&
               responder.peers() == std::vector<Uuid>{requester.peer_id()} &&
               requester.state() == client::ConnectionState::connected &&
               !owner_of(channel).serves(channel).has_value();
      },
      30s));
  owner.process().signal(SIGCONT);
  EXPECT_TRUE(owner.process().wait_for_output("cluster relay fenced node=" + owner.id()));
  // Registered again, it is the placement owner once more: the channel moves back to it, by
  // claim, once the interim owner has let it go. Wait until every view has it and the channel
  // has settled on one relay with both peers.
  ASSERT_TRUE(eventually(
      [&] {
        int serving = 0;
        for (const auto& relay : relays_) {
          if (relay->members() != 3) return false;
          serving += relay->serves(channel).value_or(false) ? 1 : 0;
        }
        return owner.health().status == 200 && serving == 1 &&
               requester.peers() == std::vector<Uuid>{responder.peer_id()} &&
               responder.peers() == std::vector<Uuid>{requester.peer_id()} &&
               requester.state() == client::ConnectionState::connected &&
               responder.state() == client::ConnectionState::connected;
      },
      30s));
  std::vector<std::uint8_t> response;
  const std::string body = "after the freeze";
  const auto outcome = requester.send(Target::to(responder.peer_id()), as_bytes(body), response);
  ASSERT_TRUE(outcome.ok()) << outcome.describe();
  EXPECT_EQ(std::string(response.begin(), response.end()), body);
  checker.stop();
  EXPECT_GT(checker.rounds(), 0);
  EXPECT_EQ(checker.double_serves(), 0U) << "polls: " << checker.rounds();
}

namespace pb = ::switchboard::v1;

std::unique_ptr<pb::SwitchboardService::Stub> stub_for(const Relay& relay) {
  return pb::SwitchboardService::NewStub(
      grpc::CreateChannel(relay.grpc(), grpc::InsecureChannelCredentials()));
}

TEST_F(ClusterRouting, GrpcCallersLocateAChannelAndMeetNativePeersOnTheOwner) {
  const Uuid channel = Uuid::random();
  Relay& owner = owner_of(channel);
  Relay& other = other_than_owner(channel);
  // A native responder that entered through another relay lives on the owner.
  BlockingClient responder(through(other, channel, true));
  responder.serve(test::echo);

  // Asked on a relay that does not serve the channel, gRPC answers from the owner (the call is
  // carried there: carry_test.cpp).
  {
    grpc::ClientContext context;
    pb::ListPeersRequest request;
    request.set_channel(channel.to_string());
    pb::ListPeersResponse response;
    ASSERT_TRUE(stub_for(other)->ListPeers(&context, request, &response).ok());
    ASSERT_EQ(response.peers_size(), 1);
    EXPECT_EQ(response.peers(0), responder.peer_id().to_string());
  }
  // Locate names the owner from any relay, and says "here" on the owner itself.
  for (const auto* relay : {&other, &owner}) {
    grpc::ClientContext context;
    pb::LocateRequest request;
    request.set_channel(channel.to_string());
    pb::LocateResponse response;
    ASSERT_TRUE(stub_for(*relay)->Locate(&context, request, &response).ok());
    if (relay == &owner) {
      EXPECT_TRUE(response.here());
    } else {
      EXPECT_FALSE(response.here());
      EXPECT_EQ(response.node_id(), owner.id());
      EXPECT_EQ(response.grpc_address(), owner.grpc());
      EXPECT_EQ(response.native_address(), owner.native());
      EXPECT_GT(response.revision(), 0U);
    }
  }
  // On the owner, a gRPC caller sees the native peer and sends it a request.
  auto stub = stub_for(owner);
  {
    grpc::ClientContext context;
    pb::ListPeersRequest request;
    request.set_channel(channel.to_string());
    pb::ListPeersResponse response;
    ASSERT_TRUE(stub->ListPeers(&context, request, &response).ok());
    ASSERT_EQ(response.peers_size(), 1);
    EXPECT_EQ(response.peers(0), responder.peer_id().to_string());
  }
  grpc::ClientContext context;
  auto call = stub->Send(&context);
  pb::SendRequest open;
  open.mutable_open()->set_channel(channel.to_string());
  open.mutable_open()->set_target(responder.peer_id().to_string());
  open.mutable_open()->set_data("across the cluster");
  ASSERT_TRUE(call->Write(open));
  call->WritesDone();
  std::string echoed;
  pb::SendResponse in;
  while (call->Read(&in)) echoed += in.chunk().data();
  ASSERT_TRUE(call->Finish().ok());
  EXPECT_EQ(echoed, "across the cluster");
}

}  // namespace
}  // namespace switchboard::test
