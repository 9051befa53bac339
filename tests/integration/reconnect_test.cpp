// Automatic reconnect of the native client: relay restarts, cut and frozen connections, the
// duplicate-id window, in-flight streams, backoff, close() while reconnecting, presence resync.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>

#include "support/clients.hpp"
#include "support/cut_proxy.hpp"
#include "support/process.hpp"
#include "support/relay.hpp"

namespace switchboard {
namespace {

using client::BlockingClient;
using client::BlockingStream;
using client::ConnectionEvent;
using client::ConnectionState;
using client::Outcome;
using client::Target;
using test::CutProxy;
using test::options_for;
using Kind = ConnectionEvent::Kind;
using namespace std::chrono_literals;

constexpr auto kEventTimeout = 15s;

/// Records a client's connection events so a test can wait for them in order.
class EventLog {
public:
  void attach(BlockingClient& client) {
    client.on_connection_event([this](const ConnectionEvent& event) {
      std::lock_guard lock(mutex_);
      events_.push_back(event);
      changed_.notify_all();
    });
  }

  /// Waits for the next event of `kind` satisfying `accept`, consuming the events before it.
  std::optional<ConnectionEvent> next(
      Kind kind, const std::function<bool(const ConnectionEvent&)>& accept = {},
      std::chrono::milliseconds timeout = kEventTimeout) {
    std::unique_lock lock(mutex_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      while (!events_.empty()) {
        ConnectionEvent event = std::move(events_.front());
        events_.pop_front();
        taken_.push_back(event);
        if (event.kind == kind && (!accept || accept(event))) return event;
      }
      if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && events_.empty()) {
        return std::nullopt;
      }
    }
  }

  /// Every event taken by next() so far, in order.
  std::vector<ConnectionEvent> taken() {
    std::lock_guard lock(mutex_);
    return taken_;
  }

