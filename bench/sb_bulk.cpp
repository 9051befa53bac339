// switchboard-bench bulk workloads: one large Send (stream), small broadcasts, 1->N fan-out.
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <functional>
#include <span>
#include <vector>

#include "sb_bench.hpp"

namespace sbb {

namespace {

struct Report {
  std::uint64_t msgs = 0;
  std::uint64_t bytes = 0;
  std::int64_t last = 0;
};

// Serves the receivers' report requests on the sender's connection.
void collect_reports(const std::shared_ptr<Connection>& connection, std::vector<Report>& reports,
                     asio::any_io_executor executor) {
  connection->on_request([executor, &reports](std::shared_ptr<Stream> request) {
    asio::co_spawn(
        executor,
        [request, &reports]() -> asio::awaitable<void> {
          std::vector<std::uint8_t> body;
          for (;;) {
            auto chunk = co_await request->read();
            if (chunk.size == 0) break;
            body.insert(body.end(), chunk.data, chunk.data + chunk.size);
          }
          if (body.size() >= kReportSize) {
            reports.push_back(Report{bench::get_u64(body.data()), bench::get_u64(body.data() + 8),
                                     static_cast<std::int64_t>(bench::get_u64(body.data() + 16))});
          }
          co_await request->finish();
        },
        asio::detached);
  });
}

asio::awaitable<void> wait_reports(const std::vector<Report>& reports, std::size_t count,
                                   long timeout_ms) {
  const auto deadline = bench::now_ns() + timeout_ms * 1'000'000LL;
  while (reports.size() < count && bench::now_ns() < deadline) co_await sleep_ms(2);
}

// Writes `total` bytes in `chunk`-sized writes.
asio::awaitable<void> write_all(Stream& stream, std::uint64_t total, std::size_t chunk) {
  std::vector<std::uint8_t> buffer(chunk);
  bench::fill_pattern(buffer.data(), buffer.size(), 3);
  for (std::uint64_t sent = 0; sent < total;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, total - sent));
    auto outcome = co_await stream.write({buffer.data(), n});
    if (!outcome.ok()) throw std::runtime_error("write failed: " + outcome.describe());
    sent += n;
  }
  auto outcome = co_await stream.finish();
  if (!outcome.ok()) throw std::runtime_error("finish failed: " + outcome.describe());
}

}  // namespace

asio::awaitable<int> stream(const bench::Args& args) {
  const auto total = args.num("bytes", 1ULL << 30);
  const auto chunk = args.num("chunk", 64 * 1024);
  auto connection = co_await connect(args, channel_of(args), false);
  co_await wait_peers(connection, 1);
  auto request = connection->open_request(Target::any());
  const auto start = bench::now_ns();
  co_await write_all(*request, total, chunk);
  const auto sent_ns = bench::now_ns() - start;
  std::vector<std::uint8_t> reply;
  for (;;) {
    auto piece = co_await request->read();
    if (piece.size == 0) break;
    reply.insert(reply.end(), piece.data, piece.data + piece.size);
  }
  const auto outcome = co_await request->result();
  if (!outcome.ok() || reply.size() < 16) {
    throw std::runtime_error("stream response failed: " + outcome.describe());
  }
  const auto received = bench::get_u64(reply.data());
  const auto last = static_cast<std::int64_t>(bench::get_u64(reply.data() + 8));
  bench::Json()
      .add("workload", "stream")
      .add("system", "switchboard")
      .add("bytes", total)
      .add("received", received)
      .add("mb_s", bench::per_second(static_cast<double>(received), last - start) / 1e6)
      .add("sender_mb_s", bench::per_second(static_cast<double>(total), sent_ns) / 1e6)
      .add("seconds", static_cast<double>(last - start) / 1e9)
      .print();
  connection->close();
  co_return received == total ? 0 : 1;
}

