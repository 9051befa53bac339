// End-to-end request/response through relays running 1, 2 and 4 I/O threads.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
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

// A listener that takes connections and never answers (a frozen relay): the attempt ends at its
// connect timeout with DEADLINE_EXCEEDED, by name (through the resolver) and by address.
TEST(SmokeHosts, ASilentListenerIsGivenUpAtTheConnectTimeout) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor silent(
      io, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  for (const char* host : {"127.0.0.1", "localhost"}) {
    auto options = options_for(silent.local_endpoint().port(), Uuid::random());
    options.host = host;
    options.connect_timeout = std::chrono::milliseconds(200);
    try {
      BlockingClient client(options);
      ADD_FAILURE() << "joined through a listener that never answers (" << host << ")";
    } catch (const client::ConnectError& e) {
      EXPECT_EQ(e.outcome().status, Status::deadline_exceeded) << host << ": " << e.what();
    }
  }
}

}  // namespace
}  // namespace switchboard
