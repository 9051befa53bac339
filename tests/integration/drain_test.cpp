// Graceful drain of the real server binary on SIGTERM: new connections refused, streams in
// flight finish, the process exits 0; and the drain timeout bounds a stream that never ends.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <future>

#include "support/child_server.hpp"
#include "support/clients.hpp"
#include "support/raw_peer.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard {
namespace {

namespace pb = ::switchboard::v1;
using client::BlockingClient;
using client::BlockingStream;
using test::ChildServer;
using namespace std::chrono_literals;

const std::string kServer = SWITCHBOARD_SERVER_BINARY;

std::unique_ptr<ChildServer> start_server(const std::string& drain_timeout) {
  auto server = std::make_unique<ChildServer>(
      kServer, std::vector<std::string>{"--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                                        "--admin-listen", "127.0.0.1:0", "--drain-timeout",
                                        drain_timeout, "--keepalive-interval", "30s"});
  EXPECT_TRUE(server->wait_listening(true)) << server->err();
  return server;
}

std::vector<std::uint8_t> data_frame(std::uint32_t stream, const std::string& text, bool fin) {
  std::vector<std::uint8_t> bytes(wire::kHeaderSize);
  wire::encode_header(
      wire::FrameHeader{wire::FrameType::data, fin ? wire::flags::kFin : std::uint8_t{0}, stream,
                        static_cast<std::uint32_t>(text.size())},
      bytes.data());
  bytes.insert(bytes.end(), text.begin(), text.end());
  return bytes;
}

TEST(Drain, SigtermRefusesNewcomersLetsTheStreamInFlightFinishAndExitsZero) {
  auto server = start_server("20s");
  const auto core = server->port("core");
  const auto channel = Uuid::random();
  BlockingClient responder(test::options_for(core, channel, true));
  responder.serve(test::echo);

  // A long request: opened before SIGTERM, its body keeps coming after it.
  test::RawPeer requester(core);
  requester.join(channel);
  std::vector<std::uint8_t> bytes;
  wire::Open request;
  request.kind = wire::StreamKind::to_any;
  wire::append_open(bytes, 1, request, test::as_bytes("part one;"), false);
  requester.send(bytes);
  auto first = requester.expect_type(wire::FrameType::data);
  ASSERT_TRUE(first);
  EXPECT_EQ(std::string(first->payload.begin(), first->payload.end()), "part one;");

  server->signal(SIGTERM);
  auto go_away = requester.expect_type(wire::FrameType::go_away);
  ASSERT_TRUE(go_away) << "no GOAWAY after SIGTERM";
  wire::GoAway parsed;
  ASSERT_EQ(wire::parse_go_away(go_away->bytes(), parsed), wire::DecodeError::none);
  EXPECT_EQ(parsed.last_stream, 1u);

  // Newcomers are turned away on both doors.
  EXPECT_THROW(BlockingClient late(test::options_for(core, channel)), client::ConnectError);
  auto stub = pb::SwitchboardService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server->port("grpc")), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 10s);
  auto send = stub->Send(&context);
  pb::SendRequest open;
  open.mutable_open()->set_channel(channel.to_string());
  send->Write(open);
  send->WritesDone();
  pb::SendResponse ignored;
  while (send->Read(&ignored)) {
  }
  EXPECT_FALSE(send->Finish().ok());

  // The stream in flight carries on to its end.
  requester.send(data_frame(1, "part two", true));
  std::string echoed;
  bool fin = false;
  for (int frames = 0; frames < 100 && !fin; ++frames) {
    auto frame = requester.expect_type(wire::FrameType::data);
    ASSERT_TRUE(frame) << "echo stopped after \"" << echoed << "\"";
    echoed.append(frame->payload.begin(), frame->payload.end());
    fin = (frame->header.flags & wire::flags::kFin) != 0;
  }
  EXPECT_TRUE(fin);
  EXPECT_EQ(echoed, "part two");
  EXPECT_TRUE(requester.expect_closed());

  EXPECT_EQ(server->wait_exit(20s), 0);
  const auto log = server->err();
  EXPECT_NE(log.find("relay draining"), std::string::npos) << log;
  EXPECT_NE(log.find("relay drained terminated=false"), std::string::npos) << log;
  EXPECT_NE(log.find("relay stopped"), std::string::npos) << log;
}

TEST(Drain, AStreamThatNeverEndsIsCutAtTheDrainTimeout) {
  auto server = start_server("1s");
  const auto core = server->port("core");
  const auto channel = Uuid::random();
  BlockingClient responder(test::options_for(core, channel, true));
  std::promise<void> arrived;
  responder.serve([&](BlockingStream& stream) {
    stream.read_chunk();
    arrived.set_value();
    // Never answers: reads until the relay ends the stream.
    while (stream.read_chunk().size > 0) {
    }
  });
  BlockingClient sender(test::options_for(core, channel));
  auto stuck = sender.request(client::Target::any());
  ASSERT_TRUE(stuck.write(test::as_bytes("forever")).ok());
  ASSERT_EQ(arrived.get_future().wait_for(10s), std::future_status::ready);

  const auto signalled = std::chrono::steady_clock::now();
  server->signal(SIGTERM);
  // Bounded by the drain timeout (1 s) plus shutdown work; the bound here is generous.
  EXPECT_EQ(server->wait_exit(15s), 0);
  const auto took = std::chrono::steady_clock::now() - signalled;
  EXPECT_GE(took, 900ms) << "exited before the drain timeout";
  EXPECT_FALSE(stuck.result().ok());
  const auto log = server->err();
  EXPECT_NE(log.find("drain timeout reached"), std::string::npos) << log;
  EXPECT_NE(log.find("relay drained terminated=true"), std::string::npos) << log;
}

}  // namespace
}  // namespace switchboard
