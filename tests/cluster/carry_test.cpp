// gRPC callers of a three-relay cluster entering through relays that do not serve their
// channel: every call is carried to the relay that does, bytes and statuses intact, and a caller
// that stops reading holds both relays' memory within bounds.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cluster/placement.hpp"
#include "support/clients.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"
#include "tests/cluster/poll.hpp"
#include "tests/cluster/relay_process.hpp"

namespace switchboard::test {
namespace {

using namespace std::chrono_literals;
using client::BlockingClient;
using client::BlockingStream;
using client::Target;
namespace pb = ::switchboard::v1;

constexpr std::size_t kChunk = 1U << 20;

class CarriedCalls : public ::testing::Test {
protected:
  void SetUp() override {
    for (int n = 1; n <= 3; ++n) relays_.push_back(std::make_unique<Relay>(etcd_, n, "1s"));
    ASSERT_TRUE(eventually([&] {
      for (const auto& relay : relays_) {
        if (relay->members() != 3) return false;
      }
      return true;
    }));
    const std::array<std::string, 3> ids{"r1", "r2", "r3"};
    const auto owner = cluster::owner_of(channel_, ids);
    const auto index = static_cast<std::size_t>(owner.back() - '1');
    owner_ = relays_[index].get();
    for (std::size_t i = 0; i < relays_.size(); ++i) {
      if (i != index) others_.push_back(relays_[i].get());
    }
  }

  client::ConnectOptions through(const Relay& relay, bool accept_requests = false) const {
    auto options = options_for(relay.port(), channel_, accept_requests);
    options.host = relay.host();
    return options;
  }
  static std::unique_ptr<pb::SwitchboardService::Stub> stub_for(const Relay& relay) {
    return pb::SwitchboardService::NewStub(
        grpc::CreateChannel(relay.grpc(), grpc::InsecureChannelCredentials()));
  }
  static double carried(const Relay& relay) {
    return relay.metric("switchboard_cluster_carried_calls_total").value_or(-1);
  }
  static std::string trailer(const grpc::ClientContext& context, const std::string& key) {
    const auto& trailers = context.GetServerTrailingMetadata();
    const auto found = trailers.find(key);
    return found == trailers.end() ? "" : std::string(found->second.data(), found->second.size());
  }

  EtcdServer etcd_;
  std::vector<std::unique_ptr<Relay>> relays_;
  const Uuid channel_ = Uuid::random();
  Relay* owner_ = nullptr;
  std::vector<Relay*> others_;  // the two relays that do not serve channel_
};

std::vector<std::uint8_t> pattern(std::size_t size, std::uint64_t seed) {
  std::vector<std::uint8_t> bytes(size);
  fill_pattern(bytes, seed, 0);
  return bytes;
}

// Streams `body` through a Send call on `stub` to `target`, reading the response meanwhile.
struct SendResult {
  grpc::Status status;
  std::string response;
  std::string switchboard_status;
  std::string served_by;  // initial metadata of a carried call
};
SendResult send_over_grpc(pb::SwitchboardService::Stub& stub, const Uuid& channel,
                          const Uuid& target, const std::vector<std::uint8_t>& body) {
  grpc::ClientContext context;
  auto call = stub.Send(&context);
  SendResult result;
  std::thread reader([&] {
    pb::SendResponse in;
    while (call->Read(&in)) result.response += in.chunk().data();
  });
  pb::SendRequest open;
  open.mutable_open()->set_channel(channel.to_string());
  open.mutable_open()->set_target(target.to_string());
  bool written = call->Write(open);
  for (std::size_t at = 0; written && at < body.size(); at += kChunk) {
    pb::SendRequest chunk;
    chunk.mutable_chunk()->set_data(body.data() + at, std::min(kChunk, body.size() - at));
    written = call->Write(chunk);
  }
  call->WritesDone();
  reader.join();
  result.status = call->Finish();
  const auto& trailers = context.GetServerTrailingMetadata();
  if (auto found = trailers.find("switchboard-status"); found != trailers.end()) {
    result.switchboard_status.assign(found->second.data(), found->second.size());
  }
  const auto& initial = context.GetServerInitialMetadata();
  if (auto found = initial.find("switchboard-served-by"); found != initial.end()) {
    result.served_by.assign(found->second.data(), found->second.size());
  }
  return result;
}

std::size_t resident_bytes(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  std::size_t kib = 0;
  while (status >> key) {
    if (key == "VmRSS:") {
      status >> kib;
      break;
    }
  }
  return kib * 1024;
}

TEST_F(CarriedCalls, EveryRpcThroughANonOwnerReachesTheOwnerIntact) {
  Relay& first = *others_[0];
  Relay& second = *others_[1];
  BlockingClient responder(through(first, true));
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

  // Presence, asked on a relay that does not serve the channel.
  {
    grpc::ClientContext context;
    pb::ListPeersRequest request;
    request.set_channel(channel_.to_string());
    pb::ListPeersResponse response;
    ASSERT_TRUE(stub_for(first)->ListPeers(&context, request, &response).ok());
    ASSERT_EQ(response.peers_size(), 1);
    EXPECT_EQ(response.peers(0), responder.peer_id().to_string());
  }
  // A watcher on the other non-owner sees the snapshot, then a peer joining.
  grpc::ClientContext watch_context;
  pb::WatchPeersRequest watch_request;
  watch_request.set_channel(channel_.to_string());
  auto watch_stub = stub_for(second);
  auto watch = watch_stub->WatchPeers(&watch_context, watch_request);
  pb::WatchPeersResponse update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.update().kind(), pb::PresenceUpdate::KIND_SNAPSHOT);
  ASSERT_EQ(update.update().peers_size(), 1);

