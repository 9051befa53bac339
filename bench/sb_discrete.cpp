// switchboard-bench discrete workload: many separate messages, each its own broadcast (or request)
// through the public client API with default options, a bounded number in flight.
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "sb_bench.hpp"
#include "switchboard/blocking.hpp"

namespace sbb {

namespace {

// Voluntary plus involuntary context switches of `pid` (0: this one), summed over its threads
// (/proc/PID/status counts the main thread only).
std::uint64_t ctx_switches(long pid) {
  if (pid <= 0) {  // getrusage keeps the counts of threads that have exited
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<std::uint64_t>(usage.ru_nvcsw + usage.ru_nivcsw);
  }
  const std::string base = "/proc/" + std::to_string(pid);
  std::uint64_t total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(base + "/task", ec)) {
    std::ifstream status(task.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
          line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        total += std::stoull(line.substr(line.find(':') + 1));
      }
    }
  }
  return total;
}

struct Report {
  std::uint64_t msgs = 0;
  std::uint64_t bytes = 0;
  std::int64_t last = 0;
  bool present = false;
};

struct Totals {
  std::uint64_t next = 0;
  std::uint64_t done = 0;
  std::uint64_t failed = 0;
  std::uint64_t request_bytes = 0;  // as counted by the responder, from its replies
  std::string error;
};

// One of the workload's `inflight` senders: message after message, each one opened, written
// whole with last = true, and awaited to its end, as an application would.
asio::awaitable<void> sender(std::shared_ptr<Connection> connection, bool requests,
                             std::span<const std::uint8_t> body, std::uint64_t n, Totals& totals) {
  while (totals.next < n && totals.error.empty()) {
    ++totals.next;
    auto message =
        requests ? connection->open_request(Target::any()) : connection->open_broadcast();
    const auto wrote = co_await message->write(body, true);
    if (!wrote.ok()) {
      if (totals.error.empty()) totals.error = "write failed: " + wrote.describe();
      co_return;
    }
    if (requests) {
      std::vector<std::uint8_t> reply;
      for (;;) {
        auto chunk = co_await message->read();
        if (chunk.size == 0) break;
        reply.insert(reply.end(), chunk.data, chunk.data + chunk.size);
      }
      if (reply.size() >= 8) totals.request_bytes += bench::get_u64(reply.data());
    }
    const auto outcome = co_await message->result();
    if (!outcome.ok() || (!requests && outcome.delivered != 1)) ++totals.failed;
    if (!outcome.ok() && totals.error.empty())
      totals.error = "message failed: " + outcome.describe();
    ++totals.done;
  }
}

// The message API: one coroutine publishing message after message (try_publish, publish when
// the window is used up), then waiting for the relay's word on all of them.
asio::awaitable<void> publisher(std::shared_ptr<Connection> connection,
                                std::span<const std::uint8_t> body, std::uint64_t n,
                                Totals& totals) {
  for (std::uint64_t i = 0; i < n; ++i) {
    if (connection->try_publish(body)) continue;
    const auto outcome = co_await connection->publish(body);
    if (!outcome.ok()) {
      totals.error = "publish failed: " + outcome.describe();
      co_return;
    }
  }
  const auto tally = co_await connection->flush_messages();
  totals.failed = tally.sent - tally.delivered;
  if (tally.delivered != n && totals.error.empty()) {
    totals.error = "messages not delivered: " + std::to_string(tally.dropped) + " dropped, " +
                   std::to_string(tally.unknown) + " unknown";
  }
  totals.done = n;
}