asio::awaitable<int> small(const bench::Args& args) {
  const auto n = args.num("n", 1'000'000);
  const auto inflight = args.num("inflight", 128);
  std::vector<std::uint8_t> body(args.num("size", 16));
  bench::fill_pattern(body.data(), body.size(), 4);
  auto executor = co_await asio::this_coro::executor;
  auto connection = co_await connect(args, channel_of(args), true);
  std::vector<Report> reports;
  collect_reports(connection, reports, executor);
  co_await wait_peers(connection, 1);

  // `inflight` broadcasts in flight (each one frame: OPEN with body and FIN); each summary that
  // comes back sends the next one from its handler, with no coroutine per message.
  struct Window {
    std::shared_ptr<Connection> connection;
    std::span<const std::uint8_t> body;
    std::uint64_t n = 0;
    std::uint64_t next = 0;
    std::uint64_t summaries = 0;
    std::uint64_t undelivered = 0;
    std::string error;
    asio::any_io_executor executor;
    std::function<void()> send_next;
  } window{connection, body, n, 0, 0, 0, {}, executor, {}};
  window.send_next = [w = &window] {
    if (w->next >= w->n || !w->error.empty()) return;
    ++w->next;
    auto message = w->connection->open_broadcast();
    message->on_end([w](const Outcome& summary) {
      ++w->summaries;
      if (!summary.ok() || summary.delivered != 1) ++w->undelivered;
      if (!summary.ok() && w->error.empty()) w->error = "broadcast failed: " + summary.describe();
      w->send_next();
    });
    if (!message->try_write(w->body, true)) {
      asio::co_spawn(
          w->executor,
          [message, w]() -> asio::awaitable<void> {
            const auto wrote = co_await message->write(w->body, true);
            if (!wrote.ok() && w->error.empty()) w->error = "write failed: " + wrote.describe();
          },
          asio::detached);
    }
  };
  const auto start = bench::now_ns();
  for (std::uint64_t i = 0; i < inflight; ++i) window.send_next();
  const auto limit = start + static_cast<std::int64_t>(args.num("timeout", 200)) * 1'000'000'000;
  while (window.summaries < window.next && bench::now_ns() < limit) co_await sleep_ms(1);
  if (window.summaries < n && window.error.empty()) window.error = "summaries missing";
  if (!window.error.empty()) {
    connection->close();  // ends what is in flight while `window` still exists
    throw std::runtime_error(window.error);
  }
  const auto undelivered = window.undelivered;
  const auto sent_ns = bench::now_ns() - start;
  co_await wait_reports(reports, 1, 30'000);
  const Report report = reports.empty() ? Report{} : reports.front();
  bench::Json()
      .add("workload", "small")
      .add("system", "switchboard")
      .add("n", n)
      .add("received", report.msgs)
      .add("lost", n - std::min(n, report.msgs))
      .add("undelivered_summaries", undelivered)
      .add("msgs_s", bench::per_second(static_cast<double>(report.msgs), report.last - start))
      .add("sender_msgs_s", bench::per_second(static_cast<double>(n), sent_ns))
      .print();
  connection->close();
  co_return report.msgs == n ? 0 : 1;
}

asio::awaitable<int> fanout(const bench::Args& args) {
  const auto receivers = args.num("receivers", 8);
  const auto total = args.num("bytes", 256ULL << 20);
  const auto chunk = args.num("chunk", 64 * 1024);
  auto executor = co_await asio::this_coro::executor;
  auto connection = co_await connect(args, channel_of(args), true);
  std::vector<Report> reports;
  collect_reports(connection, reports, executor);
  co_await wait_peers(connection, receivers);
  auto message = connection->open_broadcast();
  const auto start = bench::now_ns();
  co_await write_all(*message, total, chunk);
  const auto summary = co_await message->result();
  const auto summary_ns = bench::now_ns() - start;
  co_await wait_reports(reports, receivers, 30'000);
  std::uint64_t delivered_bytes = 0;
  std::int64_t last = start;
  for (const auto& report : reports) {
    delivered_bytes += report.bytes;
    last = std::max(last, report.last);
  }
  bench::Json()
      .add("workload", "fanout")
      .add("system", "switchboard")
      .add("receivers", receivers)
      .add("bytes", total)
      .add("delivered", static_cast<std::uint64_t>(summary.delivered))
      .add("dropped", static_cast<std::uint64_t>(summary.dropped))
      .add("reports", static_cast<std::uint64_t>(reports.size()))
      .add("aggregate_mb_s",
           bench::per_second(static_cast<double>(delivered_bytes), last - start) / 1e6)
      .add("summary_seconds", static_cast<double>(summary_ns) / 1e9)
      .print();
  connection->close();
  co_return delivered_bytes == total* receivers ? 0 : 1;
}

}  // namespace sbb
