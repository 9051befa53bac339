// Request/response streams between native peers: sizes, chunking, duplex, concurrency, routing.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "support/clients.hpp"
#include "support/raw_peer.hpp"
#include "support/relay.hpp"

namespace switchboard {
namespace {

using client::BlockingClient;
using client::BlockingStream;
using client::Target;
using test::options_for;

class Streams : public ::testing::Test {
protected:
  test::InProcessRelay relay_;
  Uuid channel_ = Uuid::random();
};

// Streams `total` bytes in `chunk`-sized writes and checks the echo matches byte for byte.
void expect_echo(BlockingClient& sender, std::uint64_t total, std::size_t chunk,
                 std::uint64_t seed) {
  auto stream = sender.request(Target::any());
  test::Checksum sent;
  std::thread writer([&] {
    std::vector<std::uint8_t> buffer(chunk);
    std::uint64_t offset = 0;
    std::uint64_t index = 0;
    while (offset < total) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, total - offset));
      test::fill_pattern({buffer.data(), n}, seed, index++);
      sent.update({buffer.data(), n});
      ASSERT_TRUE(stream.write({buffer.data(), n}).ok());
      offset += n;
    }
    ASSERT_TRUE(stream.finish().ok());
  });
  test::Checksum received;
  for (;;) {
    auto piece = stream.read_chunk();
    if (piece.size == 0) break;
    received.update(piece.bytes());
  }
  writer.join();
  const auto outcome = stream.result();
  EXPECT_TRUE(outcome.ok()) << outcome.describe();
  EXPECT_EQ(received.size(), total);
  EXPECT_EQ(received.value(), sent.value());
}

