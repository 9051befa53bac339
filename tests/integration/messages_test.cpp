// Whole messages (MESSAGE): publish and send through real relays with the async client,
// order, the tally, stream-only receivers, a receiver that reads nothing, and bad input.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <mutex>
#include <thread>

#include "support/raw_peer.hpp"
#include "support/relay.hpp"
#include "switchboard/client.hpp"
#include "switchboard/wire/codec.hpp"

namespace switchboard {
namespace {

namespace asio = boost::asio;
using client::Connection;
using client::Message;
using client::MessageTally;

// Message `index` of a sender: its size varies (0 to 2,999 bytes) and every byte depends on
// the index, so a lost, duplicated, reordered or damaged message shows.
std::vector<std::uint8_t> message_body(std::uint32_t index) {
  std::vector<std::uint8_t> body((index * 7919U) % 3000U);
  for (std::size_t i = 0; i < body.size(); ++i) {
    body[i] = static_cast<std::uint8_t>(index * 31U + i);
  }
  if (body.size() >= 4) {
    body[0] = static_cast<std::uint8_t>(index >> 24);
    body[1] = static_cast<std::uint8_t>(index >> 16);
    body[2] = static_cast<std::uint8_t>(index >> 8);
    body[3] = static_cast<std::uint8_t>(index);
  }
  return body;
}

// A peer on its own I/O thread, recording the messages it receives.
class MessagePeer {
public:
  template <typename F>
  auto run(F f) {
    return asio::co_spawn(io_, f, asio::use_future).get();
  }
  MessagePeer(std::uint16_t port, const Uuid& channel) {
    client::ConnectOptions options;
    options.port = port;
    options.channel = channel;
    client::Outcome outcome;
    connection_ = run([&]() -> asio::awaitable<std::shared_ptr<Connection>> {
      auto connection = co_await Connection::connect(io_.get_executor(), options, outcome);
      if (connection) {
        connection->on_message([this](const Message& message) {
          std::lock_guard lock(mutex_);
          received_.push_back(Received{
              message.sender, message.broadcast,
              std::vector<std::uint8_t>(message.body.data, message.body.data + message.body.size)});
        });
      }
      co_return connection;
    });
    if (!connection_) throw std::runtime_error("connect failed: " + outcome.describe());
  }
  ~MessagePeer() {
    asio::post(io_, [this] { connection_->close(); });
    work_.reset();
    thread_.join();
  }

  struct Received {
    Uuid sender;
    bool broadcast = false;
    std::vector<std::uint8_t> body;
  };

