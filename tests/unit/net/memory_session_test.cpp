// Sessions driven over in-memory pipes: the relay's native door without sockets.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "native/session.hpp"
#include "relay/relay_context.hpp"
#include "switchboard/wire/codec.hpp"
#include "transport/transport.hpp"

namespace switchboard::core::net {
namespace {

// The client side of one pipe: writes raw bytes and collects every decoded frame the relay sends.
class MemoryClient {
public:
  MemoryClient(asio::io_context& io, RelayContext& context, std::uint64_t id) {
    auto [relay_end, client_end] = transport::make_memory_pipe(asio::make_strand(io));
    client_ = std::move(client_end);
    session_ = std::make_shared<Session>(std::move(relay_end), context, id);
    session_->start();
    read();
  }

  void send(std::vector<std::uint8_t> bytes) {
    asio::co_spawn(
        client_->get_executor(),
        [this, bytes = std::move(bytes)]() -> asio::awaitable<void> {
          const asio::const_buffer buffer(bytes.data(), bytes.size());
          co_await client_->write(std::span<const asio::const_buffer>(&buffer, 1));
        },
        asio::detached);
  }

  void close() { client_->close(); }

  struct Received {
    wire::FrameHeader header;
    std::vector<std::uint8_t> payload;
  };
  std::vector<Received> frames;
  bool eof = false;

  const Received* find(wire::FrameType type) const {
    for (const auto& frame : frames) {
      if (frame.header.type == type) return &frame;
    }
    return nullptr;
  }

private:
  void read() {
    asio::co_spawn(
        client_->get_executor(),
        [this]() -> asio::awaitable<void> {
          for (;;) {
            auto [ec, n] = co_await client_->read_some(asio::buffer(chunk_));
            if (ec) {
              eof = true;
              co_return;
            }
            pending_.insert(pending_.end(), chunk_.begin(), chunk_.begin() + static_cast<long>(n));
            for (;;) {
              const auto result = wire::decode_frame(pending_, 1 << 20);
              if (result.kind != wire::DecodeResult::Kind::frame) break;
              frames.push_back({result.header, {result.payload.begin(), result.payload.end()}});
              pending_.erase(pending_.begin(),
                             pending_.begin() + static_cast<long>(result.consumed));
            }
          }
        },
        asio::detached);
  }

  std::unique_ptr<Transport> client_;
  std::shared_ptr<Session> session_;
  std::array<std::uint8_t, 4096> chunk_{};
  std::vector<std::uint8_t> pending_;
};

wire::Hello hello_for(const Uuid& channel, const Uuid& peer, bool accepts_requests) {
  wire::Hello hello;
  hello.channel = channel;
  hello.peer_id = peer;
  hello.max_frame = 64 * 1024;
  hello.stream_window = 256 * 1024;
  if (accepts_requests) hello.hello_flags = wire::flags::kAcceptRequests;
  return hello;
}

class MemorySession : public ::testing::Test {
protected:
  // Runs until every handler that can run has run: the pipes make the exchange deterministic.
  void settle() {
    io_.restart();
    io_.poll();
  }

  Limits limits_;
  asio::io_context io_;
  RelayContext context_{limits_};
};

TEST_F(MemorySession, HandshakeIsAnsweredWithWelcomeAndSnapshot) {
  MemoryClient client(io_, context_, 1);
  const Uuid channel = Uuid::random();
  const Uuid peer = Uuid::random();
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello_for(channel, peer, false));
  client.send(bytes);
  settle();

  const auto* welcome_frame = client.find(wire::FrameType::welcome);
  ASSERT_NE(welcome_frame, nullptr);
  wire::Welcome welcome;
  ASSERT_EQ(wire::parse_welcome(welcome_frame->payload, welcome), wire::DecodeError::none);
  EXPECT_EQ(welcome.peer_id, peer);
  EXPECT_EQ(welcome.max_frame, limits_.max_frame);

  const auto* snapshot_frame = client.find(wire::FrameType::presence);
  ASSERT_NE(snapshot_frame, nullptr);
  wire::Presence snapshot;
  ASSERT_EQ(wire::parse_presence(snapshot_frame->payload, snapshot), wire::DecodeError::none);
  EXPECT_EQ(snapshot.event, wire::PresenceEvent::snapshot);
  EXPECT_TRUE(snapshot.peers.empty());  // the peers already there: none
  EXPECT_EQ(snapshot.version, 1U);
  client.close();
  settle();
}

TEST_F(MemorySession, RequestReachesResponderOnAnotherSession) {
  const Uuid channel = Uuid::random();
  const Uuid responder_id = Uuid::random();
  const Uuid sender_id = Uuid::random();
  MemoryClient responder(io_, context_, 1);
  MemoryClient sender(io_, context_, 2);
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello_for(channel, responder_id, true));
  responder.send(bytes);
  settle();
  bytes.clear();
  wire::append_hello(bytes, hello_for(channel, sender_id, false));
  wire::Open open;
  open.kind = wire::StreamKind::to_peer;
  open.peer = responder_id;
  const std::vector<std::uint8_t> body = {'p', 'i', 'n', 'g'};
  wire::append_open(bytes, 1, open, body, true);
  sender.send(bytes);
  settle();

