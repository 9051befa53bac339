// hotpath_alloc: Google Benchmark of the relay's forwarding hot path with a counting allocator;
// reports heap allocations per forwarded DATA frame made by the relay's threads.
#include <benchmark/benchmark.h>
#include <execinfo.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <thread>

#include "server/server.hpp"
#include "switchboard/client.hpp"

// The replacement operators pair malloc/free themselves; GCC cannot see that.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

// ---- Counting allocator: every allocation counts in g_allocs, and those of threads flagged as
// "client" (the benchmark thread and the client I/O thread) also in g_client_allocs; the relay's
// allocations are the difference. ----

namespace {
std::atomic<std::uint64_t> g_allocs{0};
std::atomic<std::uint64_t> g_client_allocs{0};
thread_local bool t_client = false;

// HOTPATH_TRACE=1: the call stacks of the first relay allocations in each measured window are
// kept (fixed storage, no allocation) and the most frequent are printed to stderr.
constexpr int kDepth = 16;
constexpr int kMaxTraces = 4096;
struct Trace {
  void* frames[kDepth];
  int depth;
};
Trace g_traces[kMaxTraces];
std::atomic<int> g_trace_count{0};
std::atomic<bool> g_tracing{false};
thread_local bool t_in_trace = false;

void record_trace() {
  const int i = g_trace_count.fetch_add(1, std::memory_order_relaxed);
  if (i >= kMaxTraces) return;
  t_in_trace = true;
  g_traces[i].depth = backtrace(g_traces[i].frames, kDepth);
  t_in_trace = false;
}

void* counted(std::size_t size, std::size_t align) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (t_client) g_client_allocs.fetch_add(1, std::memory_order_relaxed);
  if (!t_client && !t_in_trace && g_tracing.load(std::memory_order_relaxed)) record_trace();
  if (size == 0) size = 1;
  void* p = align > alignof(std::max_align_t)
                ? std::aligned_alloc(align, (size + align - 1) / align * align)
                : std::malloc(size);
  return p;
}
}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = counted(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

namespace asio = boost::asio;
using namespace switchboard;
using client::Connection;
using client::Stream;

// An in-process relay with one I/O thread, plus a client I/O thread flagged as "client".
class Fixture {
public:
  Fixture() {
    t_client = true;  // the benchmark thread
    spdlog::set_level(spdlog::level::off);
    core::ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.threads = 1;
    config.admin_listen = "";  // no admin endpoint: never collides with a running relay
    config.limits.drain_timeout = std::chrono::milliseconds(200);
    if constexpr (requires { config.grpc_listen; }) config.grpc_listen = "";  // core door only
    server_ = std::make_unique<core::Server>(config);
    server_->start();
    thread_ = std::thread([this] {
      t_client = true;
      io_.run();
    });
  }
  ~Fixture() {
    run([this]() -> asio::awaitable<void> {
      for (auto& c : connections_) c->close();
      co_return;
    });
    server_->shutdown();
    server_->wait();
    guard_.reset();
    thread_.join();
  }

  template <typename F>
  void run(F body) {
    asio::co_spawn(io_, body(), asio::use_future).get();
  }

  std::shared_ptr<Connection> connect(const Uuid& channel, bool accept) {
    std::shared_ptr<Connection> result;
    run([&]() -> asio::awaitable<void> {
      client::ConnectOptions options;
      options.port = server_->core_endpoint().port();
      options.channel = channel;
      options.accept_requests = accept;
      client::Outcome outcome;
      result = co_await Connection::connect(io_.get_executor(), options, outcome);
      if (!result) throw std::runtime_error(outcome.describe());
    });
    connections_.push_back(result);
    return result;
  }

  // Counts chunks (one per DATA frame the relay wrote) and bytes read by receivers.
  void count(std::shared_ptr<Stream> stream) {
    asio::co_spawn(
        io_,
        [this, stream]() -> asio::awaitable<void> {
          for (;;) {
            auto chunk = co_await stream->read();
            if (chunk.size == 0) co_return;
            std::lock_guard lock(mutex_);
            bytes_ += chunk.size;
            ++frames_;
            if (bytes_ >= target_) done_.notify_all();
          }
        },
        asio::detached);
  }

  // Writes `bytes` more in `frame`-sized writes, and waits until receivers have read `expect`.
  void pump(const std::shared_ptr<Stream>& stream, std::uint64_t bytes, std::size_t frame,
            std::uint64_t expect) {
    {
      std::lock_guard lock(mutex_);
      target_ += expect;
    }
    asio::co_spawn(
        io_,
        [stream, bytes, frame, this]() -> asio::awaitable<void> {
          for (std::uint64_t sent = 0; sent < bytes; sent += frame) {
            co_await stream->write({payload_.data(), frame});
          }
        },
        asio::detached);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return bytes_ >= target_; });
  }

  // Reads a request whole and answers 128 bytes.
  void answer(std::shared_ptr<Stream> request) {
    asio::co_spawn(
        io_,
        [request]() -> asio::awaitable<void> {
          while ((co_await request->read()).size > 0) {
          }
          std::array<std::uint8_t, 128> reply{};
          co_await request->write(reply, true);
        },
        asio::detached);
  }

  std::uint64_t frames() {
    std::lock_guard lock(mutex_);
    return frames_;
  }

