// switchboard-cluster-bench: the load generator of bench/cluster_bench.sh. Native workloads over
// one relay or a cluster of relays (requests over many channels with the relays' CPU time, join
// latency with and without a REDIRECT, failover after kill -9, a join storm); the gRPC workload
// is in sb_cluster_grpc.cpp.
#include "sb_cluster.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>

#include "switchboard/client.hpp"

namespace sbc {

namespace asio = boost::asio;
using switchboard::client::Connection;
using switchboard::client::ConnectionEvent;
using switchboard::client::ConnectionState;
using switchboard::client::ConnectOptions;
using switchboard::client::Outcome;
using switchboard::client::Stream;
using switchboard::client::Target;

namespace {

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

asio::awaitable<void> sleep_ms(long ms) {
  asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
  co_await timer.async_wait(asio::use_awaitable);
}

ConnectOptions options_for(const RelayInfo& relay, const Uuid& channel, bool accept_requests) {
  ConnectOptions options;
  options.host = relay.host;
  options.port = relay.port;
  options.channel = channel;
  options.accept_requests = accept_requests;
  return options;
}

asio::awaitable<std::shared_ptr<Connection>> connect(ConnectOptions options) {
  Outcome outcome;
  auto connection =
      co_await Connection::connect(co_await asio::this_coro::executor, std::move(options), outcome);
  if (!connection) throw std::runtime_error("connect failed: " + outcome.describe());
  co_return connection;
}

asio::awaitable<std::uint64_t> drain(std::shared_ptr<Stream> stream) {
  std::uint64_t total = 0;
  for (;;) {
    auto chunk = co_await stream->read();
    if (chunk.size == 0) co_return total;
    total += chunk.size;
  }
}

// A responder's answer: the request read whole, then a 128-byte reply.
asio::awaitable<void> serve(std::shared_ptr<Stream> request) {
  co_await drain(request);
  std::array<std::uint8_t, 128> reply{};
  co_await request->write(reply, true);
}

void answer_requests(const std::shared_ptr<Connection>& connection,
                     const asio::any_io_executor& executor) {
  connection->on_request([executor](std::shared_ptr<Stream> request) {
    asio::co_spawn(executor, serve(std::move(request)), asio::detached);
  });
}

// Runs `count` jobs, at most `inflight` at a time; rethrows the first failure.
template <class Job>
asio::awaitable<void> run_bounded(std::size_t count, std::size_t inflight, Job job) {
  auto executor = co_await asio::this_coro::executor;
  std::size_t next = 0;
  std::size_t running = std::min(inflight, count);
  std::exception_ptr error;
  for (std::size_t w = 0, n = running; w < n; ++w) {
    asio::co_spawn(
        executor,
        [&]() -> asio::awaitable<void> {
          try {
            while (next < count && !error) co_await job(next++);
          } catch (...) {
            error = std::current_exception();
          }
          --running;
        },
        asio::detached);
  }
  while (running > 0) co_await sleep_ms(1);
  if (error) std::rethrow_exception(error);
}

std::vector<Uuid> channels_owned_by(const std::vector<RelayInfo>& relays, std::size_t count,
                                    std::optional<std::size_t> owner) {
  std::vector<Uuid> out;
  while (out.size() < count) {
    const auto channel = Uuid::random();
    if (!owner || owner_index(relays, channel) == *owner) out.push_back(channel);
  }
  return out;
}

// Peers grouped by channel: `per_channel` consecutive entries share one.
struct Crowd {
  std::vector<Uuid> channels;
  std::size_t per_channel = 0;
  std::vector<std::shared_ptr<Connection>> connections;