  const auto* open_frame = responder.find(wire::FrameType::open);
  ASSERT_NE(open_frame, nullptr);
  wire::Open received;
  wire::Bytes received_body;
  ASSERT_EQ(wire::parse_open(open_frame->payload, received, received_body),
            wire::DecodeError::none);
  EXPECT_EQ(received.peer, sender_id);
  EXPECT_EQ(std::vector<std::uint8_t>(received_body.begin(), received_body.end()), body);
  EXPECT_TRUE(open_frame->header.flags & wire::flags::kFin);
  responder.close();
  sender.close();
  settle();
}

// An observer (version 2, OBSERVE) is a watcher of the registry, not a member: it hears of a
// peer joining, its OPEN is refused on that stream only, and its leaving unregisters it.
TEST_F(MemorySession, ObserverWatchesWithoutJoiningAndCannotOpen) {
  const Uuid channel = Uuid::random();
  MemoryClient observer(io_, context_, 1);
  auto hello = hello_for(channel, Uuid{}, false);
  hello.version = 2;
  hello.hello_flags = wire::flags::kObserve;
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello);
  wire::Open open;
  open.kind = wire::StreamKind::broadcast;
  wire::append_open(bytes, 1, open, {}, true);
  observer.send(bytes);
  settle();
  const auto* welcome_frame = observer.find(wire::FrameType::welcome);
  ASSERT_NE(welcome_frame, nullptr);
  wire::Welcome welcome;
  ASSERT_EQ(wire::parse_welcome(welcome_frame->payload, welcome), wire::DecodeError::none);
  EXPECT_EQ(welcome.version, 2);
  EXPECT_FALSE(welcome.peer_id.is_nil());
  EXPECT_EQ(context_.registry.stats().peers, 0u);
  const auto* reset_frame = observer.find(wire::FrameType::reset);
  ASSERT_NE(reset_frame, nullptr);
  EXPECT_EQ(reset_frame->header.stream, 1u);
  wire::Reset reset;
  ASSERT_EQ(wire::parse_reset(reset_frame->payload, reset), wire::DecodeError::none);
  EXPECT_EQ(reset.status, Status::permission_denied);

  MemoryClient member(io_, context_, 2);
  const Uuid member_id = Uuid::random();
  bytes.clear();
  wire::append_hello(bytes, hello_for(channel, member_id, false));
  member.send(bytes);
  settle();
  std::vector<wire::Presence> events;
  for (const auto& frame : observer.frames) {
    if (frame.header.type != wire::FrameType::presence) continue;
    wire::Presence presence;
    ASSERT_EQ(wire::parse_presence(frame.payload, presence), wire::DecodeError::none);
    events.push_back(presence);
  }
  ASSERT_EQ(events.size(), 2u);  // the (empty) snapshot, then the member's join
  EXPECT_TRUE(events[0].peers.empty());
  EXPECT_EQ(events[1].event, wire::PresenceEvent::joined);
  EXPECT_EQ(events[1].peers, std::vector<Uuid>{member_id});
  EXPECT_EQ(member.find(wire::FrameType::presence)->payload.size(), 12u);  // nobody else there
  EXPECT_FALSE(observer.eof);

  observer.close();
  settle();
  // Unwatched: the member's leaving reaches no closed session.
  member.close();
  settle();
  EXPECT_EQ(context_.registry.stats().peers, 0u);
}

TEST_F(MemorySession, GarbageGetsProtocolErrorAndTheConnectionEnds) {
  MemoryClient client(io_, context_, 1);
  client.send(std::vector<std::uint8_t>(64, 0xEE));
  settle();
  const auto* error_frame = client.find(wire::FrameType::error);
  ASSERT_NE(error_frame, nullptr);
  wire::Error error;
  ASSERT_EQ(wire::parse_error(error_frame->payload, error), wire::DecodeError::none);
  EXPECT_EQ(error.status, Status::protocol_error);
  EXPECT_TRUE(client.eof);
}

// The relay's own thread not running (descheduled, stopped) is not the peer's silence: the first
// tick after the stall asks with a PING, and only a PING left unanswered for an interval counts.
TEST(MemorySessionKeepalive, TheRelaysOwnStallIsNotTakenForThePeersSilence) {
  using namespace std::chrono_literals;
  Limits limits;
  limits.keepalive_interval = 40ms;
  RelayContext context{limits};  // outlives the I/O context, whose handlers hold sessions
  asio::io_context io;
  MemoryClient client(io, context, 1);
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello_for(Uuid::random(), Uuid::random(), false));
  client.send(bytes);
  io.poll();
  ASSERT_NE(client.find(wire::FrameType::welcome), nullptr);

  std::this_thread::sleep_for(5 * limits.keepalive_interval);  // nothing of the relay runs
  io.restart();
  io.poll();
  EXPECT_FALSE(client.eof) << "dropped for the relay's own stall";
  EXPECT_NE(client.find(wire::FrameType::ping), nullptr);

  // This peer never answers. The relay stays late (every tick after more than two ticks'
  // time), yet only the first late tick of a row is let go: the PING's interval runs out.
  const auto give_up = std::chrono::steady_clock::now() + 5s;
  while (!client.eof && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(limits.keepalive_interval * 3 / 4);
    io.restart();
    io.poll();
  }
  EXPECT_TRUE(client.eof) << "a peer that does not answer PINGs must be dropped";
}

}  // namespace
}  // namespace switchboard::core::net
