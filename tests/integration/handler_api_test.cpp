// The client's handler-driven stream calls (try_write, try_read, on_end) against a real relay:
// one-frame messages sent and consumed without a coroutine per message, and what they refuse.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "support/clients.hpp"
#include "support/relay.hpp"
#include "switchboard/client.hpp"

namespace switchboard {
namespace {

namespace asio = boost::asio;

// ASSERT_* returns from the function, which a coroutine cannot: this ends the coroutine by
// throwing instead, and run_bounded reports it.
#define CO_ASSERT_EQ(a, b)                                                  \
  do {                                                                      \
    EXPECT_EQ(a, b);                                                        \
    if (!((a) == (b))) throw std::runtime_error("required: " #a " == " #b); \
  } while (0)
using client::Connection;
using client::Outcome;
using client::Stream;
using client::Target;

// Runs `body` on a fresh io_context until it returns, bounded by `limit`; reports an exception
// or the limit as a test failure.
void run_bounded(const std::function<asio::awaitable<void>(asio::io_context&)>& body,
                 std::chrono::seconds limit = std::chrono::seconds(30)) {
  asio::io_context io;
  bool finished = false;
  std::exception_ptr error;
  asio::co_spawn(io, body(io), [&](std::exception_ptr e) {
    finished = true;
    error = e;
    io.stop();
  });
  asio::steady_timer guard(io, limit);
  guard.async_wait([&](boost::system::error_code ec) {
    if (!ec) io.stop();
  });
  io.run();
  ASSERT_TRUE(finished) << "did not finish within " << limit.count() << " s";
  if (error) std::rethrow_exception(error);
}

asio::awaitable<std::shared_ptr<Connection>> join(asio::io_context& io, std::uint16_t port,
                                                  const Uuid& channel, bool accept_requests) {
  Outcome outcome;
  auto connection = co_await Connection::connect(
      io.get_executor(), test::options_for(port, channel, accept_requests), outcome);
  if (!connection) throw std::runtime_error("connect failed: " + outcome.describe());
  co_return connection;
}

// An event a coroutine waits for and a handler signals, on one io_context.
struct Event {
  explicit Event(asio::io_context& io) : timer(io, asio::steady_timer::time_point::max()) {}
  void set() {
    done = true;
    timer.cancel();
  }
  asio::awaitable<void> wait() {
    while (!done) {
      boost::system::error_code ignored;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
  }
  asio::steady_timer timer;
  bool done = false;
};

// Serves each request by reading it whole, recording its size in `sizes`, and ending the
// response with OK.
void answer_with_size_records(asio::io_context& io, Connection& responder,
                              std::vector<std::size_t>& sizes) {
  responder.on_request([&io, &sizes](std::shared_ptr<Stream> request) {
    asio::co_spawn(
        io,
        [&sizes, request]() -> asio::awaitable<void> {
          std::size_t size = 0;
          for (;;) {
            auto chunk = co_await request->read();
            if (chunk.size == 0) break;
            size += chunk.size;
          }
          sizes.push_back(size);
          co_await request->finish();
        },
        asio::detached);
  });
}

std::vector<std::uint8_t> numbered(std::uint32_t n) {
  std::string text = "message " + std::to_string(n);
  return {text.begin(), text.end()};
}

TEST(HandlerApi, OneFrameBroadcastsSentAndReadInHandlersArriveWholeWithTheirSummaries) {
  test::InProcessRelay relay;
  const auto channel = Uuid::random();
  constexpr std::uint32_t kMessages = 2000;
  constexpr std::uint32_t kInFlight = 16;
  run_bounded([&](asio::io_context& io) -> asio::awaitable<void> {
    auto receiver = co_await join(io, relay.port(), channel, false);
    std::vector<std::string> received;
    std::uint32_t not_whole = 0;
    Event all_received(io);
    receiver->on_broadcast([&](std::shared_ptr<Stream> message) {
      auto body = message->try_read();
      auto end = message->try_read();
      // One frame carried the body and the end: both are there when the handler runs.
      if (!body || body->size == 0 || !end || end->size != 0) {
        ++not_whole;
      } else {
        received.emplace_back(reinterpret_cast<const char*>(body->data), body->size);
      }
      if (received.size() + not_whole == kMessages) all_received.set();
    });

    auto sender = co_await join(io, relay.port(), channel, false);
    std::uint32_t next = 0;
    std::uint32_t summaries = 0;
    std::uint32_t delivered = 0;
    std::uint32_t refused = 0;
    Event all_summarised(io);
    std::function<void()> send_next = [&] {
      if (next == kMessages) return;
      const auto body = numbered(next++);
      auto message = sender->open_broadcast();
      message->on_end([&](const Outcome& summary) {
        ++summaries;
        if (summary.ok()) delivered += summary.delivered;
        if (summaries == kMessages) all_summarised.set();
        send_next();
      });
      if (!message->try_write(body, true)) ++refused;
    };
    for (std::uint32_t i = 0; i < kInFlight; ++i) send_next();
    co_await all_summarised.wait();
    co_await all_received.wait();

    EXPECT_EQ(refused, 0u);
    EXPECT_EQ(delivered, kMessages);
    EXPECT_EQ(not_whole, 0u);
    std::vector<std::string> expected;
    for (std::uint32_t i = 0; i < kMessages; ++i) {
      const auto body = numbered(i);
      expected.emplace_back(body.begin(), body.end());
    }
    std::sort(expected.begin(), expected.end());
    std::sort(received.begin(), received.end());
    EXPECT_EQ(received, expected);
    sender->close();
    receiver->close();
  });
}

// More one-frame broadcasts at once than one relay write carries (512 pieces): the rest must
// leave without waiting for further traffic (here the keepalive, a minute away, would be the
// next).
TEST(HandlerApi, ABurstOfOneFrameBroadcastsLargerThanOneRelayWriteAllArrive) {
  core::Limits limits;
  limits.max_streams_per_connection = 4096;
  limits.keepalive_interval = std::chrono::seconds(60);
  test::InProcessRelay relay(limits);
  const auto channel = Uuid::random();
  constexpr std::uint32_t kBurst = 3000;
  run_bounded(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto receiver = co_await join(io, relay.port(), channel, false);
        std::uint32_t received = 0;
        Event all_received(io);
        receiver->on_broadcast([&](std::shared_ptr<Stream> message) {
          while (auto chunk = message->try_read()) {
            if (chunk->size == 0) break;
          }
          if (++received == kBurst) all_received.set();
        });
        auto sender = co_await join(io, relay.port(), channel, false);
        std::uint32_t delivered = 0;
        std::uint32_t summaries = 0;
        Event all_summarised(io);
        for (std::uint32_t i = 0; i < kBurst; ++i) {
          auto message = sender->open_broadcast();
          message->on_end([&](const Outcome& summary) {
            delivered += summary.delivered;
            if (++summaries == kBurst) all_summarised.set();
          });
          EXPECT_TRUE(message->try_write(numbered(i), true));
        }
        co_await all_received.wait();
        co_await all_summarised.wait();
        EXPECT_EQ(delivered, kBurst);
        sender->close();
        receiver->close();
      },
      std::chrono::seconds(20));
}

// Requests written at once that together queue more than the client's outbound high-water mark
// (4 MiB; each may queue its 1 MiB window): the later ones wait for the socket before their
// first frame, and must be woken when it drains.
TEST(HandlerApi, FirstWritesThatWaitForTheOutboundBufferAreWokenWhenItDrains) {
  test::InProcessRelay relay;
  const auto channel = Uuid::random();
  constexpr int kRequests = 8;
  const std::size_t size = std::size_t{1} << 20;
  run_bounded([&](asio::io_context& io) -> asio::awaitable<void> {
    auto responder = co_await join(io, relay.port(), channel, true);
    std::vector<std::size_t> sizes;
    answer_with_size_records(io, *responder, sizes);
    auto requester = co_await join(io, relay.port(), channel, false);
    std::vector<std::uint8_t> body(size, 5);
    int done = 0;
    int failed = 0;
    Event all_done(io);
    for (int i = 0; i < kRequests; ++i) {
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            auto request = requester->open_request(Target::any());
            auto outcome = co_await request->write(body, true);
            if (outcome.ok()) outcome = co_await request->result();
            if (!outcome.ok()) ++failed;
            if (++done == kRequests) all_done.set();
          },
          asio::detached);
    }
    co_await all_done.wait();
    EXPECT_EQ(failed, 0);
    CO_ASSERT_EQ(sizes.size(), std::size_t{kRequests});
    for (auto received : sizes) EXPECT_EQ(received, size);
    requester->close();
    responder->close();
  });
}

TEST(HandlerApi, TryWriteSendsNothingWhenItWouldHaveToWaitOrSplit) {
  test::InProcessRelay relay;
  const auto channel = Uuid::random();
  run_bounded([&](asio::io_context& io) -> asio::awaitable<void> {
    auto responder = co_await join(io, relay.port(), channel, true);
    std::vector<std::size_t> request_sizes;
    answer_with_size_records(io, *responder, request_sizes);
    auto requester = co_await join(io, relay.port(), channel, false);

    // More than one frame (and more than the stream's credit): refused, nothing opened.
    std::vector<std::uint8_t> big(std::size_t{requester->relay_max_frame()} + 1, 7);
    auto request = requester->open_request(Target::any());
    EXPECT_FALSE(request->try_write(big, true));
    EXPECT_FALSE(request->ended());
    // The waiting call sends it all; the stream was never half-sent.
    const auto wrote = co_await request->write(big, true);
    EXPECT_TRUE(wrote.ok()) << wrote.describe();
    EXPECT_FALSE(request->try_write(numbered(1), false)) << "our direction has ended";
    const auto outcome = co_await request->result();
    EXPECT_TRUE(outcome.ok()) << outcome.describe();
    CO_ASSERT_EQ(request_sizes.size(), 1u);
    EXPECT_EQ(request_sizes[0], big.size());

    // A stream that fits goes out at once, and a later piece on the same stream too.
    auto small = requester->open_request(Target::any());
    EXPECT_TRUE(small->try_write(numbered(2), false));
    EXPECT_TRUE(small->try_write(numbered(3), true));
    const auto small_outcome = co_await small->result();
    EXPECT_TRUE(small_outcome.ok()) << small_outcome.describe();
    CO_ASSERT_EQ(request_sizes.size(), 2u);
    EXPECT_EQ(request_sizes[1], numbered(2).size() + numbered(3).size());

    // After close() nothing is sent.
    requester->close();
    auto late = requester->open_request(Target::any());
    EXPECT_FALSE(late->try_write(numbered(4), true));
    responder->close();
  });
}

TEST(HandlerApi, TryReadSaysWhenReadWouldWaitAndThenHandsOverTheBytes) {
  test::InProcessRelay relay;
  const auto channel = Uuid::random();
  run_bounded([&](asio::io_context& io) -> asio::awaitable<void> {
    auto responder = co_await join(io, relay.port(), channel, true);
    std::shared_ptr<Stream> incoming;
    bool empty_at_open = false;
    Event opened(io);
    responder->on_request([&](std::shared_ptr<Stream> request) {
      empty_at_open = !request->try_read().has_value();
      incoming = std::move(request);
      opened.set();
    });
    auto requester = co_await join(io, relay.port(), channel, false);
    auto request = requester->open_request(Target::any());
    // An empty first write opens the stream without a body.
    EXPECT_TRUE((co_await request->write({}, false)).ok());
    co_await opened.wait();
    EXPECT_TRUE(empty_at_open) << "nothing had arrived, so try_read must not return a chunk";

    const auto body = numbered(42);
    EXPECT_TRUE((co_await request->write(body, true)).ok());
    // read() waits for the chunk; after it, try_read tells the end without waiting.
    auto chunk = co_await incoming->read();
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(chunk.data), chunk.size),
              std::string(body.begin(), body.end()));
    auto end = incoming->try_read();
    while (!end) {  // the FIN may come in a later read of the socket
      (void)co_await incoming->read();
      end = incoming->try_read();
    }
    EXPECT_EQ(end->size, 0u);
    EXPECT_TRUE((co_await incoming->finish()).ok());
    const auto outcome = co_await request->result();
    EXPECT_TRUE(outcome.ok()) << outcome.describe();
    requester->close();
    responder->close();
  });
}