  /// Events not taken yet.
  std::size_t pending() {
    std::lock_guard lock(mutex_);
    return events_.size();
  }

private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<ConnectionEvent> events_;
  std::vector<ConnectionEvent> taken_;
};

/// Records presence changes seen by a client.
class PresenceLog {
public:
  void attach(BlockingClient& client) {
    client.on_presence([this](const client::PresenceChange& change) {
      std::lock_guard lock(mutex_);
      changes_.push_back(change);
      changed_.notify_all();
    });
  }
  /// Waits for a change about `peer` (joined or left); returns its version.
  std::optional<std::uint64_t> wait_for(const Uuid& peer, bool joined) {
    std::unique_lock lock(mutex_);
    std::optional<std::uint64_t> version;
    changed_.wait_for(lock, kEventTimeout, [&] {
      for (const auto& change : changes_) {
        if (change.peer == peer && change.joined == joined) version = change.version;
      }
      return version.has_value();
    });
    return version;
  }

private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<client::PresenceChange> changes_;
};

client::ConnectOptions reconnecting(std::uint16_t port, const Uuid& channel,
                                    bool accept_requests = false) {
  auto options = options_for(port, channel, accept_requests);
  options.reconnect.enabled = true;
  options.reconnect.initial_delay = 20ms;
  options.reconnect.max_delay = 200ms;
  options.connect_timeout = 2s;
  return options;
}

std::string text_of(const std::vector<std::uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }

Outcome send_text(BlockingClient& client, const std::string& text, std::string& answer,
                  client::StreamOptions options = {}) {
  std::vector<std::uint8_t> response;
  auto outcome = client.send(Target::any(), test::as_bytes(text), response, options);
  answer = text_of(response);
  return outcome;
}

std::vector<Uuid> sorted(std::vector<Uuid> ids) {
  std::sort(ids.begin(), ids.end(),
            [](const Uuid& a, const Uuid& b) { return a.to_string() < b.to_string(); });
  return ids;
}

bool refused(const ConnectionEvent& event) { return event.reason.status == Status::refused; }
bool failed_attempt(const ConnectionEvent& event) { return event.attempt >= 2; }

TEST(Reconnect, DelaysGrowExponentiallyWithJitterAndNeverExceedTheCap) {
  client::ReconnectPolicy policy;
  policy.initial_delay = 100ms;
  policy.max_delay = 1000ms;
  policy.multiplier = 2.0;
  policy.jitter = 0.5;
  EXPECT_EQ(policy.delay_before(1, 0.0), 100ms);
  EXPECT_EQ(policy.delay_before(2, 0.0), 200ms);
  EXPECT_EQ(policy.delay_before(4, 0.0), 800ms);
  EXPECT_EQ(policy.delay_before(5, 0.0), 1000ms);
  EXPECT_EQ(policy.delay_before(1'000'000, 0.0), 1000ms);  // no overflow
  EXPECT_EQ(policy.delay_before(2, 0.5), 150ms);           // a quarter removed
  EXPECT_GE(policy.delay_before(5, 0.999), 500ms);         // at most half removed
  policy.jitter = 0.0;
  EXPECT_EQ(policy.delay_before(3, 0.9), 400ms);
}

TEST(Reconnect, RejoinsAfterTheRelayRestartsOnTheSamePort) {
  // Declared first: the clients report to them until destroyed.
  EventLog responder_events;
  EventLog requester_events;
  auto relay =
      std::make_unique<test::ServerProcess>(SWITCHBOARD_SERVER_BINARY, std::vector<std::string>{});
  const auto port = relay->port();
  const auto channel = Uuid::random();
  auto responder_options = reconnecting(port, channel, true);
  responder_options.peer_id = Uuid::random();
  BlockingClient responder(responder_options);
  responder.serve(test::echo);
  responder_events.attach(responder);
  BlockingClient requester(reconnecting(port, channel));
  const auto requester_id = requester.peer_id();
  requester_events.attach(requester);
  std::string answer;
  ASSERT_TRUE(send_text(requester, "before", answer).ok());
  EXPECT_EQ(answer, "before");

  EXPECT_EQ(relay->stop(SIGKILL), 128 + SIGKILL);
  auto lost = responder_events.next(Kind::disconnected);
  ASSERT_TRUE(lost);
  EXPECT_TRUE(lost->reason.connection_lost);
  EXPECT_EQ(lost->state, ConnectionState::reconnecting);
  // An attempt failed against the dead port before the relay comes back.
  ASSERT_TRUE(responder_events.next(Kind::retry_scheduled, failed_attempt));
  ASSERT_TRUE(requester_events.next(Kind::retry_scheduled, failed_attempt));
  EXPECT_EQ(responder.state(), ConnectionState::reconnecting);

  relay = std::make_unique<test::ServerProcess>(SWITCHBOARD_SERVER_BINARY,
                                                std::vector<std::string>{}, port);
  ASSERT_EQ(relay->port(), port);
  ASSERT_TRUE(responder_events.next(Kind::reconnected));
  ASSERT_TRUE(requester_events.next(Kind::reconnected));
  EXPECT_EQ(responder.peer_id(), responder_options.peer_id);
  EXPECT_EQ(requester.peer_id(), requester_id);  // the id the relay assigned first is kept
  EXPECT_EQ(requester.state(), ConnectionState::connected);
  ASSERT_TRUE(send_text(requester, "after", answer).ok());
  EXPECT_EQ(answer, "after");
}

TEST(Reconnect, RejoinsAfterTheRelayDrainsWithGoAwayAndRestarts) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  auto relay =
      std::make_unique<test::ServerProcess>(SWITCHBOARD_SERVER_BINARY, std::vector<std::string>{});
  const auto port = relay->port();
  const auto channel = Uuid::random();
  BlockingClient client(reconnecting(port, channel));
  events.attach(client);
  EXPECT_EQ(relay->stop(SIGTERM), 0);
  auto lost = events.next(Kind::disconnected);
  ASSERT_TRUE(lost);
  EXPECT_EQ(lost->reason.status, Status::peer_gone);
  ASSERT_TRUE(events.next(Kind::retry_scheduled, failed_attempt));
  relay = std::make_unique<test::ServerProcess>(SWITCHBOARD_SERVER_BINARY,
                                                std::vector<std::string>{}, port);
  ASSERT_TRUE(events.next(Kind::reconnected));
  EXPECT_EQ(client.state(), ConnectionState::connected);
}