// Prints the run's JSON line; returns the exit code (0 when every message arrived whole).
int finish(const bench::Args& args, bool requests, const char* api, std::uint64_t n,
           std::uint64_t size, std::uint64_t inflight, std::int64_t start, std::int64_t sent_ns,
           const Report& report, std::uint64_t failed, std::uint64_t cpu, std::uint64_t ctx,
           std::uint64_t relay_cpu, std::uint64_t relay_ctx) {
  const bool with_relay = args.num("relay-pid", 0) > 0;
  // Broadcasts: the receiver's counts; requests: completed requests and the bytes the responder
  // said it read.
  const std::uint64_t received = report.msgs;
  const std::uint64_t received_bytes = report.bytes;
  const std::int64_t end = std::max(start + sent_ns, report.last);
  const auto elapsed = end - start;
  const auto per_msg = [n](std::uint64_t total) {
    return static_cast<double>(total) / static_cast<double>(n);
  };
  bench::Json json;
  json.add("workload", "discrete")
      .add("system", "switchboard")
      .add("api", api)
      .add("mode", requests ? "request" : "broadcast")
      .add("n", n)
      .add("size", size)
      .add("inflight", inflight)
      .add("received", received)
      .add("received_bytes", received_bytes)
      .add("failed", failed)
      .add("msgs_s", bench::per_second(static_cast<double>(received), elapsed))
      .add("mb_s", bench::per_second(static_cast<double>(received_bytes), elapsed) / 1e6)
      .add("seconds", static_cast<double>(elapsed) / 1e9)
      .add("client_cpu_s", static_cast<double>(cpu) / 1e6)
      .add("client_cpu_us_per_msg", per_msg(cpu))
      .add("client_ctx_per_msg", per_msg(ctx));
  if (with_relay) {
    json.add("relay_cpu_s", static_cast<double>(relay_cpu) / 1e6)
        .add("relay_cpu_us_per_msg", per_msg(relay_cpu))
        .add("relay_ctx_per_msg", per_msg(relay_ctx));
  }
  json.print();
  return received == n && received_bytes == n * size && failed == 0 ? 0 : 1;
}

// The blocking API: `inflight` threads, each sending message after message (broadcast(),
// write(body, last), result()) on one BlockingClient, whose I/O thread does the network work.
struct BlockingRun {
  std::uint64_t done = 0;
  std::uint64_t failed = 0;
  std::string error;
  Report report;
};

