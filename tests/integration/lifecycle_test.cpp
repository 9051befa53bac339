// Shutdown drains, clients close without hanging, and relay memory stays bounded under load.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iterator>
#include <optional>
#include <string>
#include <thread>

#include "support/clients.hpp"
#include "support/process.hpp"
#include "support/raw_peer.hpp"
#include "support/relay.hpp"
#include "support/sanitizers.hpp"

namespace switchboard {
namespace {

using client::BlockingClient;
using client::BlockingStream;
using client::Target;
using test::options_for;
using namespace std::chrono_literals;

TEST(Lifecycle, ShutdownSendsGoAwayRefusesNewStreamsAndLetsInFlightFinish) {
  auto limits = test::fast_limits();
  limits.drain_timeout = 10s;
  limits.keepalive_interval = 10s;
  test::InProcessRelay relay(limits);
  const auto channel = Uuid::random();
  std::promise<void> request_arrived;
  std::promise<void> may_answer;
  BlockingClient responder(options_for(relay.port(), channel, true));
  responder.serve([&](BlockingStream& request) {
    while (request.read_chunk().size > 0) {
    }
    request_arrived.set_value();
    may_answer.get_future().wait();
    request.write(test::as_bytes("finished in time"), true);
  });
  test::RawPeer requester(relay.port());
  requester.join(channel);
  std::vector<std::uint8_t> bytes;
  wire::Open request;
  request.kind = wire::StreamKind::to_any;
  wire::append_open(bytes, 1, request, test::as_bytes("long job"), true);
  requester.send(bytes);
  request_arrived.get_future().wait();

  auto stopper = std::async(std::launch::async, [&] { relay.shutdown(); });
  auto go_away = requester.expect_type(wire::FrameType::go_away);
  ASSERT_TRUE(go_away);
  wire::GoAway parsed_go_away;
  ASSERT_EQ(wire::parse_go_away(go_away->bytes(), parsed_go_away), wire::DecodeError::none);
  EXPECT_EQ(parsed_go_away.last_stream, 1u);
  // New streams are refused while draining; the connection stays for the stream in flight.
  bytes.clear();
  wire::append_open(bytes, 3, request, test::as_bytes("too late"), true);
  requester.send(bytes);
  auto refused = requester.expect_type(wire::FrameType::reset);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->header.stream, 3u);
  wire::Reset reset;
  ASSERT_EQ(wire::parse_reset(refused->bytes(), reset), wire::DecodeError::none);
  EXPECT_EQ(reset.status, Status::refused);
  // The stream in flight completes normally, then the relay closes the idle connection.
  may_answer.set_value();
  auto answer = requester.expect_type(wire::FrameType::data);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->header.stream, 1u);
  EXPECT_TRUE(answer->header.flags & wire::flags::kFin);
  EXPECT_EQ(std::string(answer->payload.begin(), answer->payload.end()), "finished in time");
  EXPECT_TRUE(requester.expect_closed());
  stopper.get();
}

TEST(Lifecycle, DrainTimeoutEndsStreamsThatNeverFinish) {
  auto limits = test::fast_limits();
  limits.drain_timeout = 300ms;
  test::InProcessRelay relay(limits);
  const auto channel = Uuid::random();
  std::promise<void> request_arrived;
  BlockingClient responder(options_for(relay.port(), channel, true));
  responder.serve([&](BlockingStream& request) {
    request.read_chunk();
    request_arrived.set_value();
    request.result();  // never answers
  });
  BlockingClient sender(options_for(relay.port(), channel));
  auto stuck = sender.request(Target::any());
  ASSERT_TRUE(stuck.write(test::as_bytes("forever")).ok());
  request_arrived.get_future().wait();
  relay.shutdown();
  EXPECT_FALSE(stuck.result().ok());
}

TEST(Lifecycle, ServerBinaryExitsCleanlyOnSigterm) {
  test::ServerProcess server(SWITCHBOARD_SERVER_BINARY);
  const auto channel = Uuid::random();
  auto client = std::make_unique<BlockingClient>(options_for(server.port(), channel));
  EXPECT_EQ(server.stop(SIGTERM), 0);
  EXPECT_FALSE(client->wait_closed().ok());
}

