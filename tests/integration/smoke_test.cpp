// End-to-end request/response through relays running 1, 2 and 4 I/O threads.
#include <gtest/gtest.h>

#include <thread>

#include "support/clients.hpp"
#include "support/relay.hpp"

namespace switchboard {
namespace {

using client::BlockingClient;
using client::Target;
using test::options_for;

class Smoke : public ::testing::TestWithParam<unsigned> {};

TEST_P(Smoke, ConcurrentEchoesThroughRelay) {
  test::InProcessRelay relay(core::Limits{}, GetParam());
  const auto channel = Uuid::random();
  BlockingClient a(options_for(relay.port(), channel, true));
  a.serve(test::echo);
  BlockingClient b(options_for(relay.port(), channel, true));
  b.serve(test::echo);
  std::vector<std::thread> senders;
  std::atomic<int> ok{0};
  for (int s = 0; s < 4; ++s) {
    senders.emplace_back([&, s] {
      BlockingClient sender(options_for(relay.port(), channel));
      for (int i = 0; i < 25; ++i) {
        std::vector<std::uint8_t> body(static_cast<std::size_t>(100 + s * 1000 + i * 333));
        test::fill_pattern(body, static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(i));
        std::vector<std::uint8_t> response;
        if (sender.send(Target::any(), body, response).ok() && response == body) ++ok;
      }
    });
  }
  for (auto& t : senders) t.join();
  EXPECT_EQ(ok.load(), 100);
}

INSTANTIATE_TEST_SUITE_P(Threads, Smoke, ::testing::Values(1U, 2U, 4U));

// A literal address is connected to directly, a name through the resolver: both reach the relay
// and the same channel.
TEST(SmokeHosts, ANameAndALiteralAddressReachTheSameChannel) {
  test::InProcessRelay relay(core::Limits{}, 1);
  const auto channel = Uuid::random();
  auto by_name = options_for(relay.port(), channel, true);
  by_name.host = "localhost";
  BlockingClient named(by_name);
  named.serve(test::echo);
  auto by_address = options_for(relay.port(), channel);
  by_address.host = "127.0.0.1";
  BlockingClient literal(by_address);
  const std::vector<std::uint8_t> body{1, 2, 3, 4};
  std::vector<std::uint8_t> response;
  ASSERT_TRUE(literal.send(Target::to(named.peer_id()), body, response).ok());
  EXPECT_EQ(response, body);
}

}  // namespace
}  // namespace switchboard
