// Relay start-up, accept loop, signal handling and stream-aware draining.
#include "server/server.hpp"

#include <sched.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <csignal>
#include <span>
#include <stdexcept>

#include "net/session.hpp"
#include "server/admin_http.hpp"
#include "server/admin_views.hpp"
#include "switchboard/wire/codec.hpp"
#if SWITCHBOARD_WITH_GRPC
#include "grpc_gateway/gateway.hpp"
#endif

namespace switchboard::core {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
namespace {
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

void log_exception(std::exception_ptr error) {
  if (!error) return;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    spdlog::error("server task failed error=\"{}\"", e.what());
  }
}
}  // namespace

tcp::endpoint parse_endpoint(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) {
    throw std::invalid_argument("address \"" + text + "\" is not HOST:PORT");
  }
  std::string host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(port_text, &used);
    if (used != port_text.size()) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    throw std::invalid_argument("port \"" + port_text + "\" is not a number");
  }
  if (port > 65535) throw std::invalid_argument("port " + port_text + " is out of range");
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) throw std::invalid_argument("host \"" + host + "\" is not an IP address");
  return tcp::endpoint(address, static_cast<unsigned short>(port));
}

Server::Server(ServerConfig config)
    : config_(std::move(config)),
      context_(std::make_unique<RelayContext>(config_.limits)),
      acceptor_(io_),
      grpc_acceptor_(io_),
      connect_throttle_(config_.limits.connect_rate_per_address,
                        config_.limits.connect_burst_per_address) {
  config_.limits.validate();
  context_->authenticator = auth::Authenticator(config_.auth);
  config_.tls.validate();
  if (config_.tls.native) native_tls_ = std::make_unique<net::TlsContextHolder>(config_.tls);
  const auto endpoint = parse_endpoint(config_.listen);
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(tcp::acceptor::reuse_address(true));
  acceptor_.bind(endpoint);
  acceptor_.listen(asio::socket_base::max_listen_connections);
  bound_ = acceptor_.local_endpoint();
  if (config_.threads == 0) config_.threads = std::max(1U, std::thread::hardware_concurrency());
  for (unsigned i = 1; i < config_.threads; ++i) {
    workers_.push_back(std::make_unique<asio::io_context>());
  }
  open_grpc_door();
  if (!config_.admin_listen.empty()) {
    AdminHandlers handlers;
    handlers.metrics = [this] { return metrics_text(*context_, draining(), started_); };
    handlers.draining = [this] { return draining(); };
    if (config_.admin_introspection) {
      handlers.channels = [this] { return channels_json(context_->registry); };
      handlers.channel = [this](std::string_view id) {
        return channel_json(context_->registry, id);
      };
    }
    try {
      admin_ = std::make_unique<AdminServer>(io_, parse_endpoint(config_.admin_listen),
                                             std::move(handlers));
    } catch (const boost::system::system_error& e) {
      throw std::runtime_error("cannot listen for admin HTTP on " + config_.admin_listen + ": " +
                               e.code().message());
    }
  }
}

Server::~Server() {
  if (!threads_.empty()) {
    shutdown();
    wait();
  }
  // Never started: nothing to drain, but the gateway still has to stop.
  stop_gateway();
  if (gateway_stopper_.joinable()) gateway_stopper_.join();
}

std::optional<tcp::endpoint> Server::admin_endpoint() const {
  if (!admin_) return std::nullopt;
  return admin_->local_endpoint();
}

void Server::stop_gateway() {
#if SWITCHBOARD_WITH_GRPC
  if (gateway_) gateway_->shutdown(std::chrono::system_clock::now());
#endif
}

void Server::run_io(asio::io_context& io, std::chrono::microseconds spin) {
  if (spin.count() == 0) {
    io.run();
    return;
  }
  // Runs what is ready without sleeping while events keep coming; sleeps (run_one) once none
  // came for `spin`. Ends, as run() does, when the context is stopped or out of work.
  // The gRPC door's bytes pass through these threads too (the HTTP/2 guard), so a spin also
  // saves a wake-up on each of its hops.
  using Clock = std::chrono::steady_clock;
  auto last_event = Clock::now();
  while (!io.stopped()) {
    if (io.poll() == 0) {
      if (Clock::now() - last_event < spin) {
        sched_yield();
        continue;
      }
      if (io.run_one() == 0) break;
    }
    last_event = Clock::now();
  }
}