TEST(Reconnect, RejoinsAfterTheConnectionIsReset) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  test::InProcessRelay relay;
  const auto channel = Uuid::random();
  BlockingClient responder(options_for(relay.port(), channel, true));
  responder.serve(test::echo);
  CutProxy proxy(relay.port());
  BlockingClient requester(reconnecting(proxy.port(), channel));
  const auto id = requester.peer_id();
  events.attach(requester);

  proxy.cut();
  auto lost = events.next(Kind::disconnected);
  ASSERT_TRUE(lost);
  EXPECT_EQ(lost->reason.status, Status::peer_gone);
  EXPECT_TRUE(lost->reason.connection_lost);
  EXPECT_EQ(lost->reason.message.rfind("connection lost", 0), 0u) << lost->reason.message;
  auto back = events.next(Kind::reconnected);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->peers, std::vector<Uuid>{responder.peer_id()});
  EXPECT_EQ(requester.peer_id(), id);
  std::string answer;
  ASSERT_TRUE(send_text(requester, "through a new connection", answer).ok());
  EXPECT_EQ(answer, "through a new connection");
  EXPECT_GE(proxy.accepted(), 2u);
}

TEST(Reconnect, DetectsASilentRelayByKeepaliveAndRejoins) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  test::InProcessRelay relay(test::fast_limits());  // keepalive 200 ms
  CutProxy proxy(relay.port());
  BlockingClient client(reconnecting(proxy.port(), Uuid::random()));
  events.attach(client);
  proxy.freeze();
  auto lost = events.next(Kind::disconnected);
  ASSERT_TRUE(lost);
  EXPECT_NE(lost->reason.message.find("keepalive"), std::string::npos) << lost->reason.message;
  ASSERT_TRUE(events.next(Kind::reconnected));
}

TEST(Reconnect, InFlightStreamFailsWithConnectionLostAndIsNotRetried) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  test::InProcessRelay relay;
  const auto channel = Uuid::random();
  std::mutex mutex;
  std::condition_variable served_changed;
  std::vector<Outcome> served;  // how each request ended at the responder
  std::promise<void> first_arrived;
  BlockingClient responder(options_for(relay.port(), channel, true));
  responder.serve([&](BlockingStream& request) {
    std::string body;
    for (auto chunk = request.read_chunk(); chunk.size > 0; chunk = request.read_chunk()) {
      body.append(reinterpret_cast<const char*>(chunk.data), chunk.size);
      if (body == "first") first_arrived.set_value();
    }
    if (body != "first") (void)request.write(test::as_bytes("answer to " + body), true);
    auto outcome = request.result();
    std::lock_guard lock(mutex);
    served.push_back(outcome);
    served_changed.notify_all();
  });
  CutProxy proxy(relay.port());
  BlockingClient requester(reconnecting(proxy.port(), channel));
  events.attach(requester);

  auto stream = requester.request(Target::any());
  ASSERT_TRUE(stream.write(test::as_bytes("first")).ok());
  first_arrived.get_future().wait();
  proxy.cut();
  const auto outcome = stream.result();
  EXPECT_EQ(outcome.status, Status::peer_gone);
  EXPECT_TRUE(outcome.connection_lost);
  EXPECT_EQ(outcome.message.rfind("connection lost", 0), 0u) << outcome.message;
  EXPECT_FALSE(stream.write(test::as_bytes("more")).ok());

  ASSERT_TRUE(events.next(Kind::reconnected));
  std::string answer;
  ASSERT_TRUE(send_text(requester, "second", answer).ok());
  EXPECT_EQ(answer, "answer to second");
  std::unique_lock lock(mutex);
  ASSERT_TRUE(served_changed.wait_for(lock, kEventTimeout, [&] { return served.size() >= 2; }));
  // Exactly two requests reached the responder: the first was never sent again.
  EXPECT_EQ(served.size(), 2u);
  EXPECT_EQ(std::count_if(served.begin(), served.end(),
                          [](const Outcome& o) { return o.status == Status::peer_gone; }),
            1);
  EXPECT_EQ(std::count_if(served.begin(), served.end(), [](const Outcome& o) { return o.ok(); }),
            1);
}

