// Relay start-up, signal handling and the drain across every door.
#include "server/server.hpp"

#include <fmt/format.h>
#include <sched.h>
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <stdexcept>

#include "relay/sharded_counter.hpp"
#include "server/admin_http.hpp"
#include "server/admin_views.hpp"
#include "server/cluster_node.hpp"
#include "server/doors.hpp"

namespace switchboard::core {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
namespace {
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

std::string address_text(const tcp::endpoint& endpoint) {
  const auto host = endpoint.address();
  if (host.is_v6()) return fmt::format("[{}]:{}", host.to_string(), endpoint.port());
  return fmt::format("{}:{}", host.to_string(), endpoint.port());
}
}  // namespace

Server::Server(ServerConfig config)
    : config_(std::move(config)), context_(std::make_unique<RelayContext>(config_.limits)) {
  config_.limits.validate();
  context_->authenticator = auth::Authenticator(config_.auth);
  config_.tls.validate();
  if (config_.threads == 0) config_.threads = std::max(1U, std::thread::hardware_concurrency());
  io_ = std::make_unique<transport::IoContexts>(config_.threads);
  admission_ = std::make_unique<transport::Admission>(context_->limits);
  // Named before the doors start: the gRPC door marks the calls it carries with it.
  if (!config_.cluster.etcd.empty() && config_.cluster.node_id.empty()) {
    config_.cluster.node_id = default_node_id();
  }
  doors_ = make_doors(config_, *context_, *io_, *admission_);
  admission_->count_open_with([this] {
    std::int64_t open = 0;
    for (const auto& door : doors_) open += door->open_connections();
    return open;
  });
  if (!config_.cluster.etcd.empty()) {
    // Advertised by default as bound, so port 0 works too.
    cluster::NodeAddress self{
        config_.cluster.node_id.empty() ? default_node_id() : config_.cluster.node_id,
        config_.cluster.advertise.empty() ? address_text(core_endpoint())
                                          : config_.cluster.advertise,
        config_.cluster.advertise_grpc.empty() ? grpc_address() : config_.cluster.advertise_grpc};
    cluster_ = make_cluster_node(config_.cluster, std::move(self));
    context_->directory = &cluster_->directory();
    // Channels come and go with their claims: the registry asks before a channel's first peer
    // and reports its last one leaving (both under its lock, so nothing slips between), and
    // the directory's relinquished channels are moved peer by peer.
    auto* directory = context_->directory;
    context_->registry.set_channel_hooks(
        [directory](const Uuid& channel) { return directory->admit(channel); },
        [directory](const Uuid& channel) { directory->channel_emptied(channel); });
    directory->on_relinquish(
        [registry = &context_->registry](const Uuid& channel, const cluster::Verdict& next) {
          registry->relinquish(channel, next);
        });
  }
  if (!config_.admin_listen.empty()) {
    AdminHandlers handlers;
    handlers.metrics = [this] {
      std::vector<const Door*> doors;
      for (const auto& door : doors_) doors.push_back(door.get());
      auto text = metrics_text(*context_, doors, draining(), started_);
      if (cluster_) {
        MetricsWriter out;
        cluster_->write_metrics(out);
        text += out.take();
      }
      return text;
    };
    handlers.draining = [this] { return draining(); };
    if (cluster_) {
      handlers.not_ready = [this] { return cluster_->not_ready_reason(); };
      if (config_.admin_introspection) handlers.cluster = [this] { return cluster_->json(); };
    }
    if (config_.admin_introspection) {
      handlers.channels = [this] { return channels_json(context_->registry); };
      handlers.channel = [this](std::string_view id) {
        return channel_json(context_->registry, id);
      };
      handlers.page = true;
    }
    try {
      admin_ = std::make_unique<AdminServer>(io_->main(), parse_endpoint(config_.admin_listen),
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
  // Never started: nothing to drain, but the doors still have to stop.
  if (door_stopper_.joinable()) door_stopper_.join();
  stop_doors(std::chrono::system_clock::now());
}

const Door* Server::door(std::string_view name) const {
  for (const auto& door : doors_) {
    if (door->describe().name == name) return door.get();
  }
  return nullptr;
}

tcp::endpoint Server::core_endpoint() const {
  const auto* native = door("native");
  return native ? native->describe().endpoint.value_or(tcp::endpoint{}) : tcp::endpoint{};
}

std::string Server::grpc_address() const {
  const auto* grpc = door("grpc");
  if (!grpc) return {};
  const auto endpoint = grpc->describe().endpoint;
  return endpoint ? address_text(*endpoint) : std::string{};
}

int Server::grpc_port() const {
  const auto* grpc = door("grpc");
  if (!grpc) return 0;
  const auto endpoint = grpc->describe().endpoint;
  return endpoint ? endpoint->port() : 0;
}

std::optional<tcp::endpoint> Server::admin_endpoint() const {
  if (!admin_) return std::nullopt;
  return admin_->local_endpoint();
}

void Server::stop_doors(std::chrono::system_clock::time_point deadline) {
  for (auto& door : doors_) door->stop(deadline);
}

DrainProgress Server::drain_progress() const {
  DrainProgress total;
  for (const auto& door : doors_) {
    const auto progress = door->drain_progress();
    total.connections += progress.connections;
    total.streams += progress.streams;
  }
  return total;
}

void Server::run_io(asio::io_context& io, std::chrono::microseconds spin) {
  CounterShard::claim();
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
  for (std::size_t i = 0; i < io_->size(); ++i)
    guards_.push_back(asio::make_work_guard(io_->at(i)));
  if (cluster_) cluster_->start();
  for (auto& door : doors_) door->start();
  if (admin_) admin_->start();
  const auto spin = std::chrono::microseconds(config_.idle_spin_us);
  for (std::size_t i = 0; i < io_->size(); ++i) {
    threads_.emplace_back([&context = io_->at(i), spin] { run_io(context, spin); });
  }
  const auto& l = config_.limits;
  std::string admin = "off";
  if (admin_) admin = address_text(admin_->local_endpoint());
  const auto core = core_endpoint();
  const auto grpc = grpc_address();
  spdlog::info(
      "relay started core={}:{} grpc={} admin={} introspection={} threads={} tls_native={} "
      "tls_grpc={} mutual_tls={}",
      core.address().to_string(), core.port(), grpc.empty() ? "off" : grpc, admin,
      config_.admin_introspection, config_.threads, config_.tls.native, config_.tls.grpc,
      config_.tls.any() && config_.tls.mutual());
  spdlog::info(
      "limits max_frame={} stream_window={} max_streams_per_connection={} "
      "max_peers_per_channel={} max_channels={} max_connections={} max_connection_buffer={} "
      "socket_send_buffer={} "
      "connect_rate_per_address={} connect_burst_per_address={} "
      "handshake_timeout_ms={} keepalive_interval_ms={} slow_consumer_timeout_ms={} "
      "write_timeout_ms={} default_idle_timeout_ms={} drain_timeout_ms={} "
      "grpc_max_header_block={} grpc_streams_per_connection={} "
      "grpc_control_frames_per_second={} grpc_resets_per_second={}",
      l.max_frame, l.stream_window, l.max_streams_per_connection, l.max_peers_per_channel,
      l.max_channels, l.max_connections, l.max_connection_buffer, l.socket_send_buffer,
      l.connect_rate_per_address, l.connect_burst_per_address, l.handshake_timeout.count(),
      l.keepalive_interval.count(), l.slow_consumer_timeout.count(), l.write_timeout.count(),
      l.default_idle_timeout.count(), l.drain_timeout.count(), l.grpc_max_header_block,
      l.grpc_streams_per_connection(), l.grpc_control_frames_per_second, l.grpc_resets_per_second);
}

bool Server::reload_tls() {
  bool any = false;
  bool reloaded = true;
  for (auto& door : doors_) {
    if (!door->describe().tls) continue;
    any = true;
    reloaded = door->reload_tls() && reloaded;
  }
  if (!any) {
    spdlog::info("tls reload skipped: no door has TLS");
    return false;
  }
  return reloaded;
}

void Server::log_summary() {
  if (summary_logged_) return;
  summary_logged_ = true;
  auto ended = [](const DoorCounters& door) {
    std::uint64_t sum = 0;
    for (const auto& outcome : door.stream_outcomes) sum += outcome.load();
    return sum;
  };
  const auto uptime =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now() - started_);
  std::vector<DoorDescription> doors;
  for (const auto& door : doors_) doors.push_back(door->describe());
  std::string line = fmt::format("relay stopped uptime_s={}", uptime.count());
  std::uint64_t ok = 0;
  for (const auto& d : doors)
    line += fmt::format(" {}={}", d.total_key, d.counters->connections_total.load());
  for (const auto& d : doors) {
    line += fmt::format(" {}_streams={}", d.name, ended(*d.counters));
    ok += d.counters->stream_outcomes[0].load();
  }
  line += fmt::format(" streams_ok={}", ok);
  for (const auto& d : doors) {
    line += fmt::format(" {}_bytes_in={} {}_bytes_out={}", d.name, d.bytes_in, d.name, d.bytes_out);
  }
  spdlog::info("{}", line);
}

void Server::shutdown() {
  if (shutting_down_.exchange(true)) return;
  asio::post(io_->main(), [this] { begin_drain(); });
}

void Server::begin_drain() {
  std::string counts;
  std::int64_t streams = 0;
  for (const auto& door : doors_) {
    const auto d = door->describe();
    counts += fmt::format("{}={} ", d.open_key, d.counters->connections_open.load());
    streams += d.counters->streams_open.load();
  }
  spdlog::info("relay draining {}streams={} drain_timeout_ms={}", counts, streams,
               config_.limits.drain_timeout.count());
  boost::system::error_code ignored;
  if (signals_) signals_->cancel(ignored);
  // The other relays take over this relay's channels: their peers are sent there, and the
  // lease goes once they are gone (or at the drain timeout).
  if (cluster_) cluster_->leave(std::chrono::steady_clock::now() + config_.limits.drain_timeout);
  // Joins are refused from here on, so a connection still being accepted cannot add a peer.
  context_->registry.start_draining();
  for (auto& door : doors_) door->drain();
  asio::co_spawn(
      io_->main(),
      [this]() -> asio::awaitable<void> {
        asio::steady_timer poll(io_->main());
        const auto deadline = std::chrono::steady_clock::now() + config_.limits.drain_timeout;
        bool terminated = false;
        auto next_progress = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        for (auto progress = drain_progress(); progress.connections > 0;
             progress = drain_progress()) {
          if (std::chrono::steady_clock::now() >= next_progress) {
            next_progress += std::chrono::seconds(1);
            spdlog::info(
                "drain progress sessions={} streams={} remaining_ms={}", progress.connections,
                progress.streams,
                std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                              deadline - std::chrono::steady_clock::now())
                                              .count()));
          }
          if (terminated &&
              std::chrono::steady_clock::now() >= deadline + std::chrono::seconds(5)) {
            spdlog::error("sessions did not close after termination remaining={}",
                          progress.connections);
            stop_doors(std::chrono::system_clock::now());
            if (admin_) admin_->stop();
            for (std::size_t i = 0; i < io_->size(); ++i) io_->at(i).stop();
            co_return;
          }
          if (!terminated && std::chrono::steady_clock::now() >= deadline) {
            terminated = true;
            spdlog::warn("drain timeout reached; closing remaining sessions={}",
                         progress.connections);
            for (auto& door : doors_) door->terminate();
          }
          poll.expires_after(std::chrono::milliseconds(10));
          co_await poll.async_wait(kUseTuple);
        }
        spdlog::info("relay drained terminated={}", terminated);
        if (signals_) signals_.reset();
        // A door's stop may block until its streams are done while they finish on these I/O
        // threads (gRPC's shutdown does): run it elsewhere, then let the threads end.
        const auto grace =
            std::chrono::system_clock::now() +
            std::chrono::duration_cast<std::chrono::system_clock::duration>(
                std::max<std::chrono::steady_clock::duration>(
                    deadline - std::chrono::steady_clock::now(), std::chrono::milliseconds(100)));
        door_stopper_ = std::thread([this, grace] {
          stop_doors(grace);
          asio::post(io_->main(), [this] {
            if (admin_) admin_->stop();
            for (auto& guard : guards_) guard.reset();
          });
        });
      },
      transport::log_task_failure);
}

void Server::wait() {
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  const bool ran = !threads_.empty();
  threads_.clear();
  if (door_stopper_.joinable()) door_stopper_.join();
  if (cluster_) cluster_->stop();
  if (ran) log_summary();
}

void Server::handle_signals() {
  signals_ = std::make_unique<asio::signal_set>(io_->main(), SIGINT, SIGTERM, SIGHUP);
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