private:
  std::unique_ptr<core::Server> server_;
  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard_{io_.get_executor()};
  std::thread thread_;
  std::vector<std::shared_ptr<Connection>> connections_;
  std::vector<std::uint8_t> payload_ = std::vector<std::uint8_t>(256 * 1024, 0x5a);
  std::mutex mutex_;
  std::condition_variable done_;
  std::uint64_t bytes_ = 0;
  std::uint64_t frames_ = 0;
  std::uint64_t target_ = 0;
};

// Relay allocations so far: all of them less those of the client threads.
std::uint64_t relay_allocations() {
  const auto client = g_client_allocs.load();  // first: a racing client allocation only adds
  return g_allocs.load() - client;
}
constexpr int kWarmBatch = 16;
constexpr int kMaxWarmBatches = 32;

void start_tracing() {
  static const bool enabled = std::getenv("HOTPATH_TRACE") != nullptr;
  if (!enabled) return;
  void* warm[4];
  backtrace(warm, 4);  // loads the unwinder now, not inside the allocator
  g_trace_count = 0;
  g_tracing = true;
}

// Prints the most frequent relay allocation stacks of the window that just ended.
void stop_tracing(const char* name) {
  if (!g_tracing.exchange(false)) return;
  const int count = std::min(g_trace_count.load(), kMaxTraces);
  std::map<std::vector<void*>, int> stacks;
  for (int i = 0; i < count; ++i) {
    const auto& t = g_traces[i];
    ++stacks[std::vector<void*>(t.frames, t.frames + t.depth)];
  }
  std::vector<std::pair<int, std::vector<void*>>> sorted;
  for (auto& [frames, n] : stacks) sorted.emplace_back(n, frames);
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::fprintf(stderr, "== %s: %d relay allocation stacks sampled\n", name, count);
  for (std::size_t i = 0; i < std::min<std::size_t>(sorted.size(), 8); ++i) {
    std::fprintf(stderr, "-- %d allocations:\n", sorted[i].first);
    backtrace_symbols_fd(sorted[i].second.data(), static_cast<int>(sorted[i].second.size()), 2);
  }
}