TEST_F(Streams, BodiesOfZeroOneAndManySmallChunksEchoIntact) {
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  responder.serve(test::echo);
  BlockingClient sender(options_for(relay_.port(), channel_));
  expect_echo(sender, 0, 1, 1);
  expect_echo(sender, 1, 1, 2);
  expect_echo(sender, 10'000, 7, 3);  // 1,429 chunks of 7 bytes
}

TEST_F(Streams, QuarterGibibyteIsChecksummedEndToEnd) {
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  responder.serve(test::echo);
  BlockingClient sender(options_for(relay_.port(), channel_));
  expect_echo(sender, 256ULL << 20, 256 * 1024, 4);
}

TEST(StreamsQuiet, BulkPeersThatGoQuietAndComeBackStillEchoIntact) {
  // Bulk frames move a connection to full-size read blocks, which the relay gives back once the
  // connection has been quiet for a watchdog tick (50 ms with these limits) while its next read
  // is already waiting. Each quiet spell spans a few ticks; what is read after it must be whole.
  test::InProcessRelay relay(test::fast_limits());
  const auto channel = Uuid::random();
  BlockingClient responder(options_for(relay.port(), channel, true));
  responder.serve(test::echo);
  BlockingClient sender(options_for(relay.port(), channel));
  for (std::uint64_t round = 0; round < 3; ++round) {
    expect_echo(sender, 256 * 1024, 60'000, 10 + round);
    std::this_thread::sleep_for(std::chrono::milliseconds(180));  // quiet, not synchronisation
    std::vector<std::uint8_t> response;
    const std::string ping = "after a quiet spell";
    ASSERT_TRUE(sender.send(Target::any(), test::as_bytes(ping), response).ok());
    EXPECT_EQ(std::string(response.begin(), response.end()), ping);
  }
}

TEST_F(Streams, SmallMessageIsOneFrameEachWay) {
  // A raw responder sees the whole request in the OPEN frame (body + FIN).
  test::RawPeer raw(relay_.port());
  const auto raw_id = raw.join(channel_, true);
  BlockingClient sender(options_for(relay_.port(), channel_));
  auto stream = sender.request(Target::to(raw_id));
  ASSERT_TRUE(stream.write(test::as_bytes("ping"), true).ok());
  auto open = raw.expect_type(wire::FrameType::open);
  ASSERT_TRUE(open);
  EXPECT_TRUE(open->header.flags & wire::flags::kFin);
  wire::Open parsed;
  wire::Bytes body;
  ASSERT_EQ(wire::parse_open(open->bytes(), parsed, body), wire::DecodeError::none);
  EXPECT_EQ(std::string(body.begin(), body.end()), "ping");
  EXPECT_EQ(parsed.peer, sender.peer_id());
  // One DATA+FIN frame answers it.
  std::vector<std::uint8_t> answer;
  const std::string pong = "pong";
  wire::append_data(answer, open->header.stream, test::as_bytes(pong), true);
  raw.send(answer);
  auto chunk = stream.read_chunk();
  EXPECT_EQ(std::string(chunk.data, chunk.data + chunk.size), "pong");
  EXPECT_EQ(stream.read_chunk().size, 0u);
  EXPECT_TRUE(stream.result().ok());
}

TEST_F(Streams, FullDuplexResponderAnswersBeforeRequestEnds) {
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  responder.serve([](BlockingStream& request) {
    auto first = request.read_chunk();
    ASSERT_EQ(std::string(first.data, first.data + first.size), "first");
    // Answer while the request is still open; the sender only finishes after seeing this.
    ASSERT_TRUE(request.write(test::as_bytes("ack-first")).ok());
    auto second = request.read_chunk();
    ASSERT_EQ(std::string(second.data, second.data + second.size), "second");
    EXPECT_EQ(request.read_chunk().size, 0u);
    ASSERT_TRUE(request.write(test::as_bytes("done"), true).ok());
  });
  BlockingClient sender(options_for(relay_.port(), channel_));
  auto stream = sender.request(Target::any());
  ASSERT_TRUE(stream.write(test::as_bytes("first")).ok());
  auto ack = stream.read_chunk();
  EXPECT_EQ(std::string(ack.data, ack.data + ack.size), "ack-first");
  ASSERT_TRUE(stream.write(test::as_bytes("second"), true).ok());
  auto done = stream.read_chunk();
  EXPECT_EQ(std::string(done.data, done.data + done.size), "done");
  EXPECT_TRUE(stream.result().ok());
}

TEST_F(Streams, HundredConcurrentRequestsOverOneConnection) {
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  responder.serve(test::echo);
  BlockingClient sender(options_for(relay_.port(), channel_));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 100; ++i) {
    threads.emplace_back([&, i] {
      std::vector<std::uint8_t> body(1000 + static_cast<std::size_t>(i) * 37);
      test::fill_pattern(body, 99, static_cast<std::uint64_t>(i));
      std::vector<std::uint8_t> response;
      auto outcome = sender.send(Target::any(), body, response);
      if (outcome.ok() && response == body)
        ++ok;
      else
        ADD_FAILURE() << outcome.describe() << " size " << response.size() << "/" << body.size();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 100);
}

TEST_F(Streams, AnyRoutingSpreadsRoundRobinAcrossResponders) {
  std::mutex mutex;
  std::map<std::string, int> served;
  auto make_responder = [&](const std::string& name) {
    auto responder = std::make_unique<BlockingClient>(options_for(relay_.port(), channel_, true));
    responder->serve([&, name](BlockingStream& request) {
      while (request.read_chunk().size > 0) {
      }
      {
        std::lock_guard lock(mutex);
        ++served[name];
      }
      request.write(test::as_bytes(name), true);
    });
    return responder;
  };
  auto a = make_responder("a");
  auto b = make_responder("b");
  auto c = make_responder("c");
  BlockingClient sender(options_for(relay_.port(), channel_));
  for (int i = 0; i < 30; ++i) {
    std::vector<std::uint8_t> response;
    ASSERT_TRUE(sender.send(Target::any(), test::as_bytes("x"), response).ok());
  }
  std::lock_guard lock(mutex);
  EXPECT_EQ(served["a"], 10);
  EXPECT_EQ(served["b"], 10);
  EXPECT_EQ(served["c"], 10);
}

TEST_F(Streams, SendToPeerIdReachesThatPeerOnly) {
  std::atomic<int> a_count{0};
  std::atomic<int> b_count{0};
  BlockingClient a(options_for(relay_.port(), channel_, true));
  a.serve([&](BlockingStream& r) {
    ++a_count;
    test::echo(r);
  });
  BlockingClient b(options_for(relay_.port(), channel_, true));
  b.serve([&](BlockingStream& r) {
    ++b_count;
    test::echo(r);
  });
  BlockingClient sender(options_for(relay_.port(), channel_));
  for (int i = 0; i < 5; ++i) {
    std::vector<std::uint8_t> response;
    ASSERT_TRUE(sender.send(Target::to(b.peer_id()), test::as_bytes("hi"), response).ok());
  }
  EXPECT_EQ(a_count.load(), 0);
  EXPECT_EQ(b_count.load(), 5);
}

TEST_F(Streams, NoRespondersIsImmediate) {
  BlockingClient listener(options_for(relay_.port(), channel_, false));
  BlockingClient sender(options_for(relay_.port(), channel_));
  std::vector<std::uint8_t> response;
  auto outcome = sender.send(Target::any(), test::as_bytes("anyone?"), response);
  EXPECT_EQ(outcome.status, Status::no_responders) << outcome.describe();
  // A peer that does not accept requests, and an id that is not on the channel.
  outcome = sender.send(Target::to(listener.peer_id()), test::as_bytes("x"), response);
  EXPECT_EQ(outcome.status, Status::no_responders);
  outcome = sender.send(Target::to(Uuid::random()), test::as_bytes("x"), response);
  EXPECT_EQ(outcome.status, Status::no_responders);
}

TEST_F(Streams, ApplicationErrorAndMetadataPassThroughUnchanged) {
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  responder.serve([&](BlockingStream& request) {
    while (request.read_chunk().size > 0) {
    }
    std::string seen;
    for (const auto& [key, value] : request.metadata()) seen += key + "=" + value + ";";
    request.write(test::as_bytes(seen));
    request.fail(Status::application, 42, "teapot");
  });
  BlockingClient sender(options_for(relay_.port(), channel_));
  client::StreamOptions options;
  options.metadata = {{"content-type", "text/plain"}, {"trace", "abc"}};
  std::vector<std::uint8_t> response;
  auto outcome = sender.send(Target::any(), test::as_bytes("brew"), response, options);
  EXPECT_EQ(outcome.status, Status::application);
  EXPECT_EQ(outcome.app_code, 42u);
  EXPECT_EQ(outcome.message, "teapot");
  EXPECT_EQ(std::string(response.begin(), response.end()), "content-type=text/plain;trace=abc;");
}

// Each request's handler has a thread of its own while it runs (two handlers that wait for each
// other both finish), and a thread whose handler returned takes the next request.
TEST_F(Streams, ConcurrentHandlersEachHaveAThreadAndThreadsAreReused) {
  std::mutex mutex;
  std::condition_variable changed;
  int inside = 0;
  int most_handled_by_one_thread = 0;
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  responder.serve([&](BlockingStream& request) {
    thread_local int handled_here = 0;
    while (request.read_chunk().size > 0) {
    }
    std::unique_lock lock(mutex);
    most_handled_by_one_thread = std::max(most_handled_by_one_thread, ++handled_here);
    ++inside;
    changed.notify_all();
    const bool both = changed.wait_for(lock, std::chrono::seconds(10), [&] { return inside >= 2; });
    lock.unlock();
    request.write(test::as_bytes(both ? "together" : "alone"));
  });
  BlockingClient sender(options_for(relay_.port(), channel_));
  const auto ask = [&] {
    std::vector<std::uint8_t> response;
    const auto outcome = sender.send(Target::any(), test::as_bytes("?"), response);
    EXPECT_TRUE(outcome.ok()) << outcome.describe();
    return std::string(response.begin(), response.end());
  };
  std::string first;
  std::thread other([&] { first = ask(); });
  const auto second = ask();
  other.join();
  EXPECT_EQ(first, "together");
  EXPECT_EQ(second, "together");
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(most_handled_by_one_thread, 1);
  }
  EXPECT_EQ(ask(), "together");  // `inside` stays at 2 or more from here on
  std::lock_guard lock(mutex);
  EXPECT_EQ(most_handled_by_one_thread, 2) << "the third request did not reuse a thread";
}

}  // namespace
}  // namespace switchboard
