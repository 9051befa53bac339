// Channels: many channel memberships on one I/O thread; the shared connections or paced joins,
// the one name resolution, and each channel's connection, handlers and mirrored presence.
#include "switchboard/channels.hpp"

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>

#include "mux.hpp"

namespace switchboard::client {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

struct Channel::Shared {
  explicit Shared(ChannelsOptions o)
      : options(std::move(o)),
        work(asio::make_work_guard(io)),
        resolved_signal(io),
        sharing(options.share_connections ? share_connections(io.get_executor()) : nullptr),
        learnt_signal(io, Clock::time_point::max()),
        tokens(static_cast<double>(options.connect_burst)),
        refilled(Clock::now()) {
    resolved_signal.expires_at(Clock::time_point::max());
  }

  // The start time of the next connect under the token bucket; reserves it. Connects are
  // spread out instead of refused by the relay, so a large join set costs no retries.
  Clock::time_point reserve_connect() {
    std::lock_guard lock(mutex);
    const auto now = Clock::now();
    if (options.connect_rate <= 0) return now;
    const std::chrono::duration<double> elapsed = now - refilled;
    refilled = now;
    tokens = std::min(static_cast<double>(std::max<std::uint32_t>(options.connect_burst, 1)),
                      tokens + elapsed.count() * options.connect_rate);
    tokens -= 1;
    if (tokens >= 0) return now;
    return now + std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(-tokens / options.connect_rate));
  }

  // The relay's address, resolved by the first join that needs it while the others wait (on
  // the I/O thread only). nullopt (and `failure` filled) when the name does not resolve.
  asio::awaitable<std::optional<std::string>> relay_address(Outcome& failure) {
    for (;;) {
      if (!resolved.empty()) co_return resolved;
      if (!resolving) break;
      co_await resolved_signal.async_wait(kUseTuple);  // cancelled when the resolution ends
    }
    resolving = true;
    asio::ip::tcp::resolver resolver(io);
    auto [error, results] =
        co_await resolver.async_resolve(options.host, std::to_string(options.port), kUseTuple);
    resolving = false;
    resolved_signal.cancel();
    if (error || results.empty()) {
      failure.status = Status::peer_gone;
      failure.unreachable = true;
      failure.message = "cannot resolve " + options.host + ": " +
                        (error ? error.message() : std::string("no address"));
      co_return std::nullopt;
    }
    resolved = results.begin()->endpoint().address().to_string();
    co_return resolved;
  }

  void erase(const Uuid& id, const Channel* channel) {
    std::lock_guard lock(mutex);
    auto it = channels.find(id);
    if (it != channels.end() && it->second.get() == channel) channels.erase(it);
  }

  const ChannelsOptions options;
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::thread thread;
  std::atomic<bool> stopped{false};
  std::atomic<std::size_t> live_connections{0};

  // I/O thread only.
  std::string resolved;
  bool resolving = false;
  asio::steady_timer resolved_signal;
  // The group every channel's connection shares TCP connections through; nullptr without
  // sharing. The first join learns whether the relay shares them while the other joins wait
  // (`learning`, `learnt_signal`): a relay that does not would otherwise see all of them
  // connect on their own at once, unpaced. Should that join end without learning it (the
  // relay unreachable, silent or throttling), the others go on together (`learner_done`):
  // they wait on the same shared connection anyway, and one at a time would take as many
  // connect timeouts.
  std::shared_ptr<ConnectionSharing> sharing;
  bool learning = false;
  bool learner_done = false;
  asio::steady_timer learnt_signal;

  mutable std::mutex mutex;  // guards what follows
  std::map<Uuid, std::shared_ptr<Channel>> channels;
  double tokens;
  Clock::time_point refilled;
};

struct Channel::Core {
  Core(std::shared_ptr<Shared> s, Uuid i, JoinOptions o)
      : shared(std::move(s)), id(i), options(std::move(o)), timer(shared->io) {
    joined_future = joined_promise.get_future().share();
  }