// One request stream (sender -> relay -> responder), or one broadcast to `receivers` peers.
void forward(benchmark::State& state, int receivers) {
  const auto frame = static_cast<std::size_t>(state.range(0));
  const std::uint64_t per_iteration = 64 * frame;
  Fixture fixture;
  const auto channel = Uuid::random();
  std::vector<std::shared_ptr<Connection>> sinks;
  for (int i = 0; i < std::max(receivers, 1); ++i) {
    auto sink = fixture.connect(channel, receivers == 0);
    sink->on_request([&fixture](std::shared_ptr<Stream> s) { fixture.count(std::move(s)); });
    sink->on_broadcast([&fixture](std::shared_ptr<Stream> s) { fixture.count(std::move(s)); });
    sinks.push_back(sink);
  }
  auto sender = fixture.connect(channel, false);
  auto stream =
      receivers == 0 ? sender->open_request(client::Target::any()) : sender->open_broadcast();
  const auto copies = static_cast<std::uint64_t>(std::max(receivers, 1));
  // Warm-up: queues and buffers grow to the deepest they get under this flow (their growth is
  // bounded by the stream window), and the read-block pool fills. It ends at the first batch of
  // iterations in which the relay allocated nothing, or after a bounded number of batches; what
  // the measured iterations then allocate is the steady state's cost.
  int warm_batches = 0;
  for (; warm_batches < kMaxWarmBatches; ++warm_batches) {
    const auto before = relay_allocations();
    for (int i = 0; i < kWarmBatch; ++i) {
      fixture.pump(stream, per_iteration, frame, per_iteration * copies);
    }
    if (relay_allocations() == before) break;
  }
  state.counters["warmup_iterations"] = (warm_batches + 1) * kWarmBatch;

  const auto allocs0 = g_allocs.load();
  const auto client0 = g_client_allocs.load();
  const auto frames0 = fixture.frames();
  start_tracing();
  for (auto _ : state) fixture.pump(stream, per_iteration, frame, per_iteration * copies);
  stop_tracing(receivers == 0 ? "request stream" : "broadcast");
  const auto relay_allocs = (g_allocs.load() - allocs0) - (g_client_allocs.load() - client0);
  const auto delivered = fixture.frames() - frames0;
  const double inbound = static_cast<double>(delivered) / static_cast<double>(copies);
  state.counters["relay_allocs"] = static_cast<double>(relay_allocs);
  state.counters["frames_in"] = inbound;
  state.counters["allocs_per_frame"] =
      inbound > 0 ? static_cast<double>(relay_allocs) / inbound : 0;
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * per_iteration));
}

void BM_RequestStreamForward(benchmark::State& state) { forward(state, 0); }
void BM_BroadcastForward(benchmark::State& state) { forward(state, 2); }

// Allocations per one-frame request and one-frame response (stream set-up and tear-down).
void BM_SmallRequest(benchmark::State& state) {
  Fixture fixture;
  const auto channel = Uuid::random();
  auto responder = fixture.connect(channel, true);
  responder->on_request([&fixture](std::shared_ptr<Stream> s) { fixture.answer(std::move(s)); });
  auto sender = fixture.connect(channel, false);
  std::array<std::uint8_t, 128> body{};
  auto once = [&] {
    fixture.run([&]() -> asio::awaitable<void> {
      auto request = sender->open_request(client::Target::any());
      co_await request->write(body, true);
      while ((co_await request->read()).size > 0) {
      }
      co_await request->result();
    });
  };
  for (int i = 0; i < 500; ++i) once();
  const auto allocs0 = g_allocs.load();
  const auto client0 = g_client_allocs.load();
  start_tracing();
  for (auto _ : state) once();
  stop_tracing("small request");
  const auto relay_allocs = (g_allocs.load() - allocs0) - (g_client_allocs.load() - client0);
  state.counters["allocs_per_request"] =
      static_cast<double>(relay_allocs) / static_cast<double>(state.iterations());
}

}  // namespace

BENCHMARK(BM_RequestStreamForward)->Arg(16 * 1024)->Arg(64 * 1024)->UseRealTime();
BENCHMARK(BM_BroadcastForward)->Arg(16 * 1024)->Arg(64 * 1024)->UseRealTime();
BENCHMARK(BM_SmallRequest)->UseRealTime();

BENCHMARK_MAIN();