TEST(Reconnect, RefusalWhileTheRelayStillHoldsTheOldSessionIsRetried) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  PresenceLog observer_presence;
  auto limits = test::fast_limits();
  limits.keepalive_interval = 30s;  // the relay will not notice the loss by itself
  test::InProcessRelay relay(limits);
  const auto channel = Uuid::random();
  CutProxy proxy(relay.port());
  auto options = reconnecting(proxy.port(), channel);
  options.peer_id = Uuid::random();
  BlockingClient client(options);
  events.attach(client);
  BlockingClient observer(options_for(relay.port(), channel));
  observer_presence.attach(observer);

  proxy.cut_client_side();
  ASSERT_TRUE(events.next(Kind::disconnected));
  // The relay refuses the same id while the old session lives; the client keeps trying.
  auto refusal = events.next(Kind::retry_scheduled, refused);
  ASSERT_TRUE(refusal);
  EXPECT_GE(refusal->attempt, 2u);
  ASSERT_TRUE(events.next(Kind::retry_scheduled, refused));
  EXPECT_EQ(client.state(), ConnectionState::reconnecting);
  EXPECT_EQ(observer.peers(), std::vector<Uuid>{options.peer_id});  // first session undisturbed

  proxy.release_held();
  ASSERT_TRUE(observer_presence.wait_for(options.peer_id, false));
  ASSERT_TRUE(events.next(Kind::reconnected));
  EXPECT_EQ(client.peer_id(), options.peer_id);
  EXPECT_TRUE(observer_presence.wait_for(options.peer_id, true));
}

TEST(Reconnect, BackoffIsBoundedAndGivesUpAfterMaxAttempts) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  test::InProcessRelay relay;
  CutProxy proxy(relay.port());
  auto options = reconnecting(proxy.port(), Uuid::random());
  options.reconnect.initial_delay = 10ms;
  options.reconnect.max_delay = 40ms;
  options.reconnect.multiplier = 2.0;
  options.reconnect.jitter = 0.5;
  options.reconnect.max_attempts = 6;
  BlockingClient client(options);
  events.attach(client);
  proxy.set_new_connections(CutProxy::NewConnections::reset);
  proxy.cut();

  const std::vector<std::chrono::milliseconds> nominal{10ms, 20ms, 40ms, 40ms, 40ms, 40ms};
  for (std::uint32_t attempt = 1; attempt <= nominal.size(); ++attempt) {
    auto retry = events.next(Kind::retry_scheduled);
    ASSERT_TRUE(retry) << "attempt " << attempt;
    EXPECT_EQ(retry->attempt, attempt);
    EXPECT_LE(retry->delay, nominal[attempt - 1]);
    EXPECT_GE(retry->delay, nominal[attempt - 1] / 2);
    EXPECT_EQ(retry->state, ConnectionState::reconnecting);
  }
  auto closed = events.next(Kind::closed);
  ASSERT_TRUE(closed);
  EXPECT_NE(closed->reason.message.find("gave up reconnecting after 6 attempts"), std::string::npos)
      << closed->reason.message;
  const auto outcome = client.wait_closed();
  EXPECT_EQ(outcome.message, closed->reason.message);
  EXPECT_EQ(client.state(), ConnectionState::closed);
  EXPECT_EQ(proxy.accepted(), 1u + nominal.size());
  // A stream opened now fails at once.
  std::string answer;
  EXPECT_FALSE(send_text(client, "too late", answer).ok());
}

TEST(Reconnect, CloseDuringTheBackoffWaitStopsReconnecting) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  test::InProcessRelay relay;
  CutProxy proxy(relay.port());
  auto options = reconnecting(proxy.port(), Uuid::random());
  options.reconnect.initial_delay = 60s;
  options.reconnect.max_delay = 60s;
  BlockingClient client(options);
  events.attach(client);
  proxy.cut();
  ASSERT_TRUE(events.next(Kind::retry_scheduled));

  auto closed = std::async(std::launch::async, [&] {
    client.close();
    return client.wait_closed();
  });
  ASSERT_EQ(closed.wait_for(5s), std::future_status::ready);  // not the 30-60 s backoff
  EXPECT_EQ(closed.get().status, Status::cancelled);
  auto event = events.next(Kind::closed);
  ASSERT_TRUE(event);
  EXPECT_EQ(event->state, ConnectionState::closed);
  EXPECT_EQ(client.state(), ConnectionState::closed);
  EXPECT_EQ(proxy.accepted(), 1u);  // no attempt was made
}

