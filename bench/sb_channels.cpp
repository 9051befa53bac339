// switchboard-bench many channels in one process (client::Channels): the channels-serve role and
// the channels workload (requests spread over the channels at rr-conc's concurrency, and the
// memory a channel costs in the relay and in the client).
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>
#include <vector>

#include "sb_bench.hpp"
#include "switchboard/channels.hpp"

namespace sbb {

namespace {

using switchboard::client::Channel;
using switchboard::client::Channels;
using switchboard::client::ChannelsOptions;
using switchboard::client::JoinOptions;

// Channel i of a run: the --channel UUID with its last four bytes XOR i, so that both processes
// derive the same set from one argument.
Uuid channel_number(const Uuid& base, std::uint64_t i) {
  Uuid id = base;
  for (std::size_t b = 0; b < 4; ++b) id.bytes[15 - b] ^= static_cast<std::uint8_t>(i >> (8 * b));
  return id;
}

ChannelsOptions channels_options(const bench::Args& args) {
  ChannelsOptions options;
  options.host = args.str("host", "127.0.0.1");
  options.port = static_cast<std::uint16_t>(args.num("port", 7400));
  if (args.has("max-frame"))
    options.max_frame = static_cast<std::uint32_t>(args.num("max-frame", 0));
  // --share 0: a TCP connection per channel (protocol version 3), for comparison.
  options.share_connections = args.num("share", 1) != 0;
  // --tls-ca FILE: TLS to a relay with tls_native (--tls-cert/--tls-key: a client certificate).
  if (args.has("tls-ca")) {
    options.tls.enabled = true;
    options.tls.ca_file = args.str("tls-ca", "");
    options.tls.cert_file = args.str("tls-cert", "");
    options.tls.key_file = args.str("tls-key", "");
  }
  return options;
}

// Answers like the responder role (sb_roles.cpp): the request read whole, then `reply_size`
// bytes, one coroutine per request.
asio::awaitable<void> answer(std::shared_ptr<Stream> request, std::size_t reply_size) {
  for (;;) {
    auto chunk = co_await request->read();
    if (chunk.size == 0) break;
  }
  std::vector<std::uint8_t> reply(reply_size, 0x5a);
  co_await request->write(reply, true);
}

void check_files(std::uint64_t channels) {
  const auto limit = bench::raise_nofile_limit();
  if (limit < channels + 64) {
    throw std::runtime_error("open-files limit " + std::to_string(limit) + " is too low for " +
                             std::to_string(channels) + " channels");
  }
}

}  // namespace

asio::awaitable<int> channels_serve(const bench::Args& args) {
  const auto count = args.num("channels", 1000);
  const auto reply_size = args.num("reply-size", 128);
  const auto base = channel_of(args);
  check_files(count);
  Channels channels(channels_options(args));
  for (std::uint64_t i = 0; i < count; ++i) {
    JoinOptions join;
    join.accept_requests = true;
    auto channel = channels.join(channel_number(base, i), join);
    auto executor = channel->executor();
    channel->on_request([executor, reply_size](std::shared_ptr<Stream> request) {
      asio::co_spawn(executor, answer(std::move(request), reply_size), asio::detached);
    });
  }
  const auto joined = channels.wait_all_joined(std::chrono::seconds(120));
  if (joined != count) {
    throw std::runtime_error("joined " + std::to_string(joined) + " of " + std::to_string(count));
  }
  std::printf("ready channels=%llu rss_kib=%llu\n", static_cast<unsigned long long>(count),
              static_cast<unsigned long long>(bench::proc_status_kib(0, "VmRSS")));
  std::fflush(stdout);
  for (;;) co_await sleep_ms(1000);  // until SIGTERM or --timeout
}

asio::awaitable<int> channels_workload(const bench::Args& args) {
  const auto count = args.num("channels", 1000);
  const auto requesters = args.num("requesters", 16);
  const auto n = args.num("n", 200'000);
  const auto warmup = args.num("warmup", n / 20);
  const long relay_pid = static_cast<long>(args.num("relay-pid", 0));
  if (relay_pid <= 0) throw std::invalid_argument("--relay-pid is required");
  const long serve_pid = static_cast<long>(args.num("serve-pid", 0));
  const auto base = channel_of(args);
  check_files(count);
  std::vector<std::uint8_t> body(args.num("size", 128));
  bench::fill_pattern(body.data(), body.size(), 2);

  co_await sleep_ms(200);
  const auto client_before = bench::proc_status_kib(0, "VmRSS");
  const auto relay_before = bench::proc_status_kib(relay_pid, "VmRSS");
  auto channels = std::make_unique<Channels>(channels_options(args));
  std::vector<std::shared_ptr<Channel>> handles;
  const auto join_start = bench::now_ns();
  // --first K: join from channel K on (wrapping), so that this object's first shared connection
  // is placed by another channel than the responders' (K = 1 puts it on the other of two relay
  // threads): then every request crosses between the relay's threads. Requests still go to
  // channel 0, 1, 2, ... in turn.
  const auto first = args.num("first", 0) % count;
  handles.resize(count);
  for (std::uint64_t k = 0; k < count; ++k) {
    const auto i = (first + k) % count;
    handles[i] = channels->join(channel_number(base, i));
  }
  // Blocks this thread (not the channels' I/O thread), bounded.
  const auto joined = channels->wait_all_joined(std::chrono::seconds(120));
  const auto join_ns = bench::now_ns() - join_start;
  if (joined != count) {
    throw std::runtime_error("joined " + std::to_string(joined) + " of " + std::to_string(count));
  }
  // Every channel sees its responder before the first request.
  const auto settle = bench::now_ns() + 20'000'000'000LL;
  for (auto& handle : handles) {
    while (handle->peers().empty()) {
      if (bench::now_ns() > settle) throw std::runtime_error("responders not seen in time");
      co_await sleep_ms(5);
    }
  }
  co_await sleep_ms(500);
  const auto client_joined = bench::proc_status_kib(0, "VmRSS");
  const auto relay_joined = bench::proc_status_kib(relay_pid, "VmRSS");

  // rr-conc's shape: `requesters` sequential loops, here each request on the next channel in
  // turn, all on the channels' I/O thread.
  struct State {
    std::uint64_t next = 0;
    std::uint64_t issued = 0;
    std::uint64_t total = 0;
    std::vector<double> samples;
    int running = 0;                   // on the channels' I/O thread
    std::atomic<std::int64_t> end{0};  // when the last requester finished; 0 while running
    std::string error;
  } state;
  auto phase = [&](std::uint64_t total) -> asio::awaitable<std::int64_t> {
    state.issued = 0;
    state.total = total;
    state.samples.clear();
    state.samples.reserve(total);
    state.running = static_cast<int>(requesters);
    state.end = 0;
    const auto start = bench::now_ns();
    for (std::uint64_t r = 0; r < requesters; ++r) {
      asio::co_spawn(
          channels->executor(),
          [&]() -> asio::awaitable<void> {
            while (state.issued < state.total && state.error.empty()) {
              ++state.issued;
              auto& channel = *handles[state.next++ % handles.size()];
              const auto t0 = bench::now_ns();
              auto response = co_await channel.async_request(Target::any(), body);
              if (!response.outcome.ok() || response.body.empty()) {
                state.error = "request failed: " + response.outcome.describe();
                break;
              }
              state.samples.push_back(static_cast<double>(bench::now_ns() - t0));
            }
            if (--state.running == 0) state.end = bench::now_ns();
          },
          asio::detached);
    }
    // The requesters run on the channels' I/O thread; polling from this thread more often than
    // this took measurable CPU from it on two cores. The end time is taken there, exactly.
    while (state.end == 0) co_await sleep_ms(20);
    co_return state.end - start;
  };
  // CPU per request over the warm-up and the measured requests, as bench/channels.sh takes it
  // around the whole rr-conc run.
  const auto cpu_before = std::array{bench::proc_cpu_us(relay_pid), bench::proc_cpu_us(0),
                                     bench::proc_cpu_us(serve_pid)};
  co_await phase(warmup);
  const auto elapsed = co_await phase(n);
  if (!state.error.empty()) throw std::runtime_error(state.error);
  const auto cpu_after = std::array{bench::proc_cpu_us(relay_pid), bench::proc_cpu_us(0),
                                    bench::proc_cpu_us(serve_pid)};
  const auto cpu_per_request = [&](std::size_t i) {
    return static_cast<double>(cpu_after[i] - cpu_before[i]) / static_cast<double>(n + warmup);
  };
  const auto client_loaded = bench::proc_status_kib(0, "VmRSS");
  const auto relay_loaded = bench::proc_status_kib(relay_pid, "VmRSS");

  const auto per_channel = [count](std::uint64_t after, std::uint64_t before) {
    return after > before ? static_cast<double>(after - before) / static_cast<double>(count) : 0.0;
  };
  bench::Json json;
  json.add("workload", "channels")
      .add("system", "switchboard")
      .add("channels", count)
      .add("shared", args.num("share", 1) != 0)
      .add("first", args.num("first", 0))
      .add("requesters", requesters)
      .add("n", n)
      .add("join_seconds", static_cast<double>(join_ns) / 1e9);
  bench::add_latency(json, state.samples);
  json.add("rps", bench::per_second(static_cast<double>(n), elapsed))
      .add("client_rss_before_kib", client_before)
      .add("client_rss_joined_kib", client_joined)
      .add("client_rss_loaded_kib", client_loaded)
      .add("client_kib_per_channel", per_channel(client_joined, client_before))
      .add("relay_rss_before_kib", relay_before)
      .add("relay_rss_joined_kib", relay_joined)
      .add("relay_rss_loaded_kib", relay_loaded)
      .add("relay_kib_per_channel", per_channel(relay_joined, relay_before))
      .add("relay_cpu_us_per_req", cpu_per_request(0))
      .add("requester_cpu_us_per_req", cpu_per_request(1));
  if (serve_pid > 0) json.add("responder_cpu_us_per_req", cpu_per_request(2));
  json.print();
  channels.reset();  // leaves every channel
  co_return 0;
}

}  // namespace sbb
