// switchboard-bench request/response workloads: rr-lat (sequential) and rr-conc (concurrent).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <vector>

#include "sb_bench.hpp"

namespace sbb {

namespace {

// One request of `body` to any responder, read to its end; returns the round trip in ns.
asio::awaitable<std::int64_t> one_request(Connection& connection,
                                          std::span<const std::uint8_t> body) {
  const auto start = bench::now_ns();
  auto request = connection.open_request(Target::any());
  auto wrote = co_await request->write(body, true);
  if (!wrote.ok()) throw std::runtime_error("request write failed: " + wrote.describe());
  const auto received = co_await drain(request);
  const auto outcome = co_await request->result();
  if (!outcome.ok()) throw std::runtime_error("request failed: " + outcome.describe());
  if (received == 0) throw std::runtime_error("empty response");
  co_return bench::now_ns() - start;
}

struct ConcState {
  std::uint64_t issued = 0;
  std::uint64_t total = 0;
  std::vector<double> samples;
  int running = 0;
  std::exception_ptr error;
};

asio::awaitable<void> requester_loop(std::shared_ptr<Connection> connection,
                                     std::span<const std::uint8_t> body, ConcState& state) {
  try {
    while (state.issued < state.total && !state.error) {
      ++state.issued;
      state.samples.push_back(static_cast<double>(co_await one_request(*connection, body)));
    }
  } catch (...) {
    state.error = std::current_exception();
  }
  --state.running;
}

// `total` requests spread over the requesters (each sequential); returns elapsed ns.
asio::awaitable<std::int64_t> conc_phase(std::vector<std::shared_ptr<Connection>>& connections,
                                         std::span<const std::uint8_t> body, ConcState& state,
                                         std::uint64_t total) {
  auto executor = co_await asio::this_coro::executor;
  state.issued = 0;
  state.total = total;
  state.samples.clear();
  state.samples.reserve(total);
  state.running = static_cast<int>(connections.size());
  const auto start = bench::now_ns();
  for (auto& connection : connections) {
    asio::co_spawn(executor, requester_loop(connection, body, state), asio::detached);
  }
  while (state.running > 0) co_await sleep_ms(1);
  const auto elapsed = bench::now_ns() - start;
  if (state.error) std::rethrow_exception(state.error);
  co_return elapsed;
}

}  // namespace

asio::awaitable<int> rr_lat(const bench::Args& args) {
  const auto n = args.num("n", 5000);
  const auto warmup = args.num("warmup", 500);
  std::vector<std::uint8_t> body(args.num("size", 128));
  bench::fill_pattern(body.data(), body.size(), 1);
  auto connection = co_await connect(args, channel_of(args), false);
  co_await wait_peers(connection, args.num("responders", 1));
  for (std::uint64_t i = 0; i < warmup; ++i) co_await one_request(*connection, body);
  std::vector<double> rtt;
  rtt.reserve(n);
  const auto start = bench::now_ns();
  for (std::uint64_t i = 0; i < n; ++i) {
    rtt.push_back(static_cast<double>(co_await one_request(*connection, body)));
  }
  const auto elapsed = bench::now_ns() - start;
  bench::Json json;
  json.add("workload", "rr-lat").add("system", "switchboard").add("n", n);
  bench::add_latency(json, rtt);
  json.add("rps", bench::per_second(static_cast<double>(n), elapsed)).print();
  connection->close();
  co_return 0;
}

asio::awaitable<int> rr_conc(const bench::Args& args) {
  const auto requesters = args.num("requesters", 16);
  const auto responders = args.num("responders", 1);
  const auto n = args.num("n", 200'000);
  std::vector<std::uint8_t> body(args.num("size", 128));
  bench::fill_pattern(body.data(), body.size(), 2);
  const auto channel = channel_of(args);
  std::vector<std::shared_ptr<Connection>> connections;
  for (std::uint64_t i = 0; i < requesters; ++i) {
    connections.push_back(co_await connect(args, channel, false));
  }
  // The responders joined first; every requester sees them and the other requesters.
  co_await wait_peers(connections.back(), responders + requesters - 1);
  ConcState state;
  co_await conc_phase(connections, body, state, args.num("warmup", n / 20));
  const auto elapsed = co_await conc_phase(connections, body, state, n);
  bench::Json json;
  json.add("workload", responders > 1 ? "rr-conc-any" : "rr-conc")
      .add("system", "switchboard")
      .add("n", n)
      .add("requesters", requesters)
      .add("responders", responders);
  bench::add_latency(json, state.samples);
  json.add("rps", bench::per_second(static_cast<double>(n), elapsed)).print();
  for (auto& connection : connections) connection->close();
  co_return 0;
}

}  // namespace sbb
