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

}  // namespace
}  // namespace switchboard