TEST(Lifecycle, ClosingNeverHangsWithStreamsInFlightBothWays) {
  test::InProcessRelay relay(test::fast_limits());
  const auto channel = Uuid::random();
  // A responder that answers with an endless response and never reads its request.
  auto responder = std::make_unique<BlockingClient>(options_for(relay.port(), channel, true));
  responder->serve([](BlockingStream& request) {
    std::vector<std::uint8_t> block(256 * 1024, 1);
    while (request.write(block).ok()) {
    }
  });
  auto sender = std::make_unique<BlockingClient>(options_for(relay.port(), channel));
  auto stream = sender->request(Target::any());
  // Write far more than all windows hold, from a thread that will block on credit; never read.
  std::atomic<bool> writer_returned{false};
  std::thread writer([&] {
    std::vector<std::uint8_t> block(256 * 1024, 2);
    while (stream.write(block).ok()) {
    }
    writer_returned = true;
  });
  ASSERT_TRUE(test::eventually([&] { return relay.counters().native.streams_open.load() == 2; }));
  auto closing = std::async(std::launch::async, [&] {
    sender.reset();
    responder.reset();
  });
  ASSERT_EQ(closing.wait_for(10s), std::future_status::ready) << "closing a client hung";
  writer.join();
  EXPECT_TRUE(writer_returned);
  ASSERT_TRUE(test::eventually([&] { return relay.counters().native.streams_open.load() == 0; }));
  EXPECT_TRUE(test::eventually([&] { return relay.counters().queued_bytes.load() == 0; }));
}

TEST(Lifecycle, RelayMemoryStaysBoundedForFastSenderAndSlowReader) {
  test::ServerProcess server(SWITCHBOARD_SERVER_BINARY);
  const auto channel = Uuid::random();
  const auto baseline = server.rss();
  BlockingClient responder(options_for(server.port(), channel, true));
  // Reads slowly: pauses 1 ms per chunk, and answers with the byte count it saw.
  responder.serve([](BlockingStream& request) {
    std::uint64_t total = 0;
    for (;;) {
      auto chunk = request.read_chunk();
      if (chunk.size == 0) break;
      total += chunk.size;
      std::this_thread::sleep_for(1ms);
    }
    const auto text = std::to_string(total);
    request.write(test::as_bytes(text), true);
  });
  BlockingClient sender(options_for(server.port(), channel));
  constexpr std::uint64_t kTotal = 1ULL << 30;
  auto stream = sender.request(Target::any());
  std::vector<std::uint8_t> block(1 << 20, 0x5A);
  for (std::uint64_t sent = 0; sent < kTotal; sent += block.size()) {
    ASSERT_TRUE(stream.write(block).ok());
  }
  ASSERT_TRUE(stream.finish().ok());
  auto answer = stream.read_chunk();
  EXPECT_EQ(std::string(answer.data, answer.data + answer.size), std::to_string(kTotal));
  EXPECT_TRUE(stream.result().ok());
  const auto peak = server.peak_rss();
  std::printf("relay RSS: baseline %.1f MiB, peak %.1f MiB while 1 GiB streamed to a slow reader\n",
              static_cast<double>(baseline) / (1 << 20), static_cast<double>(peak) / (1 << 20));
  // Bound: one stream window (1 MiB) in relay queues plus a few 256 KiB read blocks, on top
  // of the process baseline. 32 MiB leaves room for allocator slack, never for the 1 GiB.
  EXPECT_LT(peak, baseline + (32U << 20));
}