TEST(Reconnect, CloseDuringAHangingAttemptStopsReconnecting) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  test::InProcessRelay relay;
  CutProxy proxy(relay.port());
  auto options = reconnecting(proxy.port(), Uuid::random());
  options.connect_timeout = 60s;
  BlockingClient client(options);
  events.attach(client);
  proxy.set_new_connections(CutProxy::NewConnections::hold);
  proxy.cut();
  ASSERT_TRUE(events.next(Kind::retry_scheduled));
  // The attempt connects to a proxy that never answers the handshake.
  ASSERT_TRUE(test::eventually([&] { return proxy.accepted() == 2u; }));

  auto closed = std::async(std::launch::async, [&] {
    client.close();
    return client.wait_closed();
  });
  ASSERT_EQ(closed.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(closed.get().status, Status::cancelled);
  ASSERT_TRUE(events.next(Kind::closed));
  EXPECT_EQ(events.pending(), 0u);
}

TEST(Reconnect, StreamsOpenedWhileReconnectingWaitWithinTheirDeadline) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  test::InProcessRelay relay;
  const auto channel = Uuid::random();
  std::promise<std::chrono::milliseconds> seen_deadline;
  BlockingClient responder(options_for(relay.port(), channel, true));
  responder.serve([&](BlockingStream& request) {
    seen_deadline.set_value(request.deadline());
    test::echo(request);
  });
  CutProxy proxy(relay.port());
  BlockingClient requester(reconnecting(proxy.port(), channel));
  events.attach(requester);
  proxy.set_new_connections(CutProxy::NewConnections::reset);
  proxy.cut();
  ASSERT_TRUE(events.next(Kind::retry_scheduled, failed_attempt));
  ASSERT_EQ(requester.state(), ConnectionState::reconnecting);

  // Still no connection when its deadline passes: it fails locally, nothing was sent.
  client::StreamOptions short_deadline;
  short_deadline.deadline = 150ms;
  std::string answer;
  const auto expired = send_text(requester, "expires", answer, short_deadline);
  EXPECT_EQ(expired.status, Status::deadline_exceeded);
  EXPECT_NE(expired.message.find("reconnecting"), std::string::npos) << expired.message;

  // Opened while disconnected: it cannot fail fast, it waits and goes out once rejoined.
  client::StreamOptions long_deadline;
  long_deadline.deadline = 30s;
  auto stream = requester.request(Target::any(), long_deadline);
  const auto opened = std::chrono::steady_clock::now();
  auto queued = std::async(std::launch::async, [&] {
    std::string text;
    (void)stream.write(test::as_bytes("queued"), true);
    for (auto chunk = stream.read_chunk(); chunk.size > 0; chunk = stream.read_chunk()) {
      text.append(reinterpret_cast<const char*>(chunk.data), chunk.size);
    }
    return std::make_pair(stream.result(), text);
  });
  // Two more failed attempts: the stream has been waiting at least this long.
  ASSERT_TRUE(events.next(Kind::retry_scheduled));
  ASSERT_TRUE(events.next(Kind::retry_scheduled));
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - opened);
  proxy.set_new_connections(CutProxy::NewConnections::forward);
  ASSERT_TRUE(events.next(Kind::reconnected));
  ASSERT_EQ(queued.wait_for(kEventTimeout), std::future_status::ready);
  const auto [outcome, text] = queued.get();
  EXPECT_TRUE(outcome.ok()) << outcome.describe();
  EXPECT_EQ(text, "queued");
  auto deadline = seen_deadline.get_future();
  ASSERT_EQ(deadline.wait_for(kEventTimeout), std::future_status::ready);
  // The relay was given what was left of the 30 s, not a fresh 30 s.
  EXPECT_LE(deadline.get(), 30s - waited + 5ms);
}

