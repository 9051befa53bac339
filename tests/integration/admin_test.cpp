// The admin endpoint of the real server binary: health, metrics matching real traffic on both
// doors, introspection on and off, errors, and the documented metric list.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <future>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "support/child_server.hpp"
#include "support/clients.hpp"
#include "support/relay.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard {
namespace {

namespace pb = ::switchboard::v1;
using client::BlockingClient;
using client::Target;
using test::ChildServer;
using test::http_request;
using test::metric_value;

const std::string kServer = SWITCHBOARD_SERVER_BINARY;

std::vector<std::string> loopback_args(std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--listen",    "127.0.0.1:0",    "--grpc-listen",
                                "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

class Admin : public ::testing::Test {
protected:
  void start(std::vector<std::string> extra = {}) {
    server_ = std::make_unique<ChildServer>(kServer, loopback_args(std::move(extra)));
    ASSERT_TRUE(server_->wait_listening(true)) << server_->err();
    admin_ = server_->port("admin");
    core_ = server_->port("core");
    grpc_ = server_->port("grpc");
    ASSERT_NE(admin_, 0);
  }
  std::string scrape() {
    const auto response = http_request(admin_, "GET", "/metrics");
    EXPECT_EQ(response.status, 200);
    return response.body;
  }
  double value(const std::string& exposition, const std::string& series) {
    const auto v = metric_value(exposition, series);
    EXPECT_TRUE(v.has_value()) << "no sample " << series;
    return v.value_or(-1);
  }

  std::unique_ptr<ChildServer> server_;
  std::uint16_t admin_ = 0;
  std::uint16_t core_ = 0;
  std::uint16_t grpc_ = 0;
};

TEST_F(Admin, HealthIsOkWhileServingAnd503WhileDraining) {
  start({"--drain-timeout", "10s"});
  auto health = http_request(admin_, "GET", "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");

  // A peer with a stream in flight keeps the relay draining long enough to look.
  const auto channel = Uuid::random();
  BlockingClient responder(test::options_for(core_, channel, true));
  std::promise<void> request_seen;
  std::promise<void> release;
  auto released = release.get_future().share();
  responder.serve([&](client::BlockingStream& stream) {
    request_seen.set_value();
    released.wait();
    test::echo(stream);
  });
  BlockingClient sender(test::options_for(core_, channel));
  auto stream = sender.request(Target::any());
  ASSERT_TRUE(stream.write(test::as_bytes("hold")).ok());
  ASSERT_EQ(request_seen.get_future().wait_for(std::chrono::seconds(10)),
            std::future_status::ready);
  server_->signal(SIGTERM);
  ASSERT_TRUE(server_->wait_for_output("relay draining"));
  health = http_request(admin_, "GET", "/healthz");
  EXPECT_EQ(health.status, 503);
  EXPECT_EQ(health.body, "draining\n");
  EXPECT_EQ(value(scrape(), "switchboard_draining"), 1);
  release.set_value();
  ASSERT_TRUE(stream.finish().ok());
  while (stream.read_chunk().size > 0) {
  }
  EXPECT_TRUE(stream.result().ok()) << stream.result().describe();
  EXPECT_EQ(server_->wait_exit(std::chrono::seconds(15)), 0);
}

TEST_F(Admin, UnknownPathsAre404AndOtherMethods405) {
  start();
  EXPECT_EQ(http_request(admin_, "GET", "/").status, 404);
  EXPECT_EQ(http_request(admin_, "GET", "/metricsx").status, 404);
  const auto post = http_request(admin_, "POST", "/metrics");
  EXPECT_EQ(post.status, 405);
  EXPECT_NE(post.headers.find("Allow: GET, HEAD"), std::string::npos) << post.headers;
  EXPECT_EQ(http_request(admin_, "DELETE", "/healthz").status, 405);
  const auto head = http_request(admin_, "HEAD", "/healthz");
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
}

TEST_F(Admin, OversizedRequestIsRefused) {
  start();
  // A target longer than the header limit: the endpoint answers 413 and closes.
  const auto response = http_request(admin_, "GET", "/metrics?" + std::string(16 * 1024, 'a'));
  EXPECT_EQ(response.status, 413);
  EXPECT_EQ(http_request(admin_, "GET", "/healthz").status, 200);
}

TEST_F(Admin, ChannelsAreHiddenUnlessIntrospectionIsEnabled) {
  start();
  const auto channel = Uuid::random();
  BlockingClient peer(test::options_for(core_, channel));
  EXPECT_EQ(http_request(admin_, "GET", "/channels").status, 404);
  EXPECT_EQ(http_request(admin_, "GET", "/channels/" + channel.to_string()).status, 404);
}

TEST_F(Admin, ChannelsListPeersWithIdsAndMetadata) {
  start({"--admin-introspection"});
  const auto channel = Uuid::random();
  BlockingClient responder(test::options_for(core_, channel, true));
  BlockingClient watcher(test::options_for(core_, channel));
  ASSERT_TRUE(test::eventually([&] { return watcher.peers().size() == 1; }));

  const auto list = http_request(admin_, "GET", "/channels");
  ASSERT_EQ(list.status, 200);
  EXPECT_NE(list.headers.find("application/json"), std::string::npos);
  EXPECT_NE(list.body.find("{\"id\":\"" + channel.to_string() + "\",\"peers\":2,"),
            std::string::npos)
      << list.body;

  const auto detail = http_request(admin_, "GET", "/channels/" + channel.to_string());
  ASSERT_EQ(detail.status, 200);
  EXPECT_NE(detail.body.find("\"id\":\"" + responder.peer_id().to_string() +
                             "\",\"metadata\":{\"door\":\"native\",\"accepts_requests\":true"),
            std::string::npos)
      << detail.body;
  EXPECT_NE(detail.body.find("\"id\":\"" + watcher.peer_id().to_string() +
                             "\",\"metadata\":{\"door\":\"native\",\"accepts_requests\":false"),
            std::string::npos)
      << detail.body;
  EXPECT_EQ(http_request(admin_, "GET", "/channels/" + Uuid::random().to_string()).status, 404);
  EXPECT_EQ(http_request(admin_, "GET", "/channels/not-a-uuid").status, 404);
}

// Sends `body` through the gateway to any responder of `channel`; returns the echoed response.
std::string grpc_send(std::uint16_t port, const Uuid& channel, const std::string& body,
                      grpc::Status& status) {
  auto stub = pb::SwitchboardService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto call = stub->Send(&context);
  pb::SendRequest open;
  open.mutable_open()->set_channel(channel.to_string());
  open.mutable_open()->set_data(body.substr(0, 1000));
  std::thread writer([&] {
    if (!call->Write(open)) return;
    pb::SendRequest rest;
    rest.mutable_chunk()->set_data(body.substr(1000));
    if (!call->Write(rest)) return;
    call->WritesDone();
  });
  std::string response;
  pb::SendResponse in;
  while (call->Read(&in)) response += in.chunk().data();
  writer.join();
  status = call->Finish();
  return response;
}

TEST_F(Admin, MetricsMatchTheTrafficSentThroughBothDoors) {
  start();
  const auto channel = Uuid::random();
  BlockingClient responder(test::options_for(core_, channel, true));
  responder.serve(test::echo);
  BlockingClient sender(test::options_for(core_, channel));

  constexpr int kNativeSends = 3;
  constexpr std::size_t kNativeBody = 70'000;  // more than one frame
  std::uint64_t native_payload = 0;
  for (int i = 0; i < kNativeSends; ++i) {
    std::vector<std::uint8_t> body(kNativeBody + static_cast<std::size_t>(i));
    test::fill_pattern(body, 7, static_cast<std::uint64_t>(i));
    std::vector<std::uint8_t> response;
    const auto outcome = sender.send(Target::any(), body, response);
    ASSERT_TRUE(outcome.ok()) << outcome.describe();
    ASSERT_EQ(response, body);
    native_payload += body.size();
  }
  const std::string grpc_body(123'457, 'g');
  grpc::Status status;
  EXPECT_EQ(grpc_send(grpc_, channel, grpc_body, status), grpc_body);
  ASSERT_TRUE(status.ok()) << status.error_message();

  // Each native send ends at the sender and at the responder; the gRPC one at the gateway call
  // and at the native responder. The last ends are recorded just after the clients return.
  const std::string native_ok = "switchboard_streams_total{door=\"native\",status=\"OK\"}";
  const std::string grpc_ok = "switchboard_streams_total{door=\"grpc\",status=\"OK\"}";
  std::string metrics;
  ASSERT_TRUE(test::eventually([&] {
    metrics = scrape();
    return metric_value(metrics, native_ok) == 2 * kNativeSends + 1 &&
           metric_value(metrics, grpc_ok) == 1 &&
           metric_value(metrics, "switchboard_streams_open{door=\"native\"}") == 0;
  })) << metrics;
  const double grpc_bytes = static_cast<double>(grpc_body.size());
  const double native_bytes = static_cast<double>(native_payload);
  // Native clients sent the requests and the echoes (of native and gRPC requests) ...
  EXPECT_EQ(value(metrics, "switchboard_payload_bytes_received_total{door=\"native\"}"),
            2 * native_bytes + grpc_bytes);
  // ... and received the requests (native and gRPC) and the echoes of native requests.
  EXPECT_EQ(value(metrics, "switchboard_payload_bytes_sent_total{door=\"native\"}"),
            2 * native_bytes + grpc_bytes);
  EXPECT_EQ(value(metrics, "switchboard_payload_bytes_received_total{door=\"grpc\"}"), grpc_bytes);
  EXPECT_EQ(value(metrics, "switchboard_payload_bytes_sent_total{door=\"grpc\"}"), grpc_bytes);
  EXPECT_EQ(value(metrics, "switchboard_bytes_received_total{door=\"grpc\"}"), grpc_bytes);
  // Socket bytes include framing, so they exceed the payload.
  EXPECT_GT(value(metrics, "switchboard_bytes_received_total{door=\"native\"}"),
            2 * native_bytes + grpc_bytes);
  EXPECT_GT(value(metrics, "switchboard_bytes_sent_total{door=\"native\"}"),
            2 * native_bytes + grpc_bytes);
  EXPECT_EQ(value(metrics, "switchboard_streams_started_total{door=\"native\"}"),
            2 * kNativeSends + 1);
  EXPECT_EQ(value(metrics, "switchboard_streams_started_total{door=\"grpc\"}"), 1);
  EXPECT_EQ(value(metrics, "switchboard_streams_total{door=\"native\",status=\"CANCELLED\"}"), 0);
  EXPECT_EQ(value(metrics, "switchboard_connections_open{door=\"native\"}"), 2);
  EXPECT_EQ(value(metrics, "switchboard_connections_total{door=\"native\"}"), 2);
  EXPECT_EQ(value(metrics, "switchboard_connections_total{door=\"grpc\"}"), 1);
  EXPECT_EQ(value(metrics, "switchboard_peers"), 2);
  EXPECT_EQ(value(metrics, "switchboard_channels"), 1);
  EXPECT_EQ(value(metrics, "switchboard_draining"), 0);
  EXPECT_EQ(value(metrics, "switchboard_protocol_errors_total{door=\"native\"}"), 0);
}

TEST_F(Admin, FailuresAreCountedByReasonAndStatus) {
  start();
  const auto channel = Uuid::random();
  // A Send with no responder on the channel: refused at once, never a stream.
  grpc::Status status;
  grpc_send(grpc_, channel, std::string(2000, 'x'), status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  // A duplicate peer id is refused at the handshake.
  BlockingClient first(test::options_for(core_, channel));
  auto options = test::options_for(core_, channel);
  options.peer_id = first.peer_id();
  EXPECT_THROW(BlockingClient second(options), client::ConnectError);
  // A responder that fails the request with an application error.
  BlockingClient responder(test::options_for(core_, channel, true));
  responder.serve([](client::BlockingStream& stream) {
    while (stream.read_chunk().size > 0) {
    }
    (void)stream.fail(Status::application, 42, "no");
  });
  std::vector<std::uint8_t> response;
  EXPECT_FALSE(first.send(Target::any(), test::as_bytes("x"), response).ok());
  std::string metrics;
  ASSERT_TRUE(test::eventually([&] {
    metrics = scrape();
    return metric_value(metrics,
                        "switchboard_streams_total{door=\"native\",status=\"APPLICATION\"}") == 2;
  })) << metrics;
  EXPECT_EQ(
      value(metrics, "switchboard_handshake_failures_total{door=\"native\",reason=\"refused\"}"),
      1);
  EXPECT_EQ(value(metrics, "switchboard_streams_started_total{door=\"grpc\"}"), 0);
}

// Metric family names in the docs table between the markers.
std::set<std::string> documented_metrics() {
  std::ifstream doc(SWITCHBOARD_SOURCE_DIR "/docs/OPERATIONS.md");
  std::stringstream text;
  text << doc.rdbuf();
  const auto from = text.str().find("<!-- BEGIN METRICS -->");
  const auto to = text.str().find("<!-- END METRICS -->");
  std::set<std::string> names;
  if (from == std::string::npos || to == std::string::npos) return names;
  const std::string table = text.str().substr(from, to - from);
  const std::regex row(R"(\n\| `(switchboard_[a-z_]+)` \|)");
  for (auto it = std::sregex_iterator(table.begin(), table.end(), row);
       it != std::sregex_iterator(); ++it) {
    names.insert((*it)[1]);
  }
  return names;
}

TEST_F(Admin, EveryDocumentedMetricIsExposedAndViceVersa) {
  start();
  const auto metrics = scrape();
  std::set<std::string> exposed;
  std::istringstream lines(metrics);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      exposed.insert(line.substr(7, line.find(' ', 7) - 7));
    }
  }
  const auto documented = documented_metrics();
  EXPECT_FALSE(documented.empty());
  EXPECT_EQ(documented, exposed);
}

}  // namespace
}  // namespace switchboard
