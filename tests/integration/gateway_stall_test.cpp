// A gRPC receiver that stops reading holds no broadcast back for longer than the timeout.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "support/clients.hpp"
#include "support/receivers.hpp"
#include "support/relay.hpp"
#include "support/stall.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard {
namespace {

namespace pb = ::switchboard::v1;
using namespace std::chrono_literals;

TEST(GatewayStall, RespondPeerThatStopsReadingIsDroppedFromEachBroadcast) {
  const auto limits = test::stall_limits();
  test::InProcessRelay relay{limits};
  test::BroadcastScene scene(relay.port());
  const auto& channel = scene.channel;
  auto& sender = scene.sender;
  const auto& baseline = scene.baseline;
  ASSERT_TRUE(baseline.outcome.ok()) << baseline.outcome.describe();

  // A gRPC Respond peer joins, reads its welcome, then reads nothing more.
  auto grpc_channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(relay.server().grpc_port()),
                                          grpc::InsecureChannelCredentials());
  auto stub = pb::SwitchboardService::NewStub(grpc_channel);
  grpc::ClientContext context;
  auto respond = stub->Respond(&context);
  pb::RespondRequest join;
  join.mutable_join()->set_channel(channel.to_string());
  ASSERT_TRUE(respond->Write(join));
  pb::RespondResponse in;
  ASSERT_TRUE(respond->Read(&in) && in.has_joined());
  const auto stalled_id = Uuid::parse(in.joined().peer_id());
  ASSERT_TRUE(stalled_id);
  ASSERT_TRUE(respond->Read(&in) && in.has_presence());
  ASSERT_TRUE(test::eventually([&] {
    const auto members = sender.client.peers();
    return std::find(members.begin(), members.end(), *stalled_id) != members.end();
  }));

  constexpr int kBroadcasts = 3;
  for (int i = 0; i < kBroadcasts; ++i) {
    test::Checksum sent;
    const auto result = test::timed_broadcast(sender.client, sent);
    ASSERT_TRUE(result.outcome.ok()) << "broadcast " << i << ": " << result.outcome.describe();
    EXPECT_EQ(result.outcome.delivered, 2u) << "broadcast " << i;
    EXPECT_EQ(result.outcome.dropped, 1u) << "broadcast " << i;
    test::expect_within_bound(result.elapsed, baseline.elapsed, limits);
  }
  EXPECT_EQ(relay.counters().grpc.slow_consumer_drops.load(),
            static_cast<std::uint64_t>(kBroadcasts));

  // Reading again, the peer finds each broadcast ended by SLOW_CONSUMER.
  int resets = 0;
  while (resets < kBroadcasts && respond->Read(&in)) {
    if (in.has_reset()) {
      EXPECT_EQ(in.reset().status(), pb::STATUS_SLOW_CONSUMER);
      ++resets;
    }
  }
  EXPECT_EQ(resets, kBroadcasts);
  context.TryCancel();
}

}  // namespace
}  // namespace switchboard