  // A gRPC responder joining through a non-owner is a member on the owner.
  auto respond_stub = stub_for(second);
  grpc::ClientContext respond_context;
  auto respond = respond_stub->Respond(&respond_context);
  pb::RespondRequest join;
  join.mutable_join()->set_channel(channel_.to_string());
  ASSERT_TRUE(respond->Write(join));
  pb::RespondResponse joined;
  ASSERT_TRUE(respond->Read(&joined));
  ASSERT_TRUE(joined.has_joined());
  const auto grpc_peer = *Uuid::parse(joined.joined().peer_id());
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.update().kind(), pb::PresenceUpdate::KIND_JOINED);
  ASSERT_EQ(update.update().peers_size(), 1);
  EXPECT_EQ(update.update().peers(0), grpc_peer.to_string());
  watch_context.TryCancel();
  while (watch->Read(&update)) {
  }
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // Echoes every request it gets, chunk by chunk.
  std::thread grpc_responder([&] {
    pb::RespondResponse in;
    while (respond->Read(&in)) {
      const bool start = in.has_start() && !in.start().broadcast();
      if (!start && !in.has_chunk()) continue;
      pb::RespondRequest out;
      auto* chunk = out.mutable_chunk();
      chunk->set_request_id(start ? in.start().id() : in.chunk().id());
      chunk->set_data(start ? in.start().data() : in.chunk().data());
      chunk->set_last(start ? in.start().last() : in.chunk().last());
      if (!respond->Write(out)) break;
    }
  });
  EXPECT_EQ(owner_->metric("switchboard_peers"), 2.0);

  // 64 MiB from a gRPC caller on a non-owner to the native responder, checksummed.
  const auto body = pattern(64U << 20, 3);
  auto sent = send_over_grpc(*stub_for(first), channel_, responder.peer_id(), body);
  ASSERT_TRUE(sent.status.ok()) << sent.status.error_message();
  ASSERT_EQ(sent.response.size(), body.size());
  EXPECT_EQ(sent.served_by, owner_->grpc());  // where to go straight next time
  EXPECT_TRUE(std::equal(body.begin(), body.end(),
                         reinterpret_cast<const std::uint8_t*>(sent.response.data())));

  // 64 MiB from a native peer (entering through the first non-owner) to the carried gRPC
  // responder, checksummed.
  BlockingClient native_sender(through(first));
  std::vector<std::uint8_t> echoed;
  const auto outcome = native_sender.send(Target::to(grpc_peer), body, echoed);
  ASSERT_TRUE(outcome.ok()) << outcome.describe();
  EXPECT_EQ(echoed, body);

  // gRPC to gRPC, both through non-owners.
  const auto small = pattern(3 * kChunk + 17, 5);
  auto across = send_over_grpc(*stub_for(first), channel_, grpc_peer, small);
  ASSERT_TRUE(across.status.ok()) << across.status.error_message();
  EXPECT_EQ(across.response,
            std::string(reinterpret_cast<const char*>(small.data()), small.size()));