// A request or broadcast sends its OPEN with its first write. One that was opened but not yet
// written when its connection closed used to stay open forever: a read on it never returned.
TEST(Lifecycle, ClosingEndsStreamsOpenedButNotYetWritten) {
  test::InProcessRelay relay(test::fast_limits());
  const auto channel = Uuid::random();
  BlockingClient responder(options_for(relay.port(), channel, true));
  responder.serve(test::echo);
  BlockingClient sender(options_for(relay.port(), channel));
  auto request = std::make_shared<BlockingStream>(sender.request(Target::any()));
  auto broadcast = std::make_shared<BlockingStream>(sender.broadcast());
  // Each wait runs on its own detached thread owning what it uses, so that a hang fails the
  // test after the bound instead of hanging it.
  auto read_end = std::make_shared<std::promise<std::size_t>>();
  auto read_ended = read_end->get_future();
  std::thread([request, read_end] { read_end->set_value(request->read_chunk().size); }).detach();
  sender.close();
  ASSERT_EQ(read_ended.wait_for(5s), std::future_status::ready)
      << "a read on a never-written request did not end when its connection closed";
  EXPECT_EQ(read_ended.get(), 0U);
  auto outcome = std::make_shared<std::promise<client::Outcome>>();
  auto outcome_ready = outcome->get_future();
  std::thread([broadcast, outcome] { outcome->set_value(broadcast->result()); }).detach();
  ASSERT_EQ(outcome_ready.wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(outcome_ready.get().ok());
  EXPECT_FALSE(request->write(test::as_bytes("too late"), true).ok());
}

// The relay's environment as the kernel holds it. glibc splits a GLIBC_TUNABLES value at its
// colons while reading it, so entries are looked for as substrings.
std::string environment_of(int pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

bool kernel_offers_huge_pages() {
  std::ifstream file("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string word;
  while (file >> word) {
    if (word == "[always]" || word == "[madvise]") return true;
  }
  return false;
}

// Sets an environment variable for the relays a test starts, and restores it.
class ScopedEnvironment {
public:
  ScopedEnvironment(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnvironment() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnvironment(const ScopedEnvironment&) = delete;
  ScopedEnvironment& operator=(const ScopedEnvironment&) = delete;

private:
  const char* name_;
  std::optional<std::string> old_;
};

// The relay restarts itself at start-up (same process id) with malloc's heap on transparent huge
// pages, when the kernel offers them; an operator's own choice of that tunable, or the option
// turned off, is left alone, and other tunables are kept.
TEST(Lifecycle, TheRelayPutsItsHeapOnHugePagesUnlessTheOperatorChose) {
  constexpr auto kOn = "glibc.malloc.hugetlb=1";
  const bool offered = kernel_offers_huge_pages();
  ScopedEnvironment none("GLIBC_TUNABLES", "");
  {
    test::ServerProcess relay(SWITCHBOARD_SERVER_BINARY);
    EXPECT_EQ(environment_of(relay.pid()).find(kOn) != std::string::npos, offered);
  }
  {
    test::ServerProcess relay(SWITCHBOARD_SERVER_BINARY, {"--heap-huge-pages=false"});
    EXPECT_EQ(environment_of(relay.pid()).find("hugetlb"), std::string::npos);
  }
  {
    ScopedEnvironment chosen("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0");
    test::ServerProcess relay(SWITCHBOARD_SERVER_BINARY);
    const auto environment = environment_of(relay.pid());
    EXPECT_NE(environment.find("glibc.malloc.hugetlb=0"), std::string::npos);
    EXPECT_EQ(environment.find(kOn), std::string::npos);
  }
  {
    ScopedEnvironment other("GLIBC_TUNABLES", "glibc.malloc.tcache_count=5");
    test::ServerProcess relay(SWITCHBOARD_SERVER_BINARY);
    const auto environment = environment_of(relay.pid());
    EXPECT_NE(environment.find("glibc.malloc.tcache_count=5"), std::string::npos);
    EXPECT_EQ(environment.find(kOn) != std::string::npos, offered);
    // It serves after the restart: a peer joins.
    BlockingClient peer(options_for(relay.port(), Uuid::random()));
    EXPECT_FALSE(peer.peer_id().is_nil());
  }
}

using test::kSanitized;

long minor_page_faults() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// Connections that receive read into full-size blocks while the program still holds slices of
// the ones before; the blocks they let go are kept for reuse by the process. They used to go back
// to malloc, and with several connections receiving at once glibc kept returning the freed heap
// top to the kernel, to fault it in again 4 KiB at a time.
TEST(Lifecycle, ReceivingConnectionsReuseTheirReadBlocks) {
  if (kSanitized) GTEST_SKIP() << "a sanitizer's allocator decides where memory comes from";
  test::ServerProcess relay(SWITCHBOARD_SERVER_BINARY);  // its faults are not this process's
  const auto channel = Uuid::random();
  constexpr int kReceivers = 8;
  std::vector<std::unique_ptr<BlockingClient>> receivers;
  std::vector<std::promise<std::uint64_t>> received(kReceivers);
  for (int i = 0; i < kReceivers; ++i) {
    receivers.push_back(std::make_unique<BlockingClient>(options_for(relay.port(), channel)));
    receivers.back()->on_broadcast([&received, i](client::BlockingStream& broadcast) {
      std::uint64_t total = 0;
      for (;;) {
        auto chunk = broadcast.read_chunk();
        if (chunk.size == 0) break;
        total += chunk.size;
      }
      received[static_cast<std::size_t>(i)].set_value(total);
    });
  }
  BlockingClient sender(options_for(relay.port(), channel));
  ASSERT_TRUE(test::eventually([&] { return sender.peers().size() == kReceivers; }));
  const std::vector<std::uint8_t> block(64 * 1024, 0x5A);
  auto broadcast = sender.broadcast();
  const auto send = [&](std::uint64_t bytes) {
    for (std::uint64_t sent = 0; sent < bytes; sent += block.size()) {
      ASSERT_TRUE(broadcast.write(block).ok());
    }
  };
  constexpr std::uint64_t kWarmUp = 8ULL << 20;
  constexpr std::uint64_t kMeasured = 64ULL << 20;
  send(kWarmUp);  // the pool's blocks and every other first allocation
  const auto before = minor_page_faults();
  send(kMeasured);
  ASSERT_TRUE(broadcast.finish().ok());
  for (auto& total : received) {
    auto bytes = total.get_future();
    ASSERT_EQ(bytes.wait_for(60s), std::future_status::ready);
    EXPECT_EQ(bytes.get(), kWarmUp + kMeasured);
  }
  const auto faults = minor_page_faults() - before;
  std::printf("page faults in the client process while 8 x 64 MiB went through it: %ld\n", faults);
  // Reading 512 MiB into fresh memory would be 131,072 faults.
  EXPECT_LT(faults, 2000);
}

}  // namespace
}  // namespace switchboard