TEST(Reconnect, ResetEndsAStreamWaitingForTheNextConnection) {
  EventLog events;
  test::InProcessRelay relay;
  CutProxy proxy(relay.port());
  BlockingClient client(reconnecting(proxy.port(), Uuid::random()));
  events.attach(client);
  proxy.set_new_connections(CutProxy::NewConnections::reset);
  proxy.cut();
  ASSERT_TRUE(events.next(Kind::retry_scheduled));
  auto stream = client.request(Target::any());  // no deadline: it would wait indefinitely
  auto write = std::async(std::launch::async,
                          [&] { return stream.write(test::as_bytes("never sent"), true); });
  ASSERT_TRUE(events.next(Kind::retry_scheduled));  // an attempt failed while it waited
  stream.reset(Status::cancelled, "changed my mind");
  ASSERT_EQ(write.wait_for(5s), std::future_status::ready);
  const auto outcome = write.get();
  EXPECT_EQ(outcome.status, Status::cancelled);
  EXPECT_EQ(outcome.message, "changed my mind");
  EXPECT_EQ(client.state(), ConnectionState::reconnecting);
}

TEST(Reconnect, PresenceIsReplacedByTheNewSnapshotWithItsVersion) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  PresenceLog stayer_presence;
  PresenceLog watcher_presence;
  test::InProcessRelay relay;
  const auto channel = Uuid::random();
  CutProxy proxy(relay.port());
  BlockingClient watcher(reconnecting(proxy.port(), channel));
  events.attach(watcher);
  watcher_presence.attach(watcher);
  auto stayer = std::make_unique<BlockingClient>(options_for(relay.port(), channel));
  auto leaver = std::make_unique<BlockingClient>(options_for(relay.port(), channel));
  stayer_presence.attach(*stayer);
  ASSERT_TRUE(watcher_presence.wait_for(stayer->peer_id(), true));
  ASSERT_TRUE(watcher_presence.wait_for(leaver->peer_id(), true));

  proxy.set_new_connections(CutProxy::NewConnections::reset);
  proxy.cut();
  ASSERT_TRUE(stayer_presence.wait_for(watcher.peer_id(), false));
  ASSERT_TRUE(events.next(Kind::retry_scheduled, failed_attempt));
  // Meanwhile one peer leaves and another joins.
  const auto leaver_id = leaver->peer_id();
  leaver.reset();
  ASSERT_TRUE(stayer_presence.wait_for(leaver_id, false));
  BlockingClient newcomer(options_for(relay.port(), channel));
  ASSERT_TRUE(stayer_presence.wait_for(newcomer.peer_id(), true));
  // The watcher's view is the one from before the loss until it rejoins.
  EXPECT_EQ(sorted(watcher.peers()), sorted({stayer->peer_id(), leaver_id}));

  proxy.set_new_connections(CutProxy::NewConnections::forward);
  auto back = events.next(Kind::reconnected);
  ASSERT_TRUE(back);
  const auto version = stayer_presence.wait_for(watcher.peer_id(), true);
  ASSERT_TRUE(version);
  EXPECT_EQ(back->version, *version);  // the snapshot's version includes the rejoin
  EXPECT_EQ(sorted(back->peers), sorted({stayer->peer_id(), newcomer.peer_id()}));
  EXPECT_EQ(back->joined, std::vector<Uuid>{newcomer.peer_id()});
  EXPECT_EQ(back->left, std::vector<Uuid>{leaver_id});
  EXPECT_EQ(sorted(watcher.peers()), sorted(back->peers));
  EXPECT_EQ(watcher.membership_version(), back->version);
}

TEST(Reconnect, WithoutThePolicyALossClosesTheConnectionOnce) {
  // Declared first: the clients report to them until destroyed.
  EventLog events;
  test::InProcessRelay relay;
  CutProxy proxy(relay.port());
  BlockingClient client(options_for(proxy.port(), Uuid::random()));
  events.attach(client);
  proxy.cut();
  const auto outcome = client.wait_closed();
  EXPECT_EQ(outcome.status, Status::peer_gone);
  EXPECT_TRUE(outcome.connection_lost);
  auto closed = events.next(Kind::closed);
  ASSERT_TRUE(closed);
  EXPECT_EQ(events.taken().size(), 1u);  // no disconnected/retry events without the policy
  EXPECT_EQ(proxy.accepted(), 1u);
}

}  // namespace
}  // namespace switchboard