  // A broadcast through a non-owner reaches the other members.
  {
    grpc::ClientContext context;
    auto stub = stub_for(second);
    auto call = stub->Broadcast(&context);
    pb::BroadcastRequest open;
    open.mutable_open()->set_channel(channel_.to_string());
    const auto bytes = pattern(kChunk, 9);
    open.mutable_open()->set_data(bytes.data(), bytes.size());
    ASSERT_TRUE(call->Write(open));
    call->WritesDone();
    pb::BroadcastResponse summary;
    ASSERT_TRUE(call->Read(&summary));
    ASSERT_TRUE(call->Finish().ok());
    // The native responder, the gRPC responder and the native sender.
    EXPECT_EQ(summary.summary().delivered() + summary.summary().dropped(), 3U);
    ASSERT_TRUE(eventually([&] { return broadcasts_seen.load() == 1; }));
    Checksum expected;
    expected.update(bytes);
    EXPECT_EQ(broadcast_sum.value(), expected.value());
  }

  // Statuses come back as the owner gives them, with their switchboard-* trailers.
  const Uuid absent = Uuid::random();
  auto refused_far = send_over_grpc(*stub_for(first), channel_, absent, small);
  auto refused_near = send_over_grpc(*stub_for(*owner_), channel_, absent, small);
  EXPECT_FALSE(refused_near.status.ok());
  EXPECT_EQ(refused_far.status.error_code(), refused_near.status.error_code());
  EXPECT_EQ(refused_far.status.error_message(), refused_near.status.error_message());
  EXPECT_EQ(refused_far.switchboard_status, refused_near.switchboard_status);
  EXPECT_FALSE(refused_far.switchboard_status.empty());