  std::shared_ptr<Shared> shared;
  const Uuid id;
  const JoinOptions options;

  // I/O thread only.
  std::shared_ptr<Connection> connection;
  asio::steady_timer timer;  // pacing and retry waits; cancelled by leave()
  bool leaving = false;
  bool join_done = false;
  std::promise<Outcome> joined_promise;
  std::function<void(std::shared_ptr<Stream>)> request_handler;
  std::function<void(std::shared_ptr<Stream>)> broadcast_handler;
  std::function<void(const PresenceChange&)> presence_handler;

  std::shared_future<Outcome> joined_future;
  mutable std::mutex mutex;  // guards the mirror below, read from any thread
  ConnectionState state = ConnectionState::reconnecting;
  Uuid peer_id;
  std::vector<Uuid> peers;
  std::uint64_t version = 0;

  void mirror(const Connection& c) {
    auto view = c.peers();
    std::lock_guard lock(mutex);
    peers = std::move(view);
    version = c.membership_version();
    peer_id = c.peer_id();
    state = c.state();
  }
};

namespace {

Outcome not_joined() { return {Status::peer_gone, 0, "not joined", 0, 0, false, false}; }

// A uniform draw in [0, 1) for retry jitter.
double unit_draw() {
  thread_local std::minstd_rand random(std::random_device{}());
  return std::uniform_real_distribution<double>(0.0, 1.0)(random);
}

using ServeHandler = std::function<std::vector<std::uint8_t>(const std::vector<std::uint8_t>&)>;

asio::awaitable<void> serve_slowly(std::shared_ptr<Stream> stream, std::vector<std::uint8_t> body,
                                   std::shared_ptr<ServeHandler> handler) {
  for (;;) {
    auto chunk = co_await stream->read();
    if (chunk.size == 0) break;
    body.insert(body.end(), chunk.data, chunk.data + chunk.size);
  }
  if (stream->ended()) co_return;  // reset: nobody to answer
  auto response = (*handler)(body);
  co_await stream->write(response, true);
}

}  // namespace

// ---- Channel ----

Channel::Channel(std::shared_ptr<Shared> shared, Uuid id, JoinOptions options)
    : p_(std::make_unique<Core>(std::move(shared), id, std::move(options))) {}

Channel::~Channel() = default;

const Uuid& Channel::id() const noexcept { return p_->id; }

asio::any_io_executor Channel::executor() const { return p_->shared->io.get_executor(); }

std::shared_future<Outcome> Channel::joined() const { return p_->joined_future; }

Outcome Channel::wait_joined() const {
  if (p_->shared->thread.get_id() == std::this_thread::get_id()) {
    throw std::logic_error("Channel::wait_joined called on the I/O thread");
  }
  return p_->joined_future.get();
}

ConnectionState Channel::state() const {
  std::lock_guard lock(p_->mutex);
  return p_->state;
}

Uuid Channel::peer_id() const {
  std::lock_guard lock(p_->mutex);
  return p_->peer_id;
}

std::vector<Uuid> Channel::peers() const {
  std::lock_guard lock(p_->mutex);
  return p_->peers;
}

std::uint64_t Channel::membership_version() const {
  std::lock_guard lock(p_->mutex);
  return p_->version;
}

void Channel::on_request(std::function<void(std::shared_ptr<Stream>)> handler) {
  if (p_->shared->stopped) return;
  asio::post(p_->shared->io, [self = shared_from_this(), handler = std::move(handler)]() mutable {
    auto& p = *self->p_;
    p.request_handler = std::move(handler);
    if (p.connection && p.request_handler) p.connection->on_request(p.request_handler);
  });
}

void Channel::on_broadcast(std::function<void(std::shared_ptr<Stream>)> handler) {
  if (p_->shared->stopped) return;
  asio::post(p_->shared->io, [self = shared_from_this(), handler = std::move(handler)]() mutable {
    auto& p = *self->p_;
    p.broadcast_handler = std::move(handler);
    if (p.connection && p.broadcast_handler) p.connection->on_broadcast(p.broadcast_handler);
  });
}