TEST(HandlerApi, OnEndRunsOnceWithTheOutcomeIncludingWhenTheConnectionCloses) {
  test::InProcessRelay relay;
  const auto channel = Uuid::random();
  run_bounded([&](asio::io_context& io) -> asio::awaitable<void> {
    auto responder = co_await join(io, relay.port(), channel, true);
    std::vector<std::shared_ptr<Stream>> held;  // requests never answered
    Event request_arrived(io);
    responder->on_request([&](std::shared_ptr<Stream> request) {
      held.push_back(std::move(request));
      request_arrived.set();
    });
    auto requester = co_await join(io, relay.port(), channel, false);

    // Ended by the relay: no responder for a peer id that is not on the channel.
    std::vector<Outcome> refused;
    auto to_nobody = requester->open_request(Target::to(Uuid::random()));
    to_nobody->on_end([&](const Outcome& outcome) { refused.push_back(outcome); });
    EXPECT_TRUE((co_await to_nobody->write(numbered(1), true)).ok());
    (void)co_await to_nobody->result();
    CO_ASSERT_EQ(refused.size(), 1u);
    EXPECT_EQ(refused[0].status, Status::no_responders);
    // Set after the end: runs at once, with the same outcome.
    std::vector<Outcome> late;
    to_nobody->on_end([&](const Outcome& outcome) { late.push_back(outcome); });
    CO_ASSERT_EQ(late.size(), 1u);
    EXPECT_EQ(late[0].status, Status::no_responders);

    // Still open when our connection closes: ends then, with CANCELLED, once.
    std::vector<Outcome> closed;
    auto unanswered = requester->open_request(Target::any());
    unanswered->on_end([&](const Outcome& outcome) { closed.push_back(outcome); });
    EXPECT_TRUE(unanswered->try_write(numbered(2), true));
    co_await request_arrived.wait();
    EXPECT_TRUE(closed.empty());
    requester->close();
    CO_ASSERT_EQ(closed.size(), 1u);
    EXPECT_EQ(closed[0].status, Status::cancelled);
    responder->close();
    EXPECT_EQ(closed.size(), 1u);
  });
}

}  // namespace
}  // namespace switchboard