  // A call another relay carried here is not carried again: it is told where to go.
  {
    grpc::ClientContext context;
    context.AddMetadata("switchboard-carried-by", "r9");
    pb::ListPeersRequest request;
    request.set_channel(channel_.to_string());
    pb::ListPeersResponse response;
    const auto status = stub_for(first)->ListPeers(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(status.error_message().find(owner_->grpc()), std::string::npos)
        << status.error_message();
  }

  EXPECT_GE(carried(first), 4);   // ListPeers, two Sends and a refused one
  EXPECT_GE(carried(second), 3);  // WatchPeers, Respond, Broadcast
  EXPECT_EQ(carried(*owner_), 0);
  EXPECT_GT(
      first.metric("switchboard_cluster_carried_bytes_total{direction=\"to_owner\"}").value_or(0),
      64.0 * 1024 * 1024);

  // The carried responder leaves when its call ends; the owner sees it go.
  respond->WritesDone();
  grpc_responder.join();
  EXPECT_TRUE(respond->Finish().ok());
  ASSERT_TRUE(eventually([&] {
    const auto peers = responder.peers();
    return std::find(peers.begin(), peers.end(), grpc_peer) == peers.end();
  }));
  EXPECT_EQ(first.metric("switchboard_cluster_carried_calls_open"), 0.0);
  EXPECT_EQ(second.metric("switchboard_cluster_carried_calls_open"), 0.0);
}

TEST_F(CarriedCalls, ACallerThatStopsReadingHoldsBothRelaysMemoryWithinBounds) {
  Relay& entry = *others_[0];
  constexpr std::size_t kResponse = 512U << 20;
  std::atomic<std::size_t> written{0};
  // Before the responder: its handler writes from it until the responder is gone.
  const auto block = pattern(kChunk, 11);
  BlockingClient responder(through(*owner_, true));
  responder.serve([&](BlockingStream& request) {
    while (request.read_chunk().size != 0) {
    }
    for (std::size_t at = 0; at < kResponse; at += kChunk) {
      if (!request.write(block, at + kChunk >= kResponse).ok()) return;
      written.fetch_add(kChunk);
    }
  });
  const auto entry_before = resident_bytes(entry.process().pid());
  const auto owner_before = resident_bytes(owner_->process().pid());

  auto stub = stub_for(entry);
  grpc::ClientContext context;
  auto call = stub->Send(&context);
  pb::SendRequest open;
  open.mutable_open()->set_channel(channel_.to_string());
  open.mutable_open()->set_target(responder.peer_id().to_string());
  ASSERT_TRUE(call->Write(open));
  call->WritesDone();
  // The caller reads nothing: the responder's writes stop once every window on the way is full.
  // Stalled: no progress across a second of polls (bounded: a minute at most).
  std::size_t last = 0;
  int unchanged = 0;
  for (int poll = 0; poll < 300 && unchanged < 5; ++poll) {
    std::this_thread::sleep_for(200ms);
    const auto now = written.load();
    unchanged = now == last && now > 0 ? unchanged + 1 : 0;
    last = now;
  }
  ASSERT_EQ(unchanged, 5) << "the responder's writes never stopped";
  const auto entry_growth = resident_bytes(entry.process().pid()) -
                            std::min(entry_before, resident_bytes(entry.process().pid()));
  const auto owner_growth = resident_bytes(owner_->process().pid()) -
                            std::min(owner_before, resident_bytes(owner_->process().pid()));
  std::printf("stalled after %zu MiB written; relay memory growth: entry %zu MiB, owner %zu MiB\n",
              written.load() >> 20, entry_growth >> 20, owner_growth >> 20);
  EXPECT_LT(written.load(), kResponse / 4);
  EXPECT_LT(entry_growth, 64U << 20);
  EXPECT_LT(owner_growth, 64U << 20);

  // Reading again, the caller gets every byte.
  Checksum expected;
  for (std::size_t at = 0; at < kResponse; at += kChunk) expected.update(block);
  Checksum got;
  pb::SendResponse in;
  while (call->Read(&in)) {
    got.update({reinterpret_cast<const std::uint8_t*>(in.chunk().data().data()),
                in.chunk().data().size()});
  }
  ASSERT_TRUE(call->Finish().ok());
  EXPECT_EQ(got.size(), expected.size());
  EXPECT_EQ(got.value(), expected.value());
}

// The image's health check is `switchboard ping` on a random channel: on a cluster relay that
// does not serve it, the REDIRECT is the relay's answer.
TEST_F(CarriedCalls, APingOfARelayThatDoesNotServeTheChannelCountsItsRedirect) {
  for (const auto* relay : {others_[0], owner_}) {
    const std::string command = std::string(SWITCHBOARD_CLI_BINARY) + " --server " +
                                relay->native() + " ping --channel " + channel_.to_string() +
                                " --timeout-ms 10000 2>&1";
    std::FILE* pipe = ::popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string out;
    char buffer[256];
    while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
    const int status = ::pclose(pipe);
    EXPECT_EQ(status, 0) << out;
    if (relay == owner_) {
      EXPECT_EQ(out.rfind("pong from ", 0), 0U) << out;
    } else {
      EXPECT_EQ(out.rfind("redirect from ", 0), 0U) << out;
      EXPECT_NE(out.find(owner_->native()), std::string::npos) << out;
    }
  }
}

TEST_F(CarriedCalls, RequestsThroughANonOwnerAreEachCarriedToTheOwner) {
  Relay& entry = *others_[0];
  BlockingClient responder(through(entry, true));
  responder.serve(test::echo);
  auto stub = stub_for(entry);
  grpc::ClientContext context;
  auto call = stub->Requests(&context);
  std::map<std::uint64_t, std::string> responses;
  std::map<std::uint64_t, std::string> ends;  // id -> status of a request that ended non-OK
  std::map<std::uint64_t, bool> complete;
  std::thread reader([&] {
    pb::RequestsResponse in;
    while (call->Read(&in)) {
      if (in.has_chunk()) {
        responses[in.chunk().request_id()] += in.chunk().data();
        if (in.chunk().last()) complete[in.chunk().request_id()] = true;
      } else {
        ends[in.end().request_id()] = pb::Status_Name(in.end().status());
      }
    }
  });
  // Two echoed requests whose bodies interleave (8 MiB each), and one for an absent peer.
  const auto first = pattern(8 * kChunk, 21);
  const auto second = pattern(8 * kChunk + 5, 22);
  for (std::uint64_t id : {1U, 2U}) {
    pb::RequestsRequest open;
    open.mutable_open()->set_id(id);
    open.mutable_open()->mutable_open()->set_channel(channel_.to_string());
    open.mutable_open()->mutable_open()->set_target(responder.peer_id().to_string());
    ASSERT_TRUE(call->Write(open));
  }
  {
    pb::RequestsRequest open;
    open.mutable_open()->set_id(3);
    open.mutable_open()->mutable_open()->set_channel(channel_.to_string());
    open.mutable_open()->mutable_open()->set_target(Uuid::random().to_string());
    open.mutable_open()->set_last(true);
    ASSERT_TRUE(call->Write(open));
  }
  for (std::size_t at = 0; at < second.size(); at += kChunk) {
    for (std::uint64_t id : {1U, 2U}) {
      const auto& body = id == 1 ? first : second;
      if (at >= body.size()) continue;
      pb::RequestsRequest chunk;
      chunk.mutable_chunk()->set_id(id);
      chunk.mutable_chunk()->set_data(body.data() + at, std::min(kChunk, body.size() - at));
      chunk.mutable_chunk()->set_last(at + kChunk >= body.size());
      ASSERT_TRUE(call->Write(chunk));
    }
  }
  call->WritesDone();
  reader.join();
  ASSERT_TRUE(call->Finish().ok());
  EXPECT_TRUE(complete[1]);
  EXPECT_TRUE(complete[2]);
  EXPECT_EQ(responses[1], std::string(reinterpret_cast<const char*>(first.data()), first.size()));
  EXPECT_EQ(responses[2], std::string(reinterpret_cast<const char*>(second.data()), second.size()));
  EXPECT_EQ(ends[3], "STATUS_NO_RESPONDERS");
  EXPECT_GE(carried(entry), 3);
  EXPECT_EQ(carried(*owner_), 0);
}

// The owner dies with streams in flight: a native request and a carried gRPC Send both end with a
// clear status, neither hangs nor is retried.
TEST_F(CarriedCalls, StreamsInFlightWhenTheOwnerIsKilledEndWithAClearStatus) {
  Relay& entry = *others_[0];
  std::atomic<int> requests_seen{0};
  BlockingClient responder(through(entry, true));
  // Holds each request open: reads the body, never answers until its stream ends.
  responder.serve([&](BlockingStream& request) {
    requests_seen.fetch_add(1);
    while (request.read_chunk().size != 0) {
    }
  });
  BlockingClient requester(through(entry));
  auto native_stream = requester.request(Target::to(responder.peer_id()));
  ASSERT_TRUE(native_stream.write(pattern(4096, 1)).ok());

  auto stub = stub_for(entry);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 60s);
  auto call = stub->Send(&context);
  pb::SendRequest open;
  open.mutable_open()->set_channel(channel_.to_string());
  open.mutable_open()->set_target(responder.peer_id().to_string());
  open.mutable_open()->set_data("in flight");
  ASSERT_TRUE(call->Write(open));
  ASSERT_TRUE(eventually([&] { return requests_seen.load() == 2; }));