void Channel::on_presence(std::function<void(const PresenceChange&)> handler) {
  if (p_->shared->stopped) return;
  asio::post(p_->shared->io, [self = shared_from_this(), handler = std::move(handler)]() mutable {
    self->p_->presence_handler = std::move(handler);
  });
}

void Channel::serve(ServeHandler handler) {
  auto shared_handler = std::make_shared<ServeHandler>(std::move(handler));
  auto executor = this->executor();
  on_request([shared_handler, executor](std::shared_ptr<Stream> stream) {
    // A request of one frame is whole here; its response usually fits one frame too.
    std::vector<std::uint8_t> body;
    while (auto chunk = stream->try_read()) {
      if (chunk->size == 0) {
        auto response = (*shared_handler)(body);
        if (!stream->try_write(response, true)) {
          asio::co_spawn(
              executor,
              [stream, response = std::move(response)]() -> asio::awaitable<void> {
                co_await stream->write(response, true);
              },
              asio::detached);
        }
        return;
      }
      body.insert(body.end(), chunk->data, chunk->data + chunk->size);
    }
    asio::co_spawn(executor, serve_slowly(std::move(stream), std::move(body), shared_handler),
                   asio::detached);
  });
}

asio::awaitable<Response> Channel::async_request(Target target, std::span<const std::uint8_t> body,
                                                 StreamOptions options) {
  Response response;
  auto connection = p_->connection;
  if (!connection) {
    response.outcome = not_joined();
    co_return response;
  }
  auto stream = connection->open_request(target, options);
  if (!stream->try_write(body, true)) {
    auto wrote = co_await stream->write(body, true);
    if (!wrote.ok()) {
      stream->reset();
      response.outcome = std::move(wrote);
      co_return response;
    }
  }
  for (;;) {
    auto chunk = co_await stream->read();
    if (chunk.size == 0) break;
    response.body.insert(response.body.end(), chunk.data, chunk.data + chunk.size);
  }
  response.outcome = co_await stream->result();
  co_return response;
}

std::future<Response> Channel::request(Target target, std::vector<std::uint8_t> body,
                                       StreamOptions options) {
  if (p_->shared->stopped) {
    std::promise<Response> done;
    done.set_value(Response{not_joined(), {}});
    return done.get_future();
  }
  return asio::co_spawn(
      p_->shared->io,
      [self = shared_from_this(), target, body = std::move(body),
       options = std::move(options)]() -> asio::awaitable<Response> {
        co_return co_await self->async_request(target, body, options);
      },
      asio::use_future);
}

std::future<Outcome> Channel::broadcast(std::vector<std::uint8_t> body, StreamOptions options) {
  if (p_->shared->stopped) {
    std::promise<Outcome> done;
    done.set_value(not_joined());
    return done.get_future();
  }
  return asio::co_spawn(
      p_->shared->io,
      [self = shared_from_this(), body = std::move(body),
       options = std::move(options)]() -> asio::awaitable<Outcome> {
        auto connection = self->p_->connection;
        if (!connection) co_return not_joined();
        auto stream = connection->open_broadcast(options);
        if (!stream->try_write(body, true)) {
          auto wrote = co_await stream->write(body, true);
          if (!wrote.ok()) co_return wrote;
        }
        co_return co_await stream->result();
      },
      asio::use_future);
}

std::shared_ptr<Connection> Channel::connection() const { return p_->connection; }

void Channel::leave() {
  if (p_->shared->stopped) return;
  asio::post(p_->shared->io, [self = shared_from_this()] {
    auto& p = *self->p_;
    if (p.leaving) return;
    p.leaving = true;
    p.timer.cancel();
    if (p.connection) {
      auto connection = std::move(p.connection);
      connection->close();
    }
    {
      std::lock_guard lock(p.mutex);
      p.state = ConnectionState::closed;
    }
    self->finish_join({Status::cancelled, 0, "left the channel", 0, 0, false, false});
    p.shared->erase(p.id, self.get());
  });
}

