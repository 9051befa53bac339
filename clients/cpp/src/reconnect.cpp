// Client reconnect: backoff policy, what happens when a link is lost, the retry loop, and new
// streams waiting for the next link.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cmath>

#include "connection_private.hpp"

namespace switchboard::client {

namespace asio = boost::asio;
using detail::ConnectionImpl;
using detail::Joined;
using detail::Link;
using detail::StreamImpl;
using namespace asio::experimental::awaitable_operators;
namespace {
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

/// Refusals that a later attempt cannot cure: retrying them would only hammer the relay.
bool fatal(Status status) {
  return status == Status::unauthenticated || status == Status::permission_denied ||
         status == Status::protocol_error;
}

/// What a stream in flight learns when its connection breaks under it.
Outcome lost(const Outcome& reason) {
  Outcome outcome = reason;
  outcome.connection_lost = true;
  if (reason.status == Status::peer_gone) outcome.message = "connection lost: " + reason.message;
  return outcome;
}

std::vector<Uuid> missing_from(const std::vector<Uuid>& ids, const std::vector<Uuid>& other) {
  std::vector<Uuid> result;
  for (const auto& id : ids) {
    if (std::find(other.begin(), other.end(), id) == other.end()) result.push_back(id);
  }
  return result;
}
}  // namespace

std::chrono::milliseconds ReconnectPolicy::delay_before(std::uint32_t attempt, double u) const {
  const double cap = static_cast<double>(std::max<std::int64_t>(max_delay.count(), 0));
  const double growth = std::pow(std::max(multiplier, 1.0), attempt > 0 ? attempt - 1.0 : 0.0);
  const double nominal =
      std::min(cap, static_cast<double>(std::max<std::int64_t>(initial_delay.count(), 0)) * growth);
  const double spread = std::clamp(jitter, 0.0, 1.0) * std::clamp(u, 0.0, 1.0);
  return std::chrono::milliseconds(std::llround(nominal * (1.0 - spread)));
}

const char* state_name(ConnectionState state) noexcept {
  switch (state) {
    case ConnectionState::connected:
      return "connected";
    case ConnectionState::reconnecting:
      return "reconnecting";
    case ConnectionState::closed:
      return "closed";
  }
  return "unknown";
}

const char* event_name(ConnectionEvent::Kind kind) noexcept {
  switch (kind) {
    case ConnectionEvent::Kind::disconnected:
      return "disconnected";
    case ConnectionEvent::Kind::retry_scheduled:
      return "retry_scheduled";
    case ConnectionEvent::Kind::reconnected:
      return "reconnected";
    case ConnectionEvent::Kind::closed:
      return "closed";
  }
  return "unknown";
}

void ConnectionImpl::on_connection_event(std::function<void(const ConnectionEvent&)> handler) {
  on_event_ = std::move(handler);
}

void ConnectionImpl::emit(const ConnectionEvent& event) {
  // A copy: the handler may replace itself or close the connection.
  if (auto handler = on_event_) handler(event);
}

bool ConnectionImpl::linked() const noexcept {
  return state_ == ConnectionState::connected && !link_->going_away;
}

void ConnectionImpl::link_lost(const std::shared_ptr<Link>& link, const Outcome& reason) {
  if (link->dead || closed_) return;
  const Outcome outcome = lost(reason);
  if (!options_.reconnect.enabled || fatal(reason.status)) {
    fail_all(outcome);
    return;
  }
  link->dead = true;
  link->close();
  link->wake.cancel();
  link->keepalive_timer.cancel();
  state_ = ConnectionState::reconnecting;
  // Streams never move to the next link: whatever they carried may or may not have arrived.
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, stream] : streams) stream->terminate(outcome);
  pending_requests_.clear();
  pending_broadcasts_.clear();
  messages_link_lost();
  ConnectionEvent event;
  event.kind = ConnectionEvent::Kind::disconnected;
  event.state = ConnectionState::reconnecting;
  event.reason = outcome;
  emit(event);
  if (closed_) return;
  asio::co_spawn(
      executor_, [self = shared_from_this(), this, outcome] { return reconnect_loop(outcome); },
      asio::detached);
}