  owner_->process().signal(SIGKILL);
  ASSERT_TRUE(owner_->process().wait_exit().has_value());

  const auto native = native_stream.result();
  EXPECT_EQ(native.status, Status::peer_gone) << native.describe();
  EXPECT_FALSE(native.message.empty());
  pb::SendResponse in;
  while (call->Read(&in)) {
  }
  const auto status = call->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_NE(status.error_message().find("lost the relay serving the channel (" + owner_->grpc()),
            std::string::npos)
      << status.error_message();
  std::printf("native: %s; carried gRPC: %d %s\n", native.describe().c_str(),
              static_cast<int>(status.error_code()), status.error_message().c_str());
}

// The caller vanishes mid-request: the carried call is cancelled at the owner too, whose
// responder sees its stream end; nothing stays open on either relay.
TEST_F(CarriedCalls, ACallerThatGoesAwayMidRequestEndsTheStreamAtTheOwner) {
  Relay& entry = *others_[0];
  std::atomic<int> started{0};
  std::atomic<int> ended{0};
  std::atomic<std::size_t> body_bytes{0};
  BlockingClient responder(through(*owner_, true));
  responder.serve([&](BlockingStream& request) {
    started.fetch_add(1);
    for (;;) {
      const auto chunk = request.read_chunk();
      if (chunk.size == 0) break;
      body_bytes.fetch_add(chunk.size);
    }
    ended.fetch_add(1);
  });
  auto stub = stub_for(entry);
  {
    grpc::ClientContext context;
    auto call = stub->Send(&context);
    pb::SendRequest open;
    open.mutable_open()->set_channel(channel_.to_string());
    open.mutable_open()->set_target(responder.peer_id().to_string());
    open.mutable_open()->set_data(std::string(kChunk, 'x'));
    ASSERT_TRUE(call->Write(open));
    ASSERT_TRUE(eventually([&] { return body_bytes.load() == kChunk; }));
    EXPECT_EQ(entry.metric("switchboard_cluster_carried_calls_open"), 1.0);
    context.TryCancel();
    pb::SendResponse in;
    while (call->Read(&in)) {
    }
    EXPECT_EQ(call->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  ASSERT_TRUE(eventually([&] { return ended.load() == 1; }));
  EXPECT_EQ(started.load(), 1);
  ASSERT_TRUE(
      eventually([&] { return entry.metric("switchboard_cluster_carried_calls_open") == 0.0; }));
  ASSERT_TRUE(eventually([&] {
    return owner_->metric("switchboard_streams_open{door=\"grpc\"}") == 0.0 &&
           owner_->metric("switchboard_streams_open{door=\"native\"}") == 0.0;
  }));
  // The responder and both relays carry on: the next carried request reaches it.
  auto after = send_over_grpc(*stub, channel_, responder.peer_id(), pattern(1000, 4));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(started.load(), 2);
  EXPECT_EQ(ended.load(), 2);
}

}  // namespace
}  // namespace switchboard::test