void Server::start() {
  guards_.push_back(asio::make_work_guard(io_));
  for (auto& worker : workers_) guards_.push_back(asio::make_work_guard(*worker));
  accept_loop_start(acceptor_, Door::native);
  if (grpc_acceptor_.is_open()) accept_loop_start(grpc_acceptor_, Door::grpc);
  watch_grpc_tls();
  if (admin_) admin_->start();
  const auto spin = std::chrono::microseconds(config_.idle_spin_us);
  threads_.emplace_back([this, spin] { run_io(io_, spin); });
  for (auto& worker : workers_) {
    threads_.emplace_back([&context = *worker, spin] { run_io(context, spin); });
  }
  const auto& l = config_.limits;
  std::string admin = "off";
  if (admin_) {
    const auto endpoint = admin_->local_endpoint();
    admin = endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
  }
  const auto grpc = grpc_address();
  spdlog::info(
      "relay started core={}:{} grpc={} admin={} introspection={} threads={} tls_native={} "
      "tls_grpc={} mutual_tls={}",
      bound_.address().to_string(), bound_.port(), grpc.empty() ? "off" : grpc, admin,
      config_.admin_introspection, config_.threads, config_.tls.native, config_.tls.grpc,
      config_.tls.any() && config_.tls.mutual());
  spdlog::info(
      "limits max_frame={} stream_window={} max_streams_per_connection={} "
      "max_peers_per_channel={} max_channels={} max_connections={} max_connection_buffer={} "
      "connect_rate_per_address={} connect_burst_per_address={} "
      "handshake_timeout_ms={} keepalive_interval_ms={} slow_consumer_timeout_ms={} "
      "write_timeout_ms={} default_idle_timeout_ms={} drain_timeout_ms={} "
      "grpc_max_header_block={} grpc_streams_per_connection={} "
      "grpc_control_frames_per_second={} grpc_resets_per_second={}",
      l.max_frame, l.stream_window, l.max_streams_per_connection, l.max_peers_per_channel,
      l.max_channels, l.max_connections, l.max_connection_buffer, l.connect_rate_per_address,
      l.connect_burst_per_address, l.handshake_timeout.count(), l.keepalive_interval.count(),
      l.slow_consumer_timeout.count(), l.write_timeout.count(), l.default_idle_timeout.count(),
      l.drain_timeout.count(), l.grpc_max_header_block, l.grpc_streams_per_connection(),
      l.grpc_control_frames_per_second, l.grpc_resets_per_second);
}

// One line per refused connection would let a flood fill the log: at most one a second, with
// the number refused since the last line.
void Server::log_refusal() {
  ++refusals_since_log_;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_refusal_log_ < std::chrono::seconds(1)) return;
  spdlog::warn("connection refused reason=connection_limit max_connections={} refused={}",
               config_.limits.max_connections, refusals_since_log_);
  last_refusal_log_ = now;
  refusals_since_log_ = 0;
}

void Server::log_throttled() {
  ++throttled_since_log_;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_throttle_log_ < std::chrono::seconds(1)) return;
  spdlog::warn(
      "connection refused reason=connect_rate connect_rate_per_address={} "
      "connect_burst_per_address={} refused={}",
      config_.limits.connect_rate_per_address, config_.limits.connect_burst_per_address,
      throttled_since_log_);
  last_throttle_log_ = now;
  throttled_since_log_ = 0;
}

void Server::log_summary() {
  if (summary_logged_) return;
  summary_logged_ = true;
  const auto& c = context_->counters;
  auto ended = [](const DoorCounters& door) {
    std::uint64_t sum = 0;
    for (const auto& outcome : door.stream_outcomes) sum += outcome.load();
    return sum;
  };
  const auto uptime =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now() - started_);
  spdlog::info(
      "relay stopped uptime_s={} native_connections={} grpc_calls={} native_streams={} "
      "grpc_streams={} streams_ok={} native_bytes_in={} native_bytes_out={} grpc_bytes_in={} "
      "grpc_bytes_out={}",
      uptime.count(), c.native.connections_total.load(), c.grpc.connections_total.load(),
      ended(c.native), ended(c.grpc),
      c.native.stream_outcomes[0].load() + c.grpc.stream_outcomes[0].load(),
      c.native.bytes_in.load(), c.native.bytes_out.load(), c.grpc.payload_bytes_in.load(),
      c.grpc.payload_bytes_out.load());
}