asio::awaitable<void> ConnectionImpl::reconnect_loop(Outcome reason) {
  auto self = shared_from_this();
  const auto& policy = options_.reconnect;
  const std::vector<Uuid> before = peers_;
  std::uniform_real_distribution<double> draw(0.0, 1.0);
  for (std::uint32_t attempt_number = 1;; ++attempt_number) {
    if (closed_) co_return;
    if (policy.max_attempts != 0 && attempt_number > policy.max_attempts) {
      Outcome gave_up = reason;
      gave_up.message = "gave up reconnecting after " + std::to_string(policy.max_attempts) +
                        " attempts: " + reason.message;
      fail_all(gave_up);
      co_return;
    }
    ConnectionEvent scheduled;
    scheduled.kind = ConnectionEvent::Kind::retry_scheduled;
    scheduled.state = ConnectionState::reconnecting;
    scheduled.reason = reason;
    scheduled.attempt = attempt_number;
    scheduled.delay = policy.delay_before(attempt_number, draw(random_));
    emit(scheduled);
    if (closed_) co_return;
    backoff_timer_.expires_after(scheduled.delay);
    co_await backoff_timer_.async_wait(kUseTuple);
    if (closed_) co_return;

    Joined joined;
    const Outcome outcome = co_await attempt(joined);
    if (closed_) co_return;
    if (!outcome.ok()) {
      if (fatal(outcome.status)) {
        fail_all(outcome);
        co_return;
      }
      reason = outcome;  // e.g. REFUSED while the relay still holds our previous session
      continue;
    }
    adopt(joined);
    ConnectionEvent event;
    event.kind = ConnectionEvent::Kind::reconnected;
    event.state = ConnectionState::connected;
    event.attempt = attempt_number;
    event.peers = peers_;
    event.version = version_;
    event.joined = missing_from(peers_, before);
    event.left = missing_from(before, peers_);
    // The event precedes any presence change read on the new link.
    emit(event);
    if (closed_) co_return;
    linked_signal_.cancel();
    start_loops();
    co_return;
  }
}

asio::awaitable<Outcome> ConnectionImpl::wait_linked(StreamImpl& stream) {
  if (linked()) co_return Outcome{};
  if (closed_) co_return close_outcome_;
  if (!options_.reconnect.enabled) {
    co_return Outcome{Status::refused, 0, "relay is draining (GOAWAY)", 0, 0, false};
  }
  using clock = std::chrono::steady_clock;
  const auto deadline =
      stream.open_.deadline_ms == 0
          ? clock::time_point::max()
          : stream.opened_at_ + std::chrono::milliseconds(stream.open_.deadline_ms);
  asio::steady_timer expiry(executor_, deadline);
  if (!stream.write_signal_) {
    stream.write_signal_ =
        std::make_unique<asio::steady_timer>(executor_, asio::steady_timer::time_point::max());
  }
  while (!linked() && !closed_ && !stream.terminal_) {
    if (clock::now() >= deadline) break;
    // The stream's own signal too: a reset while waiting ends the wait at once.
    co_await (linked_signal_.async_wait(kUseTuple) || expiry.async_wait(kUseTuple) ||
              stream.write_signal_->async_wait(kUseTuple));
  }
  if (closed_) co_return close_outcome_;
  if (stream.terminal_) co_return stream.outcome_;
  const auto left =
      deadline == clock::time_point::max()
          ? std::chrono::milliseconds::max()
          : std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  if (!linked() || left.count() <= 0) {
    co_return Outcome{Status::deadline_exceeded,
                      0,
                      "deadline passed while reconnecting to the relay",
                      0,
                      0,
                      false};
  }
  // The relay counts the deadline from the OPEN: give it what is left.
  if (stream.open_.deadline_ms != 0) {
    stream.open_.deadline_ms = static_cast<std::uint32_t>(left.count());
  }
  co_return Outcome{};
}

}  // namespace switchboard::client
