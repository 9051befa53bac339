// switchboard-bench internals: the subcommands and the helpers they share (connect, waits).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <stdexcept>
#include <string>

#include "common.hpp"
#include "switchboard/client.hpp"

namespace sbb {

namespace asio = boost::asio;
using switchboard::Uuid;
using switchboard::client::Connection;
using switchboard::client::ConnectOptions;
using switchboard::client::Outcome;
using switchboard::client::Stream;
using switchboard::client::Target;

/// A subcommand: runs on one io_context thread; its return value is the exit code.
using Command = asio::awaitable<int> (*)(const bench::Args& args);

inline Uuid channel_of(const bench::Args& args) {
  auto parsed = Uuid::parse(args.str("channel", ""));
  if (!parsed) throw std::invalid_argument("--channel UUID is required");
  return *parsed;
}

/// Connects to the relay named by --host/--port; throws with the relay's reason on failure.
inline asio::awaitable<std::shared_ptr<Connection>> connect(const bench::Args& args,
                                                            const Uuid& channel,
                                                            bool accept_requests) {
  ConnectOptions options;
  options.host = args.str("host", "127.0.0.1");
  options.port = static_cast<std::uint16_t>(args.num("port", 7400));
  options.channel = channel;
  options.accept_requests = accept_requests;
  Outcome outcome;
  auto executor = co_await asio::this_coro::executor;
  auto connection = co_await Connection::connect(executor, options, outcome);
  if (!connection) throw std::runtime_error("connect failed: " + outcome.describe());
  co_return connection;
}

inline asio::awaitable<void> sleep_ms(long ms) {
  asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
  co_await timer.async_wait(asio::use_awaitable);
}

/// Waits (polling presence, bounded) until `connection` sees at least `count` other peers.
inline asio::awaitable<void> wait_peers(const std::shared_ptr<Connection>& connection,
                                        std::size_t count, long timeout_ms = 10'000) {
  const auto deadline = bench::now_ns() + timeout_ms * 1'000'000LL;
  while (connection->peers().size() < count) {
    if (bench::now_ns() > deadline) {
      throw std::runtime_error("timed out waiting for " + std::to_string(count) + " peers");
    }
    co_await sleep_ms(1);
  }
}

/// Reads a stream to its end; returns the byte count (the bytes are discarded).
inline asio::awaitable<std::uint64_t> drain(std::shared_ptr<Stream> stream) {
  std::uint64_t total = 0;
  for (;;) {
    auto chunk = co_await stream->read();
    if (chunk.size == 0) co_return total;
    total += chunk.size;
  }
}

// Roles and workloads (sb_roles.cpp, sb_rr.cpp, sb_bulk.cpp, sb_conns.cpp).
asio::awaitable<int> responder(const bench::Args& args);
asio::awaitable<int> receiver(const bench::Args& args);
asio::awaitable<int> rr_lat(const bench::Args& args);
asio::awaitable<int> rr_conc(const bench::Args& args);
asio::awaitable<int> stream(const bench::Args& args);
asio::awaitable<int> small(const bench::Args& args);
asio::awaitable<int> fanout(const bench::Args& args);
asio::awaitable<int> conns(const bench::Args& args);
asio::awaitable<int> join_storm(const bench::Args& args);
// Many channels in one process (sb_channels.cpp).
asio::awaitable<int> channels_serve(const bench::Args& args);
asio::awaitable<int> channels_workload(const bench::Args& args);
// Separate messages, one API call each (sb_discrete.cpp).
asio::awaitable<int> discrete(const bench::Args& args);

/// Size of the in-band report a receiver sends back: messages, bytes, last-byte time (ns).
constexpr std::size_t kReportSize = 24;

}  // namespace sbb