void Channel::finish_join(Outcome outcome) {
  if (p_->join_done) return;
  p_->join_done = true;
  p_->joined_promise.set_value(std::move(outcome));
}

void Channel::attach(std::shared_ptr<Connection> connection) {
  auto& p = *p_;
  p.connection = connection;
  ++p.shared->live_connections;
  p.mirror(*connection);
  std::weak_ptr<Channel> weak = weak_from_this();
  const Connection* raw = connection.get();
  connection->on_presence([weak, raw](const PresenceChange& change) {
    auto self = weak.lock();
    if (!self) return;
    self->p_->mirror(*raw);
    if (self->p_->presence_handler) self->p_->presence_handler(change);
  });
  connection->on_connection_event([weak, raw](const ConnectionEvent&) {
    if (auto self = weak.lock()) self->p_->mirror(*raw);
  });
  auto shared = p.shared;
  connection->on_closed([weak, shared](const Outcome&) {
    --shared->live_connections;
    auto self = weak.lock();
    if (!self) return;
    {
      std::lock_guard lock(self->p_->mutex);
      self->p_->state = ConnectionState::closed;
    }
    // Ended for good (reconnect given up or refused): the channel is no longer taken part in.
    self->p_->connection.reset();
    shared->erase(self->p_->id, self.get());
  });
  if (p.request_handler) connection->on_request(p.request_handler);
  if (p.broadcast_handler) connection->on_broadcast(p.broadcast_handler);
}

// GCC 12 sees the coroutine frame's allocation and its release through different operators
// (both are Asio's awaitable_frame_base ones) in this function; the pairing is Asio's own.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
asio::awaitable<void> Channel::run_join() {
  auto self = shared_from_this();
  auto& p = *p_;
  auto& shared = *p.shared;
  // From the first attempt: the wait for a connect slot does not count against it.
  std::optional<Clock::time_point> deadline;
  std::uint32_t attempt = 0;
  for (;;) {
    Outcome outcome;
    auto address = co_await shared.relay_address(outcome);
    if (p.leaving) co_return;
    // The certificate names the relay's host, not the address it resolved to.
    TlsOptions tls = shared.options.tls;
    if (tls.enabled && tls.server_name.empty()) tls.server_name = shared.options.host;
    // Lanes of shared connections are not paced: they are no TCP connects.
    bool paced = true;
    bool learner = false;
    while (address && shared.sharing) {
      const auto known = shared.sharing->known(*address, shared.options.port, tls);
      if (known == ConnectionSharing::Known::does_not_share) break;
      if (known == ConnectionSharing::Known::shares || shared.learner_done) {
        paced = false;
        break;
      }
      if (!shared.learning) {
        shared.learning = true;
        learner = true;
        paced = false;
        break;
      }
      co_await shared.learnt_signal.async_wait(kUseTuple);  // cancelled when the learner is done
      if (p.leaving) co_return;
    }
    if (paced) {
      const auto start = shared.reserve_connect();
      if (start > Clock::now()) {
        p.timer.expires_at(start);
        co_await p.timer.async_wait(kUseTuple);
      }
      if (p.leaving) co_return;
    }
    if (!deadline) deadline = Clock::now() + shared.options.join_timeout;
    std::shared_ptr<Connection> connection;
    if (address) {
      ConnectOptions options;
      options.host = *address;
      options.port = shared.options.port;
      options.channel = p.id;
      options.peer_id = p.options.peer_id;
      options.accept_requests = p.options.accept_requests;
      options.observe = p.options.observe;
      options.token = p.options.token.empty() ? shared.options.token : p.options.token;
      options.max_frame = shared.options.max_frame;
      options.stream_window = shared.options.stream_window;
      options.connect_timeout = shared.options.connect_timeout;
      options.reconnect = shared.options.reconnect;
      options.tls = tls;
      options.sharing = shared.sharing;
      connection = co_await Connection::connect(shared.io.get_executor(), options, outcome);
    }
    if (learner) {
      shared.learning = false;
      shared.learner_done = true;
      shared.learnt_signal.cancel();
    }
    if (p.leaving) {
      if (connection) connection->close();
      co_return;
    }
    if (connection) {
      attach(std::move(connection));
      finish_join({});
      co_return;
    }
    // The per-address throttle (RESOURCE_EXHAUSTED) and a previous session of the same peer id
    // the relay still holds (REFUSED) pass; anything else is reported at once.
    const bool passing =
        outcome.status == Status::resource_exhausted || outcome.status == Status::refused;
    const auto now = Clock::now();
    if (!passing || now >= *deadline) {
      {
        std::lock_guard lock(p.mutex);
        p.state = ConnectionState::closed;
      }
      // Dropped before the outcome is told: whoever waits on it then finds the channel gone.
      shared.erase(p.id, this);
      finish_join(std::move(outcome));
      co_return;
    }
    ++attempt;
    const auto delay = std::min<Clock::duration>(
        shared.options.reconnect.delay_before(attempt, unit_draw()), *deadline - now);
    p.timer.expires_after(delay);
    co_await p.timer.async_wait(kUseTuple);
    if (p.leaving) co_return;
  }
}
#pragma GCC diagnostic pop

