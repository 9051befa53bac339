// switchboard-bench roles: the responder (request sink/echo) and the broadcast receiver(s).
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "sb_bench.hpp"

namespace sbb {

namespace {

constexpr std::size_t kMaxReply = 4096;

// Reads a request whole, then answers `reply_size` bytes that start with (bytes read, time of the
// last byte), so a stream sender learns the receiver's view.
asio::awaitable<void> serve(std::shared_ptr<Stream> request, std::size_t reply_size) {
  std::uint64_t total = 0;
  std::int64_t last = 0;
  for (;;) {
    auto chunk = co_await request->read();
    if (chunk.size == 0) break;
    total += chunk.size;
    last = bench::now_ns();
  }
  std::array<std::uint8_t, kMaxReply> reply{};
  bench::put_u64(reply.data(), total);
  bench::put_u64(reply.data() + 8, static_cast<std::uint64_t>(last));
  co_await request->write({reply.data(), reply_size}, true);
}

struct Sink {
  std::shared_ptr<Connection> connection;
  Uuid sender;
  std::uint64_t msgs = 0;
  std::uint64_t bytes = 0;
  std::int64_t last = 0;
  bool reported = false;
};

// Sends the receiver's counts to the broadcast's sender as a request (the sender serves them).
asio::awaitable<void> report(Sink& sink) {
  if (sink.reported) co_return;
  sink.reported = true;
  std::array<std::uint8_t, kReportSize> body{};
  bench::put_u64(body.data(), sink.msgs);
  bench::put_u64(body.data() + 8, sink.bytes);
  bench::put_u64(body.data() + 16, static_cast<std::uint64_t>(sink.last));
  auto request = sink.connection->open_request(Target::to(sink.sender));
  co_await request->write(body, true);
  co_await drain(request);
  const auto outcome = co_await request->result();
  if (!outcome.ok())
    std::fprintf(stderr, "receiver: report failed: %s\n", outcome.describe().c_str());
}

void count_message(Sink& sink, const Uuid& sender, std::uint64_t bytes) {
  sink.bytes += bytes;
  sink.last = bench::now_ns();
  sink.sender = sender;
  ++sink.msgs;
}

asio::awaitable<void> consume(std::shared_ptr<Stream> message, Sink& sink, std::uint64_t bytes,
                              std::uint64_t expect_msgs) {
  bytes += co_await drain(message);
  count_message(sink, message->peer(), bytes);
  if (sink.msgs == expect_msgs) co_await report(sink);
}

// Counts what has already arrived; a message that has not ended yet is read by a coroutine.
void receive(const asio::any_io_executor& executor, std::shared_ptr<Stream> message, Sink& sink,
             std::uint64_t expect_msgs) {
  std::uint64_t bytes = 0;
  for (;;) {
    auto chunk = message->try_read();
    if (!chunk) {
      asio::co_spawn(executor, consume(std::move(message), sink, bytes, expect_msgs),
                     asio::detached);
      return;
    }
    if (chunk->size == 0) break;
    bytes += chunk->size;
  }
  count_message(sink, message->peer(), bytes);
  if (sink.msgs == expect_msgs) asio::co_spawn(executor, report(sink), asio::detached);
}

}  // namespace

asio::awaitable<int> responder(const bench::Args& args) {
  const auto reply_size = std::min<std::size_t>(args.num("reply-size", 128), kMaxReply);
  if (reply_size < 16) throw std::invalid_argument("--reply-size must be at least 16");
  auto connection = co_await connect(args, channel_of(args), true);
  auto executor = co_await asio::this_coro::executor;
  connection->on_request([executor, reply_size](std::shared_ptr<Stream> request) {
    asio::co_spawn(executor, serve(std::move(request), reply_size), asio::detached);
  });
  std::printf("ready\n");
  std::fflush(stdout);
  const auto outcome = co_await connection->wait_closed();
  std::fprintf(stderr, "responder: connection ended: %s\n", outcome.describe().c_str());
  co_return 0;
}

asio::awaitable<int> receiver(const bench::Args& args) {
  const auto channel = channel_of(args);
  const auto count = args.num("connections", 1);
  const auto expect_msgs = args.num("expect-msgs", 1);
  const auto idle_report_ns =
      static_cast<std::int64_t>(args.num("idle-report-ms", 3000)) * 1'000'000;
  auto executor = co_await asio::this_coro::executor;
  std::vector<std::unique_ptr<Sink>> sinks;
  for (std::uint64_t i = 0; i < count; ++i) {
    auto sink = std::make_unique<Sink>();
    sink->connection = co_await connect(args, channel, false);
    Sink* raw = sink.get();
    sink->connection->on_broadcast([executor, raw, expect_msgs](std::shared_ptr<Stream> message) {
      receive(executor, std::move(message), *raw, expect_msgs);
    });
    // Whole messages (discrete --api message) count as broadcasts do.
    sink->connection->on_message([executor, raw, expect_msgs](const switchboard::client::Message& message) {
      count_message(*raw, message.sender, message.body.size);
      if (raw->msgs == expect_msgs) asio::co_spawn(executor, report(*raw), asio::detached);
    });
    sinks.push_back(std::move(sink));
  }
  std::printf("ready\n");
  std::fflush(stdout);
  // Until every receiver has reported; one that stopped receiving reports what it has.
  for (;;) {
    bool all = true;
    for (auto& sink : sinks) {
      if (!sink->reported && sink->msgs > 0 && bench::now_ns() - sink->last > idle_report_ns) {
        co_await report(*sink);
      }
      all = all && sink->reported;
    }
    if (all) break;
    co_await sleep_ms(20);
  }
  co_await sleep_ms(50);  // let the last report's frames leave
  co_return 0;
}

}  // namespace sbb