  const Uuid& id() const { return connection_->peer_id(); }
  Connection& connection() { return *connection_; }
  std::vector<Received> received() {
    std::lock_guard lock(mutex_);
    return received_;
  }
  std::size_t count() {
    std::lock_guard lock(mutex_);
    return received_.size();
  }

private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::thread thread_{[this] { io_.run(); }};
  std::mutex mutex_;
  std::vector<Received> received_;
  std::shared_ptr<Connection> connection_;
};

TEST(Messages, PublishedMessagesReachEveryOtherPeerWholeAndInOrder) {
  test::InProcessRelay relay{test::fast_limits()};
  const auto channel = Uuid::random();
  std::vector<std::unique_ptr<MessagePeer>> receivers;
  for (int i = 0; i < 3; ++i)
    receivers.push_back(std::make_unique<MessagePeer>(relay.port(), channel));
  MessagePeer sender(relay.port(), channel);
  ASSERT_TRUE(test::eventually([&] {
    return sender.run([&]() -> asio::awaitable<std::size_t> {
      co_return sender.connection().peers().size();
    }) == 3;
  }));

  constexpr std::uint32_t kMessages = 3000;  // about 4.5 MB: several message windows
  const MessageTally tally = sender.run([&]() -> asio::awaitable<MessageTally> {
    for (std::uint32_t i = 0; i < kMessages; ++i) {
      const auto body = message_body(i);
      if (!sender.connection().try_publish(body)) {
        const auto outcome = co_await sender.connection().publish(body);
        if (!outcome.ok()) throw std::runtime_error(outcome.describe());
      }
    }
    co_return co_await sender.connection().flush_messages();
  });
  EXPECT_EQ(tally.sent, kMessages);
  EXPECT_EQ(tally.settled, kMessages);
  EXPECT_EQ(tally.delivered, 3U * kMessages);
  EXPECT_EQ(tally.dropped, 0U);
  EXPECT_EQ(tally.refused, 0U);
  EXPECT_EQ(tally.unknown, 0U);
  for (auto& receiver : receivers) {
    // Delivered means written to the receiver's socket; its handler runs once it reads them.
    ASSERT_TRUE(test::eventually([&] { return receiver->count() == kMessages; }));
    const auto received = receiver->received();
    for (std::uint32_t i = 0; i < kMessages; ++i) {
      ASSERT_EQ(received[i].body, message_body(i)) << "message " << i;
      ASSERT_EQ(received[i].sender, sender.id());
      ASSERT_TRUE(received[i].broadcast);
    }
  }
  EXPECT_EQ(sender.count(), 0U);  // never its own
  EXPECT_EQ(relay.counters().native.messages_received.load(), kMessages);
  EXPECT_EQ(relay.counters().native.messages_delivered.load(), 3U * kMessages);
}

TEST(Messages, SentToOnePeerReachOnlyItAndAnAbsentPeerCountsAsDropped) {
  test::InProcessRelay relay{test::fast_limits()};
  const auto channel = Uuid::random();
  MessagePeer target(relay.port(), channel);
  MessagePeer bystander(relay.port(), channel);
  MessagePeer sender(relay.port(), channel);
  const auto to = target.id();
  const MessageTally tally = sender.run([&]() -> asio::awaitable<MessageTally> {
    auto& c = sender.connection();
    for (std::uint32_t i = 0; i < 100; ++i) {
      if (!(co_await c.send_message(to, message_body(i))).ok()) throw std::runtime_error("send");
    }
    (void)co_await c.send_message(Uuid::random(), message_body(1));  // nobody has that id
    (void)co_await c.send_message(c.peer_id(), message_body(2));     // nor is it sent back
    const auto nil = co_await c.send_message(Uuid{}, message_body(3));
    if (nil.status != Status::protocol_error) throw std::runtime_error("nil target accepted");
    co_return co_await c.flush_messages();
  });
  EXPECT_EQ(tally.sent, 102U);
  EXPECT_EQ(tally.settled, 102U);
  EXPECT_EQ(tally.delivered, 100U);
  EXPECT_EQ(tally.dropped, 2U);
  ASSERT_TRUE(test::eventually([&] { return target.count() == 100; }));
  const auto received = target.received();
  for (std::uint32_t i = 0; i < 100; ++i) {
    ASSERT_EQ(received[i].body, message_body(i));
    ASSERT_FALSE(received[i].broadcast);
  }
  EXPECT_EQ(bystander.count(), 0U);
  EXPECT_EQ(sender.count(), 0U);
}

TEST(Messages, TooLargeFailsAtTheSenderAndTheLargestGoesThrough) {
  test::InProcessRelay relay{test::fast_limits()};
  const auto channel = Uuid::random();
  MessagePeer receiver(relay.port(), channel);
  MessagePeer sender(relay.port(), channel);
  const auto largest = sender.connection().max_message_size();
  EXPECT_EQ(largest, relay.server().context().limits.max_frame - wire::kMessageHeadSize);
  const auto outcomes =
      sender.run([&]() -> asio::awaitable<std::pair<client::Outcome, client::Outcome>> {
        auto& c = sender.connection();
        const auto too_large = co_await c.publish(std::vector<std::uint8_t>(largest + 1, 1));
        const auto fits = co_await c.publish(std::vector<std::uint8_t>(largest, 2));
        co_await c.flush_messages();
        co_return std::pair{too_large, fits};
      });
  EXPECT_EQ(outcomes.first.status, Status::resource_exhausted) << outcomes.first.describe();
  EXPECT_TRUE(outcomes.second.ok()) << outcomes.second.describe();
  ASSERT_TRUE(test::eventually([&] { return receiver.count() == 1; }));
  EXPECT_EQ(receiver.received()[0].body.size(), largest);
}

TEST(Messages, AStreamOnlyReceiverGetsEachMessageAsAOneFrameBroadcast) {
  test::InProcessRelay relay{test::fast_limits()};
  const auto channel = Uuid::random();
  test::RawPeer old_client(relay.port());
  old_client.join(channel, false, 1 << 20, {}, 2);
  MessagePeer sender(relay.port(), channel);
  const MessageTally tally = sender.run([&]() -> asio::awaitable<MessageTally> {
    co_await sender.connection().publish(message_body(1234));
    co_await sender.connection().send_message(sender.connection().peers().front(), message_body(7));
    co_return co_await sender.connection().flush_messages();
  });
  EXPECT_EQ(tally.delivered, 2U);
  for (std::uint32_t index : {1234U, 7U}) {
    auto open = old_client.expect_type(wire::FrameType::open);
    ASSERT_TRUE(open);
    EXPECT_NE(open->header.flags & wire::flags::kFin, 0);
    wire::Open parsed;
    wire::Bytes body;
    ASSERT_EQ(wire::parse_open(open->bytes(), parsed, body), wire::DecodeError::none);
    EXPECT_EQ(parsed.kind, wire::StreamKind::broadcast);
    EXPECT_EQ(parsed.peer, sender.id());
    EXPECT_EQ(std::vector<std::uint8_t>(body.begin(), body.end()), message_body(index));
  }
  // A version-2 client cannot send one: MESSAGE is not in its protocol.
  std::vector<std::uint8_t> frame;
  const auto body = message_body(5);
  wire::append_message(frame, wire::MessageHead{wire::StreamKind::broadcast, {}}, body);
  old_client.send(frame);
  auto error = old_client.expect_type(wire::FrameType::error);
  ASSERT_TRUE(error);
  wire::Error parsed;
  ASSERT_EQ(wire::parse_error(error->bytes(), parsed), wire::DecodeError::none);
  EXPECT_EQ(parsed.status, Status::protocol_error);
  EXPECT_NE(parsed.message.find("version 2"), std::string::npos) << parsed.message;
}

TEST(Messages, MalformedMessagesEndTheConnectionWithAClearErrorAndDisturbNobody) {
  test::InProcessRelay relay{test::fast_limits()};
  const auto channel = Uuid::random();
  MessagePeer bystander(relay.port(), channel);
  struct Case {
    wire::MessageHead head;
    std::uint8_t kind_byte;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{wire::StreamKind::broadcast, Uuid::random()}, 2, "names none"},
      {{wire::StreamKind::to_peer, {}}, 0, "names it"},
      {{wire::StreamKind::broadcast, {}}, 1, "malformed MESSAGE"},  // kind 1 (any) is undefined
  };
  for (const auto& c : cases) {
    test::RawPeer bad(relay.port());
    bad.join(channel);
    std::vector<std::uint8_t> frame;
    wire::append_message(frame, c.head, std::vector<std::uint8_t>(10, 1));
    frame[wire::kHeaderSize] = c.kind_byte;
    bad.send(frame);
    auto error = bad.expect_type(wire::FrameType::error);
    ASSERT_TRUE(error) << c.expected;
    wire::Error parsed;
    ASSERT_EQ(wire::parse_error(error->bytes(), parsed), wire::DecodeError::none);
    EXPECT_EQ(parsed.status, Status::protocol_error);
    EXPECT_NE(parsed.message.find(c.expected), std::string::npos) << parsed.message;
    EXPECT_TRUE(bad.expect_closed());
  }
  EXPECT_EQ(bystander.count(), 0U);
  EXPECT_EQ(bystander.run([&]() -> asio::awaitable<client::ConnectionState> {
    co_return bystander.connection().state();
  }),
            client::ConnectionState::connected);
}

TEST(Messages, AReceiverThatReadsNothingHoldsSendersToTheWindowThenLosesMessagesAlone) {
  auto limits = test::fast_limits();
  limits.message_window = 64 * 1024;
  limits.keepalive_interval = std::chrono::seconds(30);  // the stalled peer answers no PING
  test::InProcessRelay relay{limits};
  const auto channel = Uuid::random();
  MessagePeer reader(relay.port(), channel);
  // Reads nothing once joined; a small receive buffer so that the relay's writes stop soon.
  test::RawPeer stalled(relay.port(), 4096);
  stalled.join(channel);
  MessagePeer sender(relay.port(), channel);

  constexpr std::uint32_t kMessages = 6000;  // 6 MB: more than the sockets' buffers hold
  constexpr std::size_t kSize = 1024;
  std::uint64_t most_in_flight = 0;
  const MessageTally tally = sender.run([&]() -> asio::awaitable<MessageTally> {
    auto& c = sender.connection();
    std::vector<std::uint8_t> body(kSize);
    for (std::uint32_t i = 0; i < kMessages; ++i) {
      body[0] = static_cast<std::uint8_t>(i);
      if (!(co_await c.publish(body)).ok()) throw std::runtime_error("publish");
      const auto now = c.message_tally();
      most_in_flight = std::max(most_in_flight, now.sent - now.settled);
    }
    co_return co_await c.flush_messages();
  });
  // The relay never held more of the sender's messages than its window.
  EXPECT_LE(most_in_flight, limits.message_window / kSize);
  EXPECT_EQ(tally.settled, kMessages);
  EXPECT_EQ(tally.delivered + tally.dropped, 2U * kMessages);
  EXPECT_GT(tally.dropped, 0U);
  // The reading peer got every one, in order.
  ASSERT_TRUE(test::eventually([&] { return reader.count() == kMessages; }));
  const auto received = reader.received();
  for (std::uint32_t i = 0; i < kMessages; ++i) {
    ASSERT_EQ(received[i].body[0], static_cast<std::uint8_t>(i));
  }
  // When the stalled peer reads again it learns how many it lost, and it is still a member.
  std::uint64_t lost = 0;
  while (auto report = stalled.expect_type(wire::FrameType::message_report)) {
    wire::MessageReport parsed;
    ASSERT_EQ(wire::parse_message_report(report->bytes(), parsed), wire::DecodeError::none);
    lost += parsed.lost;
    if (lost > 0) break;
  }
  EXPECT_GT(lost, 0U);
  EXPECT_EQ(reader.run([&]() -> asio::awaitable<std::size_t> {
    co_return reader.connection().peers().size();
  }),
            2U);
  EXPECT_GE(relay.counters().native.slow_consumer_drops.load(), 1U);
}

TEST(Messages, MoreThanTheWindowInOneGoIsAConnectionErrorAndDisturbsNobody) {
  auto limits = test::fast_limits();
  limits.message_window = 4096;
  test::InProcessRelay relay{limits};
  const auto channel = Uuid::random();
  MessagePeer receiver(relay.port(), channel);
  test::RawPeer flooder(relay.port());
  flooder.join(channel);
  // 64 KiB of messages in one write: the relay reads them before any can be written to the
  // receiver and returned as credit, so the window (4 KiB) is overrun.
  std::vector<std::uint8_t> frames;
  const std::vector<std::uint8_t> body(1024, 7);
  for (int i = 0; i < 64; ++i) {
    wire::append_message(frames, wire::MessageHead{wire::StreamKind::broadcast, {}}, body);
  }
  flooder.send(frames);
  auto error = flooder.expect_type(wire::FrameType::error);
  ASSERT_TRUE(error);
  wire::Error parsed;
  ASSERT_EQ(wire::parse_error(error->bytes(), parsed), wire::DecodeError::none);
  EXPECT_EQ(parsed.status, Status::protocol_error);
  EXPECT_EQ(parsed.message, "message window exceeded");
  // What fitted the window reached the receiver; the receiver's connection is untouched.
  ASSERT_TRUE(test::eventually([&] { return receiver.count() == 4; }));
  EXPECT_EQ(receiver.run([&]() -> asio::awaitable<client::ConnectionState> {
    co_return receiver.connection().state();
  }),
            client::ConnectionState::connected);
}

TEST(Messages, ASenderThatVanishesWithMessagesInFlightLeavesTheRelayWhole) {
  auto limits = test::fast_limits();
  limits.keepalive_interval = std::chrono::seconds(30);  // the stalled peer answers no PING
  test::InProcessRelay relay{limits};
  const auto channel = Uuid::random();
  // Reads nothing for now, so the sender's messages stay in the relay.
  test::RawPeer stalled(relay.port(), 4096);
  stalled.join(channel);
  test::RawPeer sender(relay.port());
  sender.join(channel);
  std::vector<std::uint8_t> frames;
  const std::vector<std::uint8_t> body(1000, 9);
  for (int i = 0; i < 500; ++i) {  // 500 KB: within the window, more than the sockets hold
    wire::append_message(frames, wire::MessageHead{wire::StreamKind::broadcast, {}}, body);
  }
  sender.send(frames);
  ASSERT_TRUE(
      test::eventually([&] { return relay.counters().native.messages_received.load() == 500; }));
  sender.abort();  // gone, with its messages still waiting for the stalled peer
  // The stalled peer now reads: what the relay still held arrives whole, each from the sender.
  std::size_t received = 0;
  while (auto frame = stalled.expect_type(wire::FrameType::message, std::chrono::seconds(2))) {
    wire::MessageHead head;
    wire::Bytes got;
    ASSERT_EQ(wire::parse_message(frame->bytes(), head, got), wire::DecodeError::none);
    ASSERT_EQ(got.size(), body.size());
    if (++received == 500) break;
  }
  EXPECT_GT(received, 0U);
  // The relay goes on: a new pair of peers exchanges messages on the channel.
  MessagePeer a(relay.port(), channel);
  MessagePeer b(relay.port(), channel);
  const auto tally = a.run([&]() -> asio::awaitable<MessageTally> {
    co_await a.connection().send_message(b.id(), message_body(42));
    co_return co_await a.connection().flush_messages();
  });
  EXPECT_EQ(tally.delivered, 1U);
  ASSERT_TRUE(test::eventually([&] { return b.count() == 1; }));
  EXPECT_EQ(b.received()[0].body, message_body(42));
}

}  // namespace
}  // namespace switchboard
