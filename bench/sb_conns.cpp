// switchboard-bench conns: many peers over many channels join, then idle; relay RSS per peer.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <vector>

#include "sb_bench.hpp"

namespace sbb {

asio::awaitable<int> conns(const bench::Args& args) {
  const auto peers = args.num("peers", 10'000);
  const auto channels = std::max<std::uint64_t>(1, args.num("channels", 100));
  const auto concurrency = std::max<std::uint64_t>(1, args.num("concurrency", 128));
  const long relay_pid = static_cast<long>(args.num("relay-pid", 0));
  if (relay_pid <= 0) throw std::invalid_argument("--relay-pid is required");
  const auto limit = bench::raise_nofile_limit();
  if (limit < peers + 64) {
    throw std::runtime_error("open-files limit " + std::to_string(limit) + " is too low for " +
                             std::to_string(peers) + " peers");
  }
  std::vector<Uuid> ids;
  for (std::uint64_t i = 0; i < channels; ++i) ids.push_back(Uuid::random());
  auto executor = co_await asio::this_coro::executor;
  co_await sleep_ms(200);  // let the relay settle after start-up
  const auto rss_before = bench::proc_status_kib(relay_pid, "VmRSS");

  std::vector<std::shared_ptr<Connection>> connections(peers);
  std::uint64_t next = 0;
  int running = static_cast<int>(concurrency);
  std::exception_ptr error;
  const auto start = bench::now_ns();
  for (std::uint64_t w = 0; w < concurrency; ++w) {
    asio::co_spawn(
        executor,
        [&]() -> asio::awaitable<void> {
          try {
            while (next < peers && !error) {
              const auto i = next++;
              connections[i] = co_await connect(args, ids[i % channels], false);
            }
          } catch (...) {
            error = std::current_exception();
          }
          --running;
        },
        asio::detached);
  }
  while (running > 0) co_await sleep_ms(1);
  const auto join_ns = bench::now_ns() - start;
  if (error) std::rethrow_exception(error);

  // Idle: presence has settled when every peer sees its whole channel.
  const auto per_channel = peers / channels;
  const auto settle_deadline = bench::now_ns() + 20'000'000'000LL;
  for (auto& connection : connections) {
    while (connection->peers().size() + 1 < per_channel && bench::now_ns() < settle_deadline) {
      co_await sleep_ms(5);
    }
  }
  co_await sleep_ms(static_cast<long>(args.num("idle-ms", 1000)));
  const auto rss_after = bench::proc_status_kib(relay_pid, "VmRSS");
  const auto hwm = bench::proc_status_kib(relay_pid, "VmHWM");
  const auto grown = rss_after > rss_before ? rss_after - rss_before : 0;
  bench::Json()
      .add("workload", "conns")
      .add("system", "switchboard")
      .add("peers", peers)
      .add("channels", channels)
      .add("join_rate", bench::per_second(static_cast<double>(peers), join_ns))
      .add("join_seconds", static_cast<double>(join_ns) / 1e9)
      .add("relay_rss_before_kib", rss_before)
      .add("relay_rss_after_kib", rss_after)
      .add("relay_hwm_kib", hwm)
      .add("kib_per_peer", static_cast<double>(grown) / static_cast<double>(peers))
      .print();
  for (auto& connection : connections) connection->close();
  co_await sleep_ms(100);
  co_return 0;
}

}  // namespace sbb
