// First end-to-end checks: connect, presence snapshot, one request/response through the relay.
#include <gtest/gtest.h>

#include "support/relay.hpp"
#include "switchboard/blocking.hpp"

namespace switchboard {
namespace {

using client::BlockingClient;
using client::BlockingStream;
using client::ConnectOptions;

ConnectOptions options_for(std::uint16_t port, const Uuid& channel, bool accept = false) {
  ConnectOptions options;
  options.port = port;
  options.channel = channel;
  options.accept_requests = accept;
  return options;
}

TEST(Smoke, EchoRequestThroughRelay) {
  test::InProcessRelay relay;
  const auto channel = Uuid::random();
  BlockingClient responder(options_for(relay.port(), channel, true));
  responder.serve([](BlockingStream& request) {
    for (;;) {
      auto chunk = request.read_chunk();
      if (chunk.size == 0) break;
      request.write(chunk.bytes());
    }
  });
  BlockingClient sender(options_for(relay.port(), channel));
  ASSERT_EQ(sender.peers().size(), 1u);
  EXPECT_EQ(sender.peers()[0], responder.peer_id());
  const std::string text = "hello, relay";
  std::vector<std::uint8_t> response;
  auto outcome = sender.send(client::Target::any(),
                             {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()},
                             response);
  EXPECT_TRUE(outcome.ok()) << outcome.describe();
  EXPECT_EQ(std::string(response.begin(), response.end()), text);
}

}  // namespace
}  // namespace switchboard