void Server::accept_loop_start(tcp::acceptor& acceptor, Door door) {
  asio::co_spawn(
      io_,
      [this, &acceptor, door]() -> asio::awaitable<void> {
        asio::steady_timer backoff(io_);
        while (acceptor.is_open()) {
          auto [ec, socket] = co_await acceptor.async_accept(kUseTuple);
          if (ec) {
            if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
            // Out of descriptors or similar: back off instead of spinning.
            spdlog::warn("accept failed error=\"{}\"", ec.message());
            backoff.expires_after(std::chrono::milliseconds(100));
            co_await backoff.async_wait(kUseTuple);
            continue;
          }
          // The refusal is best effort: one non-blocking write, so a client that does not read
          // cannot hold up the accept loop. A gRPC client is simply closed: it speaks first.
          auto refuse = [door](auto& refused, std::string_view why) {
            boost::system::error_code ignored;
            if (door == Door::grpc) {
              refused.close(ignored);
              return;
            }
            std::vector<std::uint8_t> refusal;
            wire::append_error(refusal, wire::Error{Status::resource_exhausted, std::string(why)});
            refused.non_blocking(true, ignored);
            refused.write_some(asio::buffer(refusal), ignored);
            refused.close(ignored);
          };
          boost::system::error_code endpoint_error;
          const auto remote = socket.remote_endpoint(endpoint_error);
          if (!endpoint_error && !connect_throttle_.admit(remote.address())) {
            (door == Door::grpc ? context_->counters.grpc.connections_throttled
                                : context_->counters.native.connections_throttled)
                .fetch_add(1, std::memory_order_relaxed);
            log_throttled();
            refuse(socket, "too many connections from your address");
            continue;
          }
          const auto& counters = context_->counters;
          const auto open = counters.native.connections_open.load(std::memory_order_relaxed) +
                            counters.grpc_transports_open.load(std::memory_order_relaxed) +
                            static_cast<std::int64_t>(placements_.size());
          if (open >= static_cast<std::int64_t>(config_.limits.max_connections)) {
            (door == Door::grpc ? context_->counters.grpc.connections_refused
                                : context_->counters.native.connections_refused)
                .fetch_add(1, std::memory_order_relaxed);
            log_refusal();
            refuse(socket, "relay is at its connection limit");
            continue;
          }
          if (door == Door::grpc) {
            if (grpc_tls_) {
              start_tls_session(move_to(std::move(socket), next_context()), door);
            } else {
              adopt_grpc(net::make_tcp_transport(move_to(std::move(socket), next_context())));
            }
          } else if (native_tls_) {
            start_tls_session(move_to(std::move(socket), next_context()), door);
          } else if (config_.placement == "channel" && !workers_.empty()) {
            place_session(std::move(socket));
          } else {
            start_session(net::make_tcp_transport(move_to(std::move(socket), next_context())),
                          std::chrono::steady_clock::now());
          }
        }
      },
      log_exception);
}

asio::io_context& Server::next_context() {
  const std::size_t n =
      next_worker_.fetch_add(1, std::memory_order_relaxed) % (workers_.size() + 1);
  return n == 0 ? io_ : *workers_[n - 1];
}

asio::io_context& Server::channel_context(const Uuid& channel) {
  // Channel ids are random (v4), so any eight of their bytes spread channels evenly.
  std::uint64_t hash = 0;
  for (std::size_t i = 0; i < 8; ++i) hash = (hash << 8) | channel.bytes[i + 8];
  const std::size_t n = hash % (workers_.size() + 1);
  return n == 0 ? io_ : *workers_[n - 1];
}

struct Server::PendingPlacement {
  PendingPlacement(tcp::socket s, asio::io_context& io) : socket(std::move(s)), deadline(io) {}
  tcp::socket socket;
  asio::steady_timer deadline;
  std::chrono::steady_clock::time_point accepted_at = std::chrono::steady_clock::now();
  bool timed_out = false;
};

// A session hands frames to the other sessions of its channel; on one thread that is a queue
// push, across threads a wake-up each way. So a plaintext connection waits for its first bytes
// here, the channel is peeked from its HELLO (the session reads the HELLO again for real), and
// the socket moves to that channel's thread. A client that sends nothing, or something other
// than a HELLO, gets its session anyway, which reports the error.
void Server::place_session(tcp::socket socket) {
  const auto key = next_placement_++;
  auto pending = std::make_shared<PendingPlacement>(std::move(socket), io_);
  placements_.emplace(key, pending);
  pending->deadline.expires_at(pending->accepted_at + config_.limits.handshake_timeout);
  pending->deadline.async_wait([pending](boost::system::error_code ec) {
    if (ec) return;
    pending->timed_out = true;
    pending->socket.cancel(ec);
  });
  pending->socket.async_wait(
      tcp::socket::wait_read, [this, key, pending](boost::system::error_code ec) {
        pending->deadline.cancel();
        placements_.erase(key);
        // Closed by a drain: the relay takes no new sessions.
        if (!pending->socket.is_open() || (ec && !pending->timed_out)) return;
        asio::io_context* target = &next_context();
        std::array<std::uint8_t, wire::kHelloChannelPrefixSize> head{};
        boost::system::error_code peek_error;
        pending->socket.non_blocking(true, peek_error);
        const auto n =
            pending->socket.receive(asio::buffer(head), tcp::socket::message_peek, peek_error);
        if (!peek_error) {
          if (auto channel = wire::hello_channel_hint(std::span(head.data(), n))) {
            target = &channel_context(*channel);
          }
        }
        start_session(net::make_tcp_transport(move_to(std::move(pending->socket), *target)),
                      pending->accepted_at);
      });
}