// ---- Channels ----

Channels::Channels(ChannelsOptions options)
    : shared_(std::make_shared<Channel::Shared>(std::move(options))) {
  shared_->thread = std::thread([shared = shared_.get()] { shared->io.run(); });
}

Channels::~Channels() {
  close();
  // Give the connections a moment to close, then stop whatever is left.
  const auto give_up = Clock::now() + std::chrono::seconds(2);
  while ((shared_->live_connections > 0 || size() > 0) && Clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  shared_->stopped = true;
  shared_->work.reset();
  shared_->io.stop();
  if (shared_->thread.joinable()) shared_->thread.join();
  // Channels whose leave never ran hold this object's state; let them go.
  std::lock_guard lock(shared_->mutex);
  shared_->channels.clear();
}

std::shared_ptr<Channel> Channels::join(const Uuid& channel, JoinOptions options) {
  std::shared_ptr<Channel> handle;
  {
    std::lock_guard lock(shared_->mutex);
    auto& slot = shared_->channels[channel];
    if (slot) return slot;
    slot.reset(new Channel(shared_, channel, std::move(options)));
    handle = slot;
  }
  asio::co_spawn(shared_->io, handle->run_join(), asio::detached);
  return handle;
}

std::shared_ptr<Channel> Channels::find(const Uuid& channel) const {
  std::lock_guard lock(shared_->mutex);
  auto it = shared_->channels.find(channel);
  return it == shared_->channels.end() ? nullptr : it->second;
}

std::size_t Channels::size() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->channels.size();
}

std::size_t Channels::wait_all_joined(std::chrono::milliseconds timeout) {
  if (shared_->thread.get_id() == std::this_thread::get_id()) {
    throw std::logic_error("Channels::wait_all_joined called on the I/O thread");
  }
  std::vector<std::shared_ptr<Channel>> handles;
  {
    std::lock_guard lock(shared_->mutex);
    for (auto& [id, handle] : shared_->channels) handles.push_back(handle);
  }
  const auto give_up = Clock::now() + timeout;
  std::size_t ok = 0;
  for (auto& handle : handles) {
    auto joined = handle->joined();
    if (joined.wait_until(give_up) != std::future_status::ready) break;
    if (joined.get().ok()) ++ok;
  }
  return ok;
}

void Channels::close() {
  std::vector<std::shared_ptr<Channel>> handles;
  {
    std::lock_guard lock(shared_->mutex);
    for (auto& [id, handle] : shared_->channels) handles.push_back(handle);
  }
  for (auto& handle : handles) handle->leave();
}

asio::any_io_executor Channels::executor() const { return shared_->io.get_executor(); }

}  // namespace switchboard::client