BlockingRun run_blocking(const bench::Args& args, std::span<const std::uint8_t> body,
                         std::uint64_t n, std::uint64_t inflight, bool requests,
                         std::int64_t& start) {
  using switchboard::client::BlockingClient;
  using switchboard::client::BlockingStream;
  ConnectOptions options;
  options.host = args.str("host", "127.0.0.1");
  options.port = static_cast<std::uint16_t>(args.num("port", 7400));
  options.channel = channel_of(args);
  options.accept_requests = !requests;
  BlockingClient client(options);
  BlockingRun run;
  std::mutex report_mutex;
  std::atomic<bool> reported{false};
  if (!requests) {
    client.serve([&](BlockingStream& request) {
      std::vector<std::uint8_t> got;
      for (;;) {
        auto chunk = request.read_chunk();
        if (chunk.size == 0) break;
        got.insert(got.end(), chunk.data, chunk.data + chunk.size);
      }
      if (got.size() >= kReportSize) {
        const std::lock_guard lock(report_mutex);
        run.report = Report{bench::get_u64(got.data()), bench::get_u64(got.data() + 8),
                            static_cast<std::int64_t>(bench::get_u64(got.data() + 16)), true};
        reported = true;
      }
    });
  }
  const auto peers_deadline = bench::now_ns() + 10'000'000'000LL;
  while (client.peers().empty()) {
    if (bench::now_ns() > peers_deadline) throw std::runtime_error("timed out waiting for a peer");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::atomic<std::uint64_t> next{0};
  std::atomic<std::uint64_t> done{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> request_bytes{0};
  std::mutex error_mutex;
  start = bench::now_ns();
  std::vector<std::thread> threads;
  for (std::uint64_t i = 0; i < inflight; ++i) {
    threads.emplace_back([&] {
      std::vector<std::uint8_t> response;
      while (next.fetch_add(1) < n) {
        Outcome outcome;
        if (requests) {
          outcome = client.send(Target::any(), body, response);
          if (outcome.ok() && response.size() >= 8)
            request_bytes += bench::get_u64(response.data());
        } else {
          auto message = client.broadcast();
          outcome = message.write(body, true);
          if (outcome.ok()) outcome = message.result();
          if (outcome.ok() && outcome.delivered != 1) ++failed;
        }
        if (!outcome.ok()) {
          const std::lock_guard lock(error_mutex);
          if (run.error.empty()) run.error = "message failed: " + outcome.describe();
          ++failed;
          return;
        }
        ++done;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  run.done = done;
  run.failed = failed;
  if (requests) run.report = Report{run.done, request_bytes, 0, true};
  if (!requests && run.error.empty()) {
    const auto deadline = bench::now_ns() + 30'000'000'000LL;
    while (!reported && bench::now_ns() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  const std::lock_guard lock(report_mutex);
  return run;
}

}  // namespace

asio::awaitable<int> discrete(const bench::Args& args) {
  const auto n = args.num("n", 16'384);
  const auto size = args.num("size", 64 * 1024);
  const auto inflight = std::max<std::uint64_t>(1, args.num("inflight", 64));
  const bool requests = args.str("mode", "broadcast") == "request";
  const auto relay_pid = static_cast<long>(args.num("relay-pid", 0));
  std::vector<std::uint8_t> body(size);
  bench::fill_pattern(body.data(), body.size(), 5);
  if (args.str("api", "async") == "blocking") {
    const auto relay_cpu0 = bench::proc_cpu_us(relay_pid);
    const auto relay_ctx0 = relay_pid > 0 ? ctx_switches(relay_pid) : 0;
    const auto cpu0 = bench::proc_cpu_us(0);
    const auto ctx0 = ctx_switches(0);
    std::int64_t start = 0;
    auto run = run_blocking(args, body, n, inflight, requests, start);
    const auto sent_ns = bench::now_ns() - start;
    if (!run.error.empty()) throw std::runtime_error(run.error);
    co_return finish(args, requests, "blocking", n, size, inflight, start, sent_ns, run.report,
                     run.failed, bench::proc_cpu_us(0) - cpu0, ctx_switches(0) - ctx0,
                     relay_pid > 0 ? bench::proc_cpu_us(relay_pid) - relay_cpu0 : 0,
                     relay_pid > 0 ? ctx_switches(relay_pid) - relay_ctx0 : 0);
  }
  auto executor = co_await asio::this_coro::executor;
  // Broadcast receivers report their counts back as a request on the sender's connection.
  auto connection = co_await connect(args, channel_of(args), !requests);
  Report report;
  if (!requests) {
    connection->on_request([executor, &report](std::shared_ptr<Stream> request) {
      asio::co_spawn(
          executor,
          [request, &report]() -> asio::awaitable<void> {
            std::vector<std::uint8_t> got;
            for (;;) {
              auto chunk = co_await request->read();
              if (chunk.size == 0) break;
              got.insert(got.end(), chunk.data, chunk.data + chunk.size);
            }
            if (got.size() >= kReportSize) {
              report = Report{bench::get_u64(got.data()), bench::get_u64(got.data() + 8),
                              static_cast<std::int64_t>(bench::get_u64(got.data() + 16)), true};
            }
            co_await request->finish();
          },
          asio::detached);
    });
  }
  co_await wait_peers(connection, 1);

  Totals totals;
  const auto relay_cpu0 = bench::proc_cpu_us(relay_pid);
  const auto relay_ctx0 = relay_pid > 0 ? ctx_switches(relay_pid) : 0;
  const auto cpu0 = bench::proc_cpu_us(0);
  const auto ctx0 = ctx_switches(0);
  const auto start = bench::now_ns();
  const bool messages = args.str("api", "async") == "message";
  if (messages && requests) throw std::invalid_argument("--api message sends broadcasts only");
  if (messages) {
    asio::co_spawn(executor, publisher(connection, body, n, totals), asio::detached);
  } else {
    for (std::uint64_t i = 0; i < inflight; ++i) {
      asio::co_spawn(executor, sender(connection, requests, body, n, totals), asio::detached);
    }
  }
  const auto limit = start + static_cast<std::int64_t>(args.num("timeout", 120)) * 1'000'000'000;
  while (totals.done < n && totals.error.empty() && bench::now_ns() < limit) co_await sleep_ms(1);
  const auto sent_ns = bench::now_ns() - start;
  const auto cpu = bench::proc_cpu_us(0) - cpu0;
  const auto ctx = ctx_switches(0) - ctx0;
  const auto relay_cpu = relay_pid > 0 ? bench::proc_cpu_us(relay_pid) - relay_cpu0 : 0;
  const auto relay_ctx = relay_pid > 0 ? ctx_switches(relay_pid) - relay_ctx0 : 0;
  if (totals.done < n && totals.error.empty()) totals.error = "messages still in flight";
  if (!totals.error.empty()) {
    connection->close();  // ends what is in flight while `totals` still exists
    throw std::runtime_error(totals.error);
  }
  if (requests) {
    report = Report{totals.done, totals.request_bytes, 0, true};
  } else {
    const auto deadline = bench::now_ns() + 30'000'000'000LL;
    while (!report.present && bench::now_ns() < deadline) co_await sleep_ms(2);
  }
  const int code = finish(args, requests, messages ? "message" : "async", n, size, inflight, start,
                          sent_ns, report, totals.failed, cpu, ctx, relay_cpu, relay_ctx);
  connection->close();
  co_return code;
}

}  // namespace sbb
