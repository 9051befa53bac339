// Deadlines, idle timeouts, cancellation from either side, and counterparts that disappear.
#include <gtest/gtest.h>

#include <future>
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
using namespace std::chrono_literals;

struct Seen {
  std::promise<client::Outcome> outcome;
  std::promise<std::chrono::milliseconds> deadline;
};

class Timeouts : public ::testing::Test {
protected:
  test::InProcessRelay relay_{test::fast_limits()};
  Uuid channel_ = Uuid::random();
};

// A responder that reads the request, never answers, and reports how its stream ended.
void serve_silently(BlockingClient& responder, Seen& seen) {
  responder.serve([&](BlockingStream& request) {
    seen.deadline.set_value(request.deadline());
    while (request.read_chunk().size > 0) {
    }
    seen.outcome.set_value(request.result());
  });
}

TEST_F(Timeouts, DeadlineResetsBothSidesAndIsPropagated) {
  Seen seen;
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  serve_silently(responder, seen);
  BlockingClient sender(options_for(relay_.port(), channel_));
  client::StreamOptions options;
  options.deadline = 300ms;
  auto stream = sender.request(Target::any(), options);
  ASSERT_TRUE(stream.write(test::as_bytes("slow question"), true).ok());
  const auto outcome = stream.result();
  EXPECT_EQ(outcome.status, Status::deadline_exceeded) << outcome.describe();
  const auto deadline = seen.deadline.get_future().get();
  EXPECT_GT(deadline.count(), 0);
  EXPECT_LE(deadline.count(), 300);
  EXPECT_EQ(seen.outcome.get_future().get().status, Status::deadline_exceeded);
}

TEST_F(Timeouts, IdleStreamIsResetWithIdleTimeout) {
  Seen seen;
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  serve_silently(responder, seen);
  BlockingClient sender(options_for(relay_.port(), channel_));
  client::StreamOptions options;
  options.idle_timeout = 200ms;
  auto stream = sender.request(Target::any(), options);
  ASSERT_TRUE(stream.write(test::as_bytes("then silence")).ok());
  EXPECT_EQ(stream.result().status, Status::idle_timeout);
  EXPECT_EQ(seen.outcome.get_future().get().status, Status::idle_timeout);
}

TEST_F(Timeouts, MovingStreamIsNeverCutByIdleTimeout) {
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  responder.serve(test::echo);
  BlockingClient sender(options_for(relay_.port(), channel_));
  client::StreamOptions options;
  options.idle_timeout = 250ms;
  auto stream = sender.request(Target::any(), options);
  std::thread reader([&] {
    while (stream.read_chunk().size > 0) {
    }
  });
  // Paced writes: the stream lives for ~6 idle timeouts but is never idle for one (the pace
  // leaves a 5x margin for a loaded machine).
  int written = 0;
  for (; written < 30; ++written) {
    if (!stream.write(test::as_bytes("tick")).ok()) break;
    std::this_thread::sleep_for(50ms);
  }
  const bool finished = written == 30 && stream.finish().ok();
  reader.join();
  EXPECT_EQ(written, 30);
  EXPECT_TRUE(finished);
  EXPECT_TRUE(stream.result().ok()) << switchboard::status_name(stream.result().status);
}

TEST_F(Timeouts, RequesterCancelReachesResponder) {
  Seen seen;
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  serve_silently(responder, seen);
  BlockingClient sender(options_for(relay_.port(), channel_));
  auto stream = sender.request(Target::any());
  ASSERT_TRUE(stream.write(test::as_bytes("never mind")).ok());
  seen.deadline.get_future().wait();  // the responder has the request
  stream.reset(Status::cancelled, "changed my mind");
  const auto outcome = seen.outcome.get_future().get();
  EXPECT_EQ(outcome.status, Status::cancelled);
  EXPECT_EQ(outcome.message, "changed my mind");
}

TEST_F(Timeouts, ResponderCancelReachesRequester) {
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  responder.serve([](BlockingStream& request) {
    request.read_chunk();
    request.reset(Status::cancelled, "busy");
  });
  BlockingClient sender(options_for(relay_.port(), channel_));
  auto stream = sender.request(Target::any());
  ASSERT_TRUE(stream.write(test::as_bytes("hello?")).ok());
  const auto outcome = stream.result();
  EXPECT_EQ(outcome.status, Status::cancelled);
  EXPECT_EQ(outcome.message, "busy");
}

TEST_F(Timeouts, ResponderDisconnectGivesPeerGone) {
  std::promise<void> got_request;
  auto responder = std::make_unique<BlockingClient>(options_for(relay_.port(), channel_, true));
  responder->serve([&](BlockingStream& request) {
    request.read_chunk();
    got_request.set_value();
    request.result();
  });
  BlockingClient sender(options_for(relay_.port(), channel_));
  auto stream = sender.request(Target::any());
  ASSERT_TRUE(stream.write(test::as_bytes("are you there")).ok());
  got_request.get_future().wait();
  responder->close();
  EXPECT_EQ(stream.result().status, Status::peer_gone);
}

TEST_F(Timeouts, RequesterCrashGivesPeerGoneToResponder) {
  Seen seen;
  BlockingClient responder(options_for(relay_.port(), channel_, true));
  serve_silently(responder, seen);
  test::RawPeer raw(relay_.port());
  raw.join(channel_);
  std::vector<std::uint8_t> open;
  wire::Open request;
  request.kind = wire::StreamKind::to_any;
  wire::append_open(open, 1, request, test::as_bytes("partial"), false);
  raw.send(open);
  seen.deadline.get_future().wait();
  raw.abort();
  EXPECT_EQ(seen.outcome.get_future().get().status, Status::peer_gone);
}

}  // namespace
}  // namespace switchboard