tcp::socket Server::move_to(tcp::socket socket, asio::io_context& target) {
  if (&asio::query(socket.get_executor(), asio::execution::context) == &target) return socket;
  boost::system::error_code ec;
  const auto protocol = socket.local_endpoint(ec).protocol();
  tcp::socket moved(target);
  if (ec) return moved;  // not connected any more: the session sees a closed socket
  const auto handle = socket.release(ec);
  if (ec) return moved;
  moved.assign(protocol, handle, ec);
  if (ec) ::close(handle);
  return moved;
}

void Server::start_session(std::unique_ptr<net::Transport> transport,
                           std::chrono::steady_clock::time_point accepted_at) {
  const auto id = next_connection_id_.fetch_add(1);
  auto session = std::make_shared<net::Session>(std::move(transport), *context_, id, accepted_at);
  track(session, id);
  session->start();
}

// The handshake runs on the connection's own strand, so a slow or silent client holds up no one;
// the handshake timeout bounds it, and a relay shutting down meanwhile drops the connection.
void Server::start_tls_session(tcp::socket socket, Door door) {
  auto executor = socket.get_executor();
  auto cancel = std::make_shared<asio::cancellation_signal>();
  std::uint64_t key = 0;
  {
    std::lock_guard lock(handshakes_mutex_);
    key = next_handshake_++;
    handshakes_.emplace(key, PendingHandshake{executor, cancel});
  }
  asio::co_spawn(
      executor,
      [this, key, door, socket = std::move(socket),
       accepted_at = std::chrono::steady_clock::now()]() mutable -> asio::awaitable<void> {
        std::string remote;
        boost::system::error_code ec;
        if (const auto endpoint = socket.remote_endpoint(ec); !ec) {
          remote = endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
        }
        auto& tls = door == Door::grpc ? *grpc_tls_ : *native_tls_;
        auto transport = co_await net::accept_tls(std::move(socket), tls.current(),
                                                  config_.limits.handshake_timeout, ec);
        {
          std::lock_guard lock(handshakes_mutex_);
          handshakes_.erase(key);
        }
        if (!transport) {
          (door == Door::grpc ? context_->counters.grpc.tls_handshake_failures
                              : context_->counters.native.tls_handshake_failures)
              .fetch_add(1, std::memory_order_relaxed);
          spdlog::debug("tls handshake failed door={} remote={} error=\"{}\"",
                        door == Door::grpc ? "grpc" : "native", remote,
                        net::describe_tls_error(ec));
          co_return;
        }
        if (shutting_down_.load()) {
          transport->close();
          co_return;
        }
        if (door == Door::grpc) {
          adopt_grpc(std::move(transport));
        } else {
          start_session(std::move(transport), accepted_at);
        }
      },
      asio::bind_cancellation_slot(cancel->slot(), log_exception));
}

void Server::cancel_handshakes() {
  std::lock_guard lock(handshakes_mutex_);
  for (const auto& [key, pending] : handshakes_) {
    // Emitted on the handshake's strand, and only while it is still waiting (it leaves the map
    // on that strand when its handshake ends).
    asio::post(pending.executor, [this, key = key] {
      std::lock_guard inner(handshakes_mutex_);
      if (auto it = handshakes_.find(key); it != handshakes_.end()) {
        it->second.cancel->emit(asio::cancellation_type::terminal);
      }
    });
  }
}

bool Server::reload_tls() {
  if (!native_tls_ && !grpc_tls_) {
    spdlog::info("tls reload skipped: no door has TLS");
    return false;
  }
  bool reloaded = true;
  if (native_tls_) reloaded = native_tls_->reload() && reloaded;
  if (grpc_tls_) reloaded = grpc_tls_->reload() && reloaded;
  return reloaded;
}