  std::size_t first_of(std::size_t i) const { return i / per_channel * per_channel; }
  // Connected and seeing exactly the other peers of its channel.
  bool exact(std::size_t i) const {
    const auto& connection = connections[i];
    if (!connection || connection->state() != ConnectionState::connected) return false;
    auto seen = connection->peers();
    if (seen.size() + 1 != per_channel) return false;
    std::vector<Uuid> expected;
    for (std::size_t j = first_of(i); j < first_of(i) + per_channel; ++j) {
      if (j == i) continue;
      if (!connections[j]) return false;
      expected.push_back(connections[j]->peer_id());
    }
    std::sort(seen.begin(), seen.end());
    std::sort(expected.begin(), expected.end());
    return seen == expected;
  }
  bool all_exact() const {
    for (std::size_t i = 0; i < connections.size(); ++i) {
      if (!exact(i)) return false;
    }
    return true;
  }
  void close() {
    for (auto& connection : connections) {
      if (connection) connection->close();
    }
  }
};

asio::awaitable<void> wait_until(const std::function<bool()>& done, long timeout_ms,
                                 const std::string& what, long poll_ms = 5) {
  const auto deadline = bench::now_ns() + timeout_ms * 1'000'000LL;
  while (!done()) {
    if (bench::now_ns() > deadline) throw std::runtime_error("timed out waiting for " + what);
    co_await sleep_ms(poll_ms);
  }
}

std::string seconds_list(const std::vector<double>& values) {
  std::string out;
  char text[32];
  for (double v : values) {
    std::snprintf(text, sizeof text, "%s%.3f", out.empty() ? "" : " ", v);
    out += text;
  }
  return out;
}

// ---- cluster-rr ----

struct RrState {
  bool stop = false;
  bool record = false;
  std::uint64_t done = 0;
  std::uint64_t limit = 0;
  int running = 0;
  std::vector<double> samples;
  std::exception_ptr error;
};

asio::awaitable<void> requester(std::shared_ptr<Connection> connection, RrState& state) {
  std::array<std::uint8_t, 128> body{};
  bench::fill_pattern(body.data(), body.size(), 7);
  try {
    while (!state.stop && !state.error && state.done < state.limit) {
      const auto start = bench::now_ns();
      auto request = connection->open_request(Target::any());
      auto wrote = co_await request->write(body, true);
      if (!wrote.ok()) throw std::runtime_error("request write failed: " + wrote.describe());
      const auto received = co_await drain(request);
      const auto outcome = co_await request->result();
      if (!outcome.ok()) throw std::runtime_error("request failed: " + outcome.describe());
      if (received == 0) throw std::runtime_error("empty response");
      ++state.done;
      if (state.record) state.samples.push_back(static_cast<double>(bench::now_ns() - start));
    }
  } catch (...) {
    state.error = std::current_exception();
  }
  --state.running;
}

// Every requester loops until `ms` have passed or `limit` requests are done.
asio::awaitable<std::int64_t> rr_phase(const std::vector<std::shared_ptr<Connection>>& requesters,
                                       RrState& state, long ms, std::uint64_t limit, bool record) {
  auto executor = co_await asio::this_coro::executor;
  state.stop = false;
  state.record = record;
  state.done = 0;
  state.limit = limit;
  state.running = static_cast<int>(requesters.size());
  const auto start = bench::now_ns();
  for (const auto& connection : requesters) {
    asio::co_spawn(executor, requester(connection, state), asio::detached);
  }
  const auto deadline = start + ms * 1'000'000LL;
  while (state.running > 0) {
    if (bench::now_ns() >= deadline) state.stop = true;
    co_await sleep_ms(1);
  }
  const auto elapsed = bench::now_ns() - start;
  if (state.error) std::rethrow_exception(state.error);
  co_return elapsed;
}

// Each channel: one responder and `requesters` requesters, each sequential; peer k enters through
// relay k mod N (a REDIRECT sends it to the channel's owner).
asio::awaitable<int> cluster_rr(const bench::Args& args) {
  const auto relays = relays_of(args);
  const auto channel_count = args.num("channels", 300);
  const auto per_channel = 1 + args.num("requesters", 2);
  const long seconds_ms = static_cast<long>(args.num("seconds", 15)) * 1000;
  const long warmup_ms = static_cast<long>(args.num("warmup-ms", 3000));
  const auto limit = args.num("n", 100'000'000);
  const long etcd_pid = static_cast<long>(args.num("etcd-pid", 0));
  // --direct: every peer connects to the relay placement names, as to independent relays that
  // split the channels among them without a cluster (the control for process count).
  const bool direct = args.has("direct");
  auto executor = co_await asio::this_coro::executor;

  Crowd crowd;
  crowd.channels = channels_owned_by(relays, channel_count, std::nullopt);
  crowd.per_channel = per_channel;
  crowd.connections.resize(channel_count * per_channel);
  co_await run_bounded(crowd.connections.size(), 64, [&](std::size_t i) -> asio::awaitable<void> {
    const bool responds = i % per_channel == 0;
    const auto& channel = crowd.channels[i / per_channel];
    const auto& entry = relays[direct ? owner_index(relays, channel) : i % relays.size()];
    auto connection = co_await connect(options_for(entry, channel, responds));
    if (responds) answer_requests(connection, executor);
    crowd.connections[i] = std::move(connection);
  });
  co_await wait_until([&] { return crowd.all_exact(); }, 30'000, "presence");
  std::vector<std::shared_ptr<Connection>> requesters;
  for (std::size_t i = 0; i < crowd.connections.size(); ++i) {
    if (i % per_channel != 0) requesters.push_back(crowd.connections[i]);
  }

  RrState state;
  co_await rr_phase(requesters, state, warmup_ms, limit, false);
  std::vector<double> cpu_before;
  std::uint64_t switches_before = 0;
  for (const auto& relay : relays) {
    cpu_before.push_back(cpu_seconds(relay.pid));
    switches_before += context_switches(relay.pid);
  }
  const auto etcd_before = cpu_seconds(etcd_pid);
  const auto self_before = cpu_seconds(0);
  state.samples.reserve(4'000'000);
  const auto elapsed = co_await rr_phase(requesters, state, seconds_ms, limit, true);
  std::vector<double> cpu;
  double relay_cpu = 0;
  std::uint64_t switches = 0;
  for (std::size_t r = 0; r < relays.size(); ++r) {
    cpu.push_back(cpu_seconds(relays[r].pid) - cpu_before[r]);
    relay_cpu += cpu.back();
    switches += context_switches(relays[r].pid);
  }
  switches -= std::min(switches, switches_before);
  const auto requests = static_cast<double>(state.done);
  bench::Json json;
  json.add("workload", "cluster-rr")
      .add("system", args.str("system", std::to_string(relays.size()) + "-relays"))
      .add("relays", static_cast<std::uint64_t>(relays.size()))
      .add("idle_spin_us", args.num("spin-us", 100))
      .add("channels", channel_count)
      .add("peers", static_cast<std::uint64_t>(crowd.connections.size()))
      .add("requests", state.done)
      .add("seconds", static_cast<double>(elapsed) / 1e9)
      .add("rps", bench::per_second(requests, elapsed));
  bench::add_latency(json, state.samples);
  json.add("relay_cpu_s", relay_cpu)
      .add("relay_cpu_us_per_req", requests > 0 ? relay_cpu * 1e6 / requests : 0.0)
      .add("relay_cpu_each_s", seconds_list(cpu))
      // Context switches of the relays' threads (voluntary: an I/O thread that ran out of work
      // and slept; involuntary: preempted): the wake-ups a request's cost is spread over.
      .add("relay_switches_per_req", requests > 0 ? static_cast<double>(switches) / requests : 0.0)
      .add("etcd_cpu_s", etcd_pid > 0 ? cpu_seconds(etcd_pid) - etcd_before : 0.0)
      .add("driver_cpu_s", cpu_seconds(0) - self_before)
      .print();
  crowd.close();
  co_await sleep_ms(100);
  co_return 0;
}

// ---- join latency ----

// connect() of one peer, from the first byte to the presence snapshot; closed at once.
asio::awaitable<double> timed_join(const RelayInfo& entry, const Uuid& channel) {
  const auto start = bench::now_ns();
  auto connection = co_await connect(options_for(entry, channel, false));
  const auto elapsed = bench::now_ns() - start;
  connection->close();
  co_return static_cast<double>(elapsed);
}

asio::awaitable<int> join_latency(const bench::Args& args) {
  const auto relays = relays_of(args);
  const auto n = args.num("n", 300);
  const auto warmup = args.num("warmup", 20);
  const auto anchor_count = std::max<std::uint64_t>(1, args.num("anchors", 20));
  const bool cluster = relays.size() > 1;

  // Warm channels: a peer already on the owner holds the channel's claim.
  const auto warm = channels_owned_by(relays, anchor_count, std::nullopt);
  std::vector<std::shared_ptr<Connection>> anchors;
  for (const auto& channel : warm) {
    anchors.push_back(
        co_await connect(options_for(relays[owner_index(relays, channel)], channel, false)));
  }
  std::map<std::string, std::vector<double>> samples;
  for (std::uint64_t i = 0; i < warmup + n; ++i) {
    const bool keep = i >= warmup;
    // Variants interleaved, so that a slow moment of the machine touches all of them alike.
    const auto& channel = warm[i % warm.size()];
    const auto owner = owner_index(relays, channel);
    const auto other = (owner + 1 + i % 2) % relays.size();
    auto t = co_await timed_join(relays[owner], channel);
    if (keep) samples["warm-direct"].push_back(t);
    if (cluster) {
      t = co_await timed_join(relays[other], channel);
      if (keep) samples["warm-redirect"].push_back(t);
    }
    // A new channel: its first peer makes the owner claim it (one etcd transaction in a cluster).
    const auto fresh = Uuid::random();
    const auto fresh_owner = owner_index(relays, fresh);
    t = co_await timed_join(relays[fresh_owner], fresh);
    if (keep) samples["cold-direct"].push_back(t);
    if (cluster) {
      const auto fresh2 = Uuid::random();
      const auto owner2 = owner_index(relays, fresh2);
      t = co_await timed_join(relays[(owner2 + 1 + i % 2) % relays.size()], fresh2);
      if (keep) samples["cold-redirect"].push_back(t);
    }
  }
  for (auto& [variant, rtt] : samples) {
    bench::Json json;
    json.add("workload", "cluster-join")
        .add("system", args.str("system", std::to_string(relays.size()) + "-relays"))
        .add("variant", variant)
        .add("n", static_cast<std::uint64_t>(rtt.size()));
    bench::add_latency(json, rtt);
    json.print();
  }
  for (auto& anchor : anchors) anchor->close();
  co_await sleep_ms(100);
  co_return 0;
}

// ---- failover after kill -9 ----

asio::awaitable<int> failover(const bench::Args& args) {
  const auto relays = relays_of(args);
  const auto victim = static_cast<std::size_t>(args.num("kill-index", 0));
  if (relays.size() < 2 || victim >= relays.size() || relays[victim].pid <= 0) {
    throw std::invalid_argument("failover needs 2+ relays, --kill-index and the relays' pids");
  }
  const auto channel_count = args.num("channels", 100);
  const auto per_channel = args.num("per-channel", 3);
  auto executor = co_await asio::this_coro::executor;

  // Every channel lives on the victim; its peers enter through the other relays.
  Crowd crowd;
  crowd.channels = channels_owned_by(relays, channel_count, victim);
  crowd.per_channel = per_channel;
  crowd.connections.resize(channel_count * per_channel);
  std::vector<std::int64_t> back(crowd.connections.size(), 0);
  std::vector<std::int64_t> exact_at(crowd.connections.size(), 0);
  std::vector<const RelayInfo*> entries;
  for (std::size_t r = 0; r < relays.size(); ++r) {
    if (r != victim) entries.push_back(&relays[r]);
  }
  co_await run_bounded(crowd.connections.size(), 64, [&](std::size_t i) -> asio::awaitable<void> {
    auto options = options_for(*entries[i % entries.size()], crowd.channels[i / per_channel], true);
    options.reconnect.enabled = true;
    options.reconnect.initial_delay =
        std::chrono::milliseconds(static_cast<long>(args.num("reconnect-initial-ms", 20)));
    options.reconnect.max_delay =
        std::chrono::milliseconds(static_cast<long>(args.num("reconnect-max-ms", 200)));
    auto connection = co_await connect(std::move(options));
    answer_requests(connection, executor);
    connection->on_connection_event([&back, i](const ConnectionEvent& event) {
      if (event.kind == ConnectionEvent::Kind::reconnected) back[i] = bench::now_ns();
    });
    crowd.connections[i] = std::move(connection);
  });
  co_await wait_until([&] { return crowd.all_exact(); }, 30'000, "presence before the kill");

  const auto killed_at = bench::now_ns();
  if (::kill(static_cast<pid_t>(relays[victim].pid), SIGKILL) != 0) {
    throw std::runtime_error("kill failed");
  }
  // Each peer counts as back once it has reconnected and sees exactly its channel's others;
  // polled every 2 ms.
  std::size_t pending = crowd.connections.size();
  const auto deadline =
      killed_at + static_cast<std::int64_t>(args.num("timeout-ms", 30'000)) * 1'000'000LL;
  while (pending > 0 && bench::now_ns() < deadline) {
    co_await sleep_ms(2);
    const auto now = bench::now_ns();
    for (std::size_t i = 0; i < crowd.connections.size(); ++i) {
      if (exact_at[i] != 0) continue;
      if (back[i] > killed_at && crowd.exact(i)) {
        exact_at[i] = now;
        --pending;
      }
    }
  }
  // A peer whose view went exact and then changed again would be a regression: check all.
  const bool all_exact = pending == 0 && crowd.all_exact();
  std::vector<double> back_s;
  std::vector<double> exact_s;
  for (std::size_t i = 0; i < crowd.connections.size(); ++i) {
    if (back[i] > killed_at) back_s.push_back(static_cast<double>(back[i] - killed_at) / 1e9);
    if (exact_at[i] != 0) exact_s.push_back(static_cast<double>(exact_at[i] - killed_at) / 1e9);
  }
  std::sort(back_s.begin(), back_s.end());
  std::sort(exact_s.begin(), exact_s.end());
  bench::Json json;
  json.add("workload", "cluster-failover")
      .add("system", args.str("system", std::to_string(relays.size()) + "-relays"))
      .add("peers", static_cast<std::uint64_t>(crowd.connections.size()))
      .add("ttl_ms", args.num("ttl-ms", 0))
      .add("back", static_cast<std::uint64_t>(back_s.size()))
      .add("exact", static_cast<std::uint64_t>(exact_s.size()))
      .add("all_exact", all_exact)
      .add("back_min_s", back_s.empty() ? 0.0 : back_s.front())
      .add("back_p50_s", bench::percentile(back_s, 50))
      .add("back_p99_s", bench::percentile(back_s, 99))
      .add("back_max_s", back_s.empty() ? 0.0 : back_s.back())
      .add("p50_s", bench::percentile(exact_s, 50))
      .add("p99_s", bench::percentile(exact_s, 99))
      .add("max_s", exact_s.empty() ? 0.0 : exact_s.back());
  if (!all_exact) json.add("error", "not every peer came back with exact presence");
  json.print();
  crowd.close();
  co_await sleep_ms(100);
  co_return all_exact ? 0 : 1;
}

// ---- join storm ----

asio::awaitable<int> storm(const bench::Args& args) {
  const auto relays = relays_of(args);
  const auto peers = args.num("peers", 10'000);
  const auto channel_count = std::max<std::uint64_t>(1, args.num("channels", 100));
  if (peers % channel_count != 0) throw std::invalid_argument("--peers must divide by --channels");
  const auto inflight = std::max<std::uint64_t>(1, args.num("inflight", peers));
  const auto limit = bench::raise_nofile_limit();
  if (limit < peers + 64) throw std::runtime_error("open-files limit too low for the storm");

  Crowd crowd;
  crowd.channels = channels_owned_by(relays, channel_count, std::nullopt);
  crowd.per_channel = peers / channel_count;
  crowd.connections.resize(peers);
  // Presence is followed by counting: a peer is complete when it sees its channel's others.
  std::vector<std::int64_t> seen(peers, 0);
  std::uint64_t complete = 0;
  std::uint64_t retries = 0;
  const auto want = static_cast<std::int64_t>(crowd.per_channel - 1);
  auto count = [&](std::size_t i, std::int64_t delta) {
    const bool was = seen[i] == want;
    seen[i] += delta;
    const bool is = seen[i] == want;
    if (is && !was) ++complete;
    if (was && !is) --complete;
  };

  const auto start = bench::now_ns();
  std::int64_t joined_ns = 0;
  std::exception_ptr error;
  bool joining = true;
  auto executor = co_await asio::this_coro::executor;
  asio::co_spawn(
      executor,
      [&]() -> asio::awaitable<void> {
        try {
          co_await run_bounded(peers, inflight, [&](std::size_t i) -> asio::awaitable<void> {
            auto options =
                options_for(relays[i % relays.size()], crowd.channels[i % channel_count], false);
            options.connect_timeout = std::chrono::seconds(30);
            // A connect refused or timed out in the crush is tried again, a bounded number of
            // times.
            for (int attempt = 1;; ++attempt) {
              Outcome outcome;
              auto connection = co_await Connection::connect(executor, options, outcome);
              if (connection) {
                connection->on_presence([&count, i](const switchboard::client::PresenceChange& c) {
                  count(i, c.joined ? 1 : -1);
                });
                count(i, static_cast<std::int64_t>(connection->peers().size()));
                crowd.connections[i] = std::move(connection);
                co_return;
              }
              if (attempt == 5) throw std::runtime_error("connect failed: " + outcome.describe());
              ++retries;
              co_await sleep_ms(50);
            }
          });
        } catch (...) {
          error = std::current_exception();
        }
        joined_ns = bench::now_ns() - start;
        joining = false;
      },
      asio::detached);
  // Peers are grouped by channel for the exact check, but join in a channel-interleaved order.
  const auto deadline =
      start + static_cast<std::int64_t>(args.num("timeout-ms", 120'000)) * 1'000'000LL;
  while ((joining || complete < peers) && !error && bench::now_ns() < deadline) {
    co_await sleep_ms(1);
  }
  if (error) std::rethrow_exception(error);
  if (complete < peers) throw std::runtime_error("not every peer saw its whole channel in time");
  const auto counted_ns = bench::now_ns() - start;
  // The exact check wants peers grouped by channel.
  Crowd grouped;
  grouped.channels = crowd.channels;
  grouped.per_channel = crowd.per_channel;
  for (std::size_t c = 0; c < channel_count; ++c) {
    for (std::size_t i = c; i < peers; i += channel_count) {
      grouped.connections.push_back(crowd.connections[i]);
    }
  }
  const bool exact = grouped.all_exact();
  const auto exact_ns = bench::now_ns() - start;
  bench::Json json;
  json.add("workload", "cluster-storm")
      .add("system", args.str("system", std::to_string(relays.size()) + "-relays"))
      .add("peers", peers)
      .add("channels", channel_count)
      .add("inflight", inflight)
      .add("joined_s", static_cast<double>(joined_ns) / 1e9)
      .add("presence_s", static_cast<double>(counted_ns) / 1e9)
      .add("checked_s", static_cast<double>(exact_ns) / 1e9)
      .add("peers_per_s", bench::per_second(static_cast<double>(peers), counted_ns))
      .add("retries", retries)
      .add("exact", exact);
  if (!exact) json.add("error", "presence counted complete but not exact");
  json.print();
  crowd.close();
  co_await sleep_ms(200);
  co_return exact ? 0 : 1;
}

void usage() {
  std::fprintf(
      stderr,
      "usage: switchboard-cluster-bench COMMAND --ids r1,.. --hosts 127.0.0.1,.. --ports P,..\n"
      "       [--grpc-ports G,..] [--pids PID,..] [flags]   (relays; one entry: a relay alone)\n"
      "  rr [--channels 300 --requesters 2 --seconds 15 --warmup-ms 3000 --etcd-pid PID]\n"
      "     [--direct]   (each peer straight to the relay placement names)\n"
      "  join [--n 300 --warmup 20 --anchors 20]\n"
      "  failover --kill-index I [--channels 100 --per-channel 3 --ttl-ms T]\n"
      "  storm [--peers 10000 --channels 100 --inflight PEERS]\n"
      "  grpc [--n 2000 --warmup 200]   (gRPC: Locate, calls to the owner and through another)\n"
      "every command: [--timeout SECONDS (120)] [--system NAME]; prints JSON lines.\n");
}

}  // namespace

std::vector<RelayInfo> relays_of(const bench::Args& args) {
  const auto ids = split(args.str("ids", "r1"));
  const auto hosts = split(args.str("hosts", "127.0.0.1"));
  const auto ports = split(args.str("ports", ""));
  const auto grpc_ports = split(args.str("grpc-ports", ""));
  const auto pids = split(args.str("pids", ""));
  if (ids.empty() || hosts.size() != ids.size() || ports.size() != ids.size()) {
    throw std::invalid_argument("--ids, --hosts and --ports need one entry per relay");
  }
  std::vector<RelayInfo> out;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    RelayInfo relay;
    relay.id = ids[i];
    relay.host = hosts[i];
    if (relay.host.rfind("127.", 0) != 0) {
      throw std::invalid_argument("only loopback (127.0.0.0/8) relays are allowed");
    }
    relay.port = static_cast<std::uint16_t>(std::stoul(ports[i]));
    if (i < grpc_ports.size())
      relay.grpc_port = static_cast<std::uint16_t>(std::stoul(grpc_ports[i]));
    if (i < pids.size()) relay.pid = std::stol(pids[i]);
    out.push_back(relay);
  }
  return out;
}

std::size_t owner_index(const std::vector<RelayInfo>& relays, const Uuid& channel) {
  if (relays.size() == 1) return 0;
  std::vector<std::string> ids;
  for (const auto& relay : relays) ids.push_back(relay.id);
  const auto owner = switchboard::cluster::owner_of(channel, ids);
  for (std::size_t i = 0; i < relays.size(); ++i) {
    if (relays[i].id == owner) return i;
  }
  throw std::logic_error("placement named no relay");
}

std::uint64_t context_switches(long pid) {
  // Summed over the process's threads: /proc/PID/status counts the main thread only.
  std::uint64_t total = 0;
  const std::string base = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(base, ec)) {
    std::ifstream status(task.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      for (const char* key : {"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"}) {
        if (line.rfind(key, 0) == 0) total += std::stoull(line.substr(std::strlen(key)));
      }
    }
  }
  return total;
}

double cpu_seconds(long pid) { return static_cast<double>(bench::proc_cpu_us(pid)) / 1e6; }

}  // namespace sbc

namespace {

using NativeCommand = boost::asio::awaitable<int> (*)(const bench::Args&);

boost::asio::awaitable<void> run_native(NativeCommand command, const bench::Args& args,
                                        int& exit_code, std::string& failure,
                                        boost::asio::io_context& io) {
  try {
    exit_code = co_await command(args);
  } catch (const std::exception& e) {
    exit_code = 1;
    failure = e.what();
  }
  io.stop();
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, NativeCommand> native = {{"rr", sbc::cluster_rr},
                                                       {"join", sbc::join_latency},
                                                       {"failover", sbc::failover},
                                                       {"storm", sbc::storm}};
  const std::string command = argc >= 2 ? argv[1] : "";
  if (native.count(command) == 0 && command != "grpc") {
    sbc::usage();
    return 2;
  }
  try {
    const bench::Args args(argc, argv, 2);
    if (command == "grpc") return sbc::grpc_workload(args);
    boost::asio::io_context io(1);
    int exit_code = 3;  // stays 3 if the time bound stops the run
    std::string failure;
    boost::asio::co_spawn(io, run_native(native.at(command), args, exit_code, failure, io),
                          boost::asio::detached);
    boost::asio::steady_timer limit(io, std::chrono::seconds(args.num("timeout", 120)));
    limit.async_wait([&](boost::system::error_code ec) {
      if (ec) return;
      failure = "time limit reached";
      io.stop();
    });
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      failure = "stopped by a signal";
      io.stop();
    });
    io.run();
    if (!failure.empty()) {
      std::fprintf(stderr, "switchboard-cluster-bench %s: %s\n", command.c_str(), failure.c_str());
      bench::Json()
          .add("workload", "cluster-" + command)
          .add("system", args.str("system", "?"))
          .add("error", failure)
          .print();
    }
    std::fflush(stdout);
    // Connections and coroutines may still be pending; leave without unwinding them.
    std::_Exit(exit_code);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "switchboard-cluster-bench %s: %s\n", command.c_str(), e.what());
    bench::Json().add("workload", "cluster-" + command).add("error", e.what()).print();
    std::fflush(stdout);
    std::_Exit(2);  // the gRPC workload's timer thread may still run
  }
}
