// Receivers that stop draining (by credit, by socket, or both) hold nobody else back.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <optional>
#include <thread>

#include "support/clients.hpp"
#include "support/raw_peer.hpp"
#include "support/receivers.hpp"
#include "support/relay.hpp"
#include "support/stall.hpp"

namespace switchboard {
namespace {

using namespace std::chrono_literals;
using client::BlockingClient;
using client::BlockingStream;
using test::expect_within_bound;
using test::kBroadcastBytes;
using test::stall_limits;
using test::timed_broadcast;

// A receive buffer this small fills after a few KiB: the relay's writes to the peer then stall
// with credit to spare, whatever window the peer announced.
constexpr int kTinyReceiveBuffer = 4096;

// Sends a PING every few milliseconds without reading anything: a peer that looks alive.
class Pinger {
public:
  explicit Pinger(test::RawPeer& peer)
      : thread_([&peer, this] {
          std::uint64_t n = 0;
          while (!stop_.load()) {
            std::vector<std::uint8_t> frame;
            wire::append_ping(frame, ++n, false);
            peer.send(frame);
            std::this_thread::sleep_for(20ms);
          }
        }) {}
  ~Pinger() {
    stop_ = true;
    thread_.join();
  }
  Pinger(const Pinger&) = delete;
  Pinger& operator=(const Pinger&) = delete;

private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The healthy receivers got every broadcast whole.
void expect_received(std::vector<std::unique_ptr<test::Receiver>>& receivers,
                     const std::vector<test::Checksum>& sent) {
  for (auto& r : receivers) {
    ASSERT_TRUE(test::eventually([&] { return r->count() == sent.size(); }, 10s));
    for (std::size_t i = 0; i < sent.size(); ++i) {
      EXPECT_EQ(r->sums[i].value(), sent[i].value());
      EXPECT_EQ(r->sums[i].size(), sent[i].size());
    }
  }
}

void socket_stalled_broadcasts(std::uint32_t announced_window, int broadcasts) {
  const auto limits = stall_limits();
  test::InProcessRelay relay{limits};
  test::BroadcastScene scene(relay.port());
  const auto& channel = scene.channel;
  auto& sender = scene.sender;
  auto& sent = scene.sent;
  const auto& baseline = scene.baseline;
  ASSERT_TRUE(baseline.outcome.ok()) << baseline.outcome.describe();
  ASSERT_EQ(baseline.outcome.delivered, 2u);

  // Announces credit, then never reads its socket; it keeps sending, so it looks alive.
  test::RawPeer stalled(relay.port(), kTinyReceiveBuffer);
  const auto stalled_id = stalled.join(channel, false, announced_window);
  const auto is_member = [&] {
    const auto members = sender.client.peers();
    return std::find(members.begin(), members.end(), stalled_id) != members.end();
  };
  ASSERT_TRUE(test::eventually(is_member));
  std::optional<Pinger> pinger;
  pinger.emplace(stalled);
  for (int i = 0; i < broadcasts; ++i) {
    sent.emplace_back();
    const auto result = timed_broadcast(sender.client, sent.back());
    ASSERT_TRUE(result.outcome.ok()) << "broadcast " << i << ": " << result.outcome.describe();
    EXPECT_EQ(result.outcome.delivered, 2u) << "broadcast " << i;
    EXPECT_EQ(result.outcome.dropped, 1u) << "broadcast " << i;
    expect_within_bound(result.elapsed, baseline.elapsed, limits);
  }
  expect_received(scene.receivers, sent);
  EXPECT_EQ(relay.counters().native.slow_consumer_drops.load(),
            static_cast<std::uint64_t>(broadcasts));
  // Still a member: dropped from the broadcasts, not from the channel.
  EXPECT_TRUE(is_member());
  // Once it reads again (and has stopped sending), it learns why each broadcast left it.
  pinger.reset();
  for (int i = 0; i < broadcasts; ++i) {
    auto reset = stalled.expect_type(wire::FrameType::reset, 10s);
    ASSERT_TRUE(reset) << "reset " << i;
    wire::Reset parsed;
    ASSERT_EQ(wire::parse_reset(reset->bytes(), parsed), wire::DecodeError::none);
    EXPECT_EQ(parsed.status, Status::slow_consumer);
  }
}

TEST(StalledReceiver, SocketStalledWithALargeWindowHoldsABroadcastOnlyForTheTimeout) {
  socket_stalled_broadcasts(32 * 1024 * 1024, 1);
}

TEST(StalledReceiver, SocketStalledWithTheDefaultWindowHoldsNoBroadcastLonger) {
  // The first broadcasts stall it by credit, the later ones by socket: each is let go alike.
  socket_stalled_broadcasts(1024 * 1024, 3);
}

TEST(StalledReceiver, SocketStalledResponderEndsOnlyItsOwnStream) {
  auto limits = stall_limits();
  limits.write_timeout = 1s;
  test::InProcessRelay relay{limits};
  const auto channel = Uuid::random();
  test::RawPeer stalled(relay.port(), kTinyReceiveBuffer);
  const auto stalled_id = stalled.join(channel, true, 32 * 1024 * 1024);
  const Pinger pinger(stalled);
  BlockingClient healthy(test::options_for(relay.port(), channel, true));
  healthy.serve(test::echo);
  BlockingClient requester(test::options_for(relay.port(), channel));

  // The stream to the stalled responder: its bytes fill the responder's socket, then wait.
  auto to_stalled = requester.request(client::Target::to(stalled_id));
  auto stalled_writer = std::async(std::launch::async, [&] {
    std::vector<std::uint8_t> chunk(64 * 1024, 1);
    for (std::uint64_t sent = 0; sent < kBroadcastBytes; sent += chunk.size()) {
      if (!to_stalled.write(chunk).ok()) break;
    }
    return to_stalled.result();
  });

  // Meanwhile a stream from the same requester to another responder moves 8 MiB both ways.
  auto to_healthy = requester.request(client::Target::to(healthy.peer_id()));
  test::Checksum sent;
  auto writer = std::async(std::launch::async, [&] {
    std::vector<std::uint8_t> chunk(64 * 1024);
    for (std::uint64_t offset = 0, index = 0; offset < kBroadcastBytes; offset += chunk.size()) {
      test::fill_pattern(chunk, 3, index++);
      sent.update(chunk);
      if (!to_healthy.write(chunk).ok()) return false;
    }
    return to_healthy.finish().ok();
  });
  test::Checksum echoed;
  for (;;) {
    auto chunk = to_healthy.read_chunk();
    if (chunk.size == 0) break;
    echoed.update(chunk.bytes());
  }
  ASSERT_TRUE(writer.get());
  EXPECT_TRUE(to_healthy.result().ok());
  EXPECT_EQ(echoed.value(), sent.value());
  EXPECT_EQ(echoed.size(), kBroadcastBytes);

  // The stalled responder's socket took nothing for the write timeout: it is closed, and the
  // stream towards it ends with PEER_GONE rather than at its idle timeout.
  ASSERT_EQ(stalled_writer.wait_for(15s), std::future_status::ready);
  const auto outcome = stalled_writer.get();
  EXPECT_EQ(outcome.status, Status::peer_gone) << outcome.describe();
  EXPECT_GE(relay.counters().native.slow_consumer_drops.load(), 1u);
  ASSERT_TRUE(test::eventually([&] {
    const auto members = requester.peers();
    return std::find(members.begin(), members.end(), stalled_id) == members.end();
  }));
}

// Presence for a peer that reads nothing: the relay's writes fill its socket (a small kernel
// send buffer, socket_send_buffer), the rest waits in its connection buffer, and past
// max_connection_buffer it is closed as a slow consumer. Every change it was sent arrives, in
// version order and whole, before the relay's ERROR, including those the socket took only part
// of; the peer that reads sees the whole channel throughout.
TEST(StalledReceiver, PresenceForAPeerThatReadsNothingEndsAtItsBufferWithNothingTorn) {
  auto limits = test::fast_limits();
  limits.connect_rate_per_address = 0;
  limits.keepalive_interval = 30s;  // the stalled peer answers no PING while it is not read
  limits.max_frame = 1024;
  limits.stream_window = 1024;
  limits.max_connection_buffer = limits.stream_window + limits.max_frame;  // the least allowed
  limits.socket_send_buffer = 4096;
  test::InProcessRelay relay{limits};
  const auto channel = Uuid::random();
  test::RawPeer stalled(relay.port(), kTinyReceiveBuffer);
  stalled.join(channel);
  BlockingClient witness(test::options_for(relay.port(), channel));
  ASSERT_TRUE(test::eventually([&] { return witness.peers().size() == 1; }));
  // Each passer is two changes: the witness has applied every one so far.
  const auto joined_version = witness.membership_version();
  int passers = 0;
  const auto witness_caught_up = [&] {
    return witness.membership_version() >= joined_version + 2 * static_cast<std::uint64_t>(passers);
  };

  // Peers come and go, two changes each, until the stalled peer's buffer overflows; bounded in
  // count (a few hundred fill it). The passers wait for the witness every 64: however slowly
  // its thread runs, it is never sent more at once than its socket takes (128 changes, 5 KiB,
  // against 8 KiB), while the stalled peer's nearly full socket cuts such a write and leaves
  // more than its connection buffer holds (2 KiB): the case where the cut frame's end matters.
  constexpr int kMostPassers = 5000;
  constexpr int kPassersPerCatchUp = 64;
  while (relay.counters().native.slow_consumer_drops.load() == 0 && passers < kMostPassers) {
    {
      test::RawPeer passer(relay.port());
      passer.join(channel);
    }
    if (++passers % kPassersPerCatchUp == 0) {
      ASSERT_TRUE(test::eventually(witness_caught_up));
    }
  }
  ASSERT_EQ(relay.counters().native.slow_consumer_drops.load(), 1U)
      << passers << " peers came and went";

  // Reading at once (the relay gives up on a closing connection's last frames after 2 s):
  // consecutive versions, each frame whole, then the relay's last word.
  std::uint64_t changes = 0;
  std::uint64_t last_version = 0;
  for (;;) {
    auto frame = stalled.expect_frame();
    ASSERT_TRUE(frame.has_value())
        << "no whole frame after " << changes << " changes; closed " << stalled.closed() << ", "
        << stalled.unread_bytes() << " bytes left over";
    if (frame->header.type == wire::FrameType::error) {
      wire::Error error;
      ASSERT_EQ(wire::parse_error(frame->bytes(), error), wire::DecodeError::none);
      EXPECT_EQ(error.status, Status::slow_consumer);
      break;
    }
    ASSERT_EQ(frame->header.type, wire::FrameType::presence);
    wire::Presence presence;
    ASSERT_EQ(wire::parse_presence(frame->bytes(), presence), wire::DecodeError::none);
    if (changes > 0) {
      ASSERT_EQ(presence.version, last_version + 1);
    }
    last_version = presence.version;
    ++changes;
  }
  EXPECT_TRUE(stalled.expect_closed());
  EXPECT_GT(changes, 0U);

  // The peer that reads lost nothing: everyone else has gone, the stalled peer with them.
  EXPECT_TRUE(test::eventually([&] { return witness.peers().empty(); }, 10s));
  EXPECT_EQ(witness.state(), client::ConnectionState::connected);
  EXPECT_TRUE(
      test::eventually([&] { return relay.counters().native.connections_open.load() == 1; }));
}

}  // namespace
}  // namespace switchboard