void Server::track(const std::shared_ptr<net::Session>& session, std::uint64_t id) {
  std::lock_guard lock(sessions_mutex_);
  if (sessions_.size() > 1024 && sessions_.size() % 1024 == 0) {
    std::erase_if(sessions_, [](const auto& entry) { return entry.second.expired(); });
  }
  sessions_.emplace(id, session);
}

void Server::shutdown() {
  if (shutting_down_.exchange(true)) return;
  asio::post(io_, [this] { begin_drain(); });
}

void Server::begin_drain() {
  spdlog::info(
      "relay draining sessions={} grpc_calls={} streams={} drain_timeout_ms={}",
      context_->counters.native.connections_open.load(),
      context_->counters.grpc.connections_open.load(),
      context_->counters.native.streams_open.load() + context_->counters.grpc.streams_open.load(),
      config_.limits.drain_timeout.count());
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  grpc_acceptor_.close(ignored);
  if (grpc_tls_watch_) grpc_tls_watch_->cancel();
  cancel_handshakes();
  for (auto& [key, pending] : placements_) pending->socket.close(ignored);
  if (signals_) signals_->cancel(ignored);
  context_->registry.start_draining();
#if SWITCHBOARD_WITH_GRPC
  if (gateway_) gateway_->drain();
#endif
  std::vector<std::shared_ptr<net::Session>> live;
  {
    std::lock_guard lock(sessions_mutex_);
    for (auto& [id, weak] : sessions_) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
  }
  for (auto& session : live) session->drain();
  asio::co_spawn(
      io_,
      [this]() -> asio::awaitable<void> {
        asio::steady_timer poll(io_);
        const auto deadline = std::chrono::steady_clock::now() + config_.limits.drain_timeout;
        bool terminated = false;
        auto next_progress = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        while (context_->counters.native.connections_open.load() > 0) {
          if (std::chrono::steady_clock::now() >= next_progress) {
            next_progress += std::chrono::seconds(1);
            spdlog::info(
                "drain progress sessions={} streams={} remaining_ms={}",
                context_->counters.native.connections_open.load(),
                context_->counters.native.streams_open.load(),
                std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                              deadline - std::chrono::steady_clock::now())
                                              .count()));
          }
          if (terminated &&
              std::chrono::steady_clock::now() >= deadline + std::chrono::seconds(5)) {
            spdlog::error("sessions did not close after termination remaining={}",
                          context_->counters.native.connections_open.load());
            stop_gateway();
            if (admin_) admin_->stop();
            io_.stop();
            for (auto& worker : workers_) worker->stop();
            co_return;
          }
          if (!terminated && std::chrono::steady_clock::now() >= deadline) {
            terminated = true;
            spdlog::warn("drain timeout reached; closing remaining sessions={}",
                         context_->counters.native.connections_open.load());
            std::lock_guard lock(sessions_mutex_);
            for (auto& [id, weak] : sessions_) {
              if (auto session = weak.lock()) session->terminate("relay shut down");
            }
          }
          poll.expires_after(std::chrono::milliseconds(10));
          co_await poll.async_wait(kUseTuple);
        }
        spdlog::info("relay drained terminated={}", terminated);
        if (signals_) signals_.reset();
        // gRPC's shutdown blocks until its calls are done, and they finish on these I/O
        // threads: run it elsewhere, then let the threads end.
        const auto grace =
            std::chrono::system_clock::now() +
            std::chrono::duration_cast<std::chrono::system_clock::duration>(
                std::max<std::chrono::steady_clock::duration>(
                    deadline - std::chrono::steady_clock::now(), std::chrono::milliseconds(100)));
        gateway_stopper_ = std::thread([this, grace] {
#if SWITCHBOARD_WITH_GRPC
          if (gateway_) gateway_->shutdown(grace);
#endif
          asio::post(io_, [this] {
            if (admin_) admin_->stop();
            for (auto& guard : guards_) guard.reset();
          });
        });
      },
      log_exception);
}

void Server::wait() {
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  const bool ran = !threads_.empty();
  threads_.clear();
  if (gateway_stopper_.joinable()) gateway_stopper_.join();
  if (ran) log_summary();
}

void Server::handle_signals() {
  signals_ = std::make_unique<asio::signal_set>(io_, SIGINT, SIGTERM, SIGHUP);
  wait_for_signal();
}

void Server::wait_for_signal() {
  signals_->async_wait([this](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("signal received signal={}", signal);
    if (signal != SIGHUP) {
      shutdown();
      return;
    }
    reload_tls();
    if (!shutting_down_.load() && signals_) wait_for_signal();
  });
}

}  // namespace switchboard::core
