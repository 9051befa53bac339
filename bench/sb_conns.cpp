// switchboard-bench conns and join-storm: many peers over many channels join (128 at a time, then
// idle: relay RSS per peer; or all at once: the time until every peer's presence is exact).
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "sb_bench.hpp"
#include "switchboard/wire/codec.hpp"

namespace sbb {

namespace wire = switchboard::wire;

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

// join-storm: every peer of every channel connects at once (a relay restarting, a cluster relay
// failing over), and the storm is over when every peer's presence is exact. The same client
// machinery (one thread, the same concurrency) first storms nats-server with raw connects, so
// the figures say whether the client side could keep up.
namespace {

// CPU time (user + system) a process has used so far, in seconds; 0 when unreadable.
double proc_cpu_seconds(long pid) { return static_cast<double>(bench::proc_cpu_us(pid)) / 1e6; }

// Raw NATS: CONNECT, SUB to its subject, PING; connected when the PONG comes back.
asio::awaitable<void> nats_join(asio::ip::tcp::socket& socket, const asio::ip::tcp::endpoint& to,
                                std::uint64_t i, std::uint64_t channels) {
  using asio::as_tuple;
  using asio::use_awaitable;
  auto [ec] = co_await socket.async_connect(to, as_tuple(use_awaitable));
  if (ec) throw std::runtime_error("nats connect failed: " + ec.message());
  const std::string hello = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB storm." +
                            std::to_string(i % channels) + " " + std::to_string(i) + "\r\nPING\r\n";
  auto [wec, written] =
      co_await asio::async_write(socket, asio::buffer(hello), as_tuple(use_awaitable));
  if (wec) throw std::runtime_error("nats handshake write failed: " + wec.message());
  std::string seen;
  char buffer[512];
  while (seen.find("PONG\r\n") == std::string::npos) {
    auto [rec, n] = co_await socket.async_read_some(asio::buffer(buffer), as_tuple(use_awaitable));
    if (rec) throw std::runtime_error("nats handshake read failed: " + rec.message());
    seen.append(buffer, n);
  }
}

// A Switchboard peer on a raw socket, as nats_join is a raw NATS client: HELLO, then every
// PRESENCE frame applied to its view, with no client library (no name resolution, no writer or
// keepalive coroutine). The view is what the relay told it; the storm ends when it is exact.
struct RawPeer {
  explicit RawPeer(const asio::any_io_executor& executor)
      : socket(executor), reader(64 * 1024, 64 * 1024 + 64, 4096) {}
  asio::ip::tcp::socket socket;
  wire::FrameReader reader;
  Uuid id;
  std::uint64_t version = 0;
  std::vector<Uuid> view;  // the other members
};

// Applies a PRESENCE frame to the peer's view; returns whether it ended a snapshot.
bool apply_presence(RawPeer& peer, const wire::Frame& frame) {
  wire::Presence presence;
  if (wire::parse_presence(frame.payload, presence) != wire::DecodeError::none) {
    throw std::runtime_error("bad PRESENCE");
  }
  peer.version = presence.version;
  switch (presence.event) {
    case wire::PresenceEvent::snapshot:
      peer.view.insert(peer.view.end(), presence.peers.begin(), presence.peers.end());
      return (frame.header.flags & wire::flags::kMore) == 0;
    case wire::PresenceEvent::joined:
      peer.view.push_back(presence.peers.front());
      return false;
    case wire::PresenceEvent::left:
      std::erase(peer.view, presence.peers.front());
      return false;
  }
  return false;
}

// Connects, joins `channel` and returns once welcomed with the whole snapshot; raw_follow then
// reads the peer's later frames.
asio::awaitable<void> raw_join(RawPeer& peer, const asio::ip::tcp::endpoint& to,
                               const Uuid& channel) {
  using asio::as_tuple;
  using asio::use_awaitable;
  auto [ec] = co_await peer.socket.async_connect(to, as_tuple(use_awaitable));
  if (ec) throw std::runtime_error("connect failed: " + ec.message());
  peer.socket.set_option(asio::ip::tcp::no_delay(true));
  wire::Hello hello;
  hello.channel = channel;
  hello.max_frame = 64 * 1024;
  hello.stream_window = 64 * 1024;
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello);
  auto [wec, written] =
      co_await asio::async_write(peer.socket, asio::buffer(bytes), as_tuple(use_awaitable));
  if (wec) throw std::runtime_error("HELLO write failed: " + wec.message());
  for (bool snapshot_done = false; !snapshot_done;) {
    auto space = peer.reader.prepare();
    auto [rec, n] = co_await peer.socket.async_read_some(asio::buffer(space.data(), space.size()),
                                                         as_tuple(use_awaitable));
    if (rec) throw std::runtime_error("handshake read failed: " + rec.message());
    peer.reader.commit(n);
    wire::Frame frame;
    // Frames after the snapshot stay in the reader for raw_follow.
    while (!snapshot_done) {
      const auto decoded = peer.reader.next(frame);
      if (decoded.kind == wire::DecodeResult::Kind::need_more) break;
      if (decoded.kind == wire::DecodeResult::Kind::error) throw std::runtime_error("bad frame");
      if (frame.header.type == wire::FrameType::welcome) {
        wire::Welcome welcome;
        if (wire::parse_welcome(frame.payload, welcome) != wire::DecodeError::none) {
          throw std::runtime_error("bad WELCOME");
        }
        peer.id = welcome.peer_id;
      } else if (frame.header.type == wire::FrameType::presence) {
        snapshot_done = apply_presence(peer, frame);
      } else if (frame.header.type == wire::FrameType::error) {
        throw std::runtime_error("relay refused the join");
      }
    }
  }
}

// Applies the peer's presence changes until its socket is closed.
asio::awaitable<void> raw_follow(RawPeer& peer) {
  try {
    for (;;) {
      wire::Frame frame;
      for (;;) {
        const auto decoded = peer.reader.next(frame);
        if (decoded.kind != wire::DecodeResult::Kind::frame) break;
        if (frame.header.type == wire::FrameType::presence) apply_presence(peer, frame);
      }
      auto space = peer.reader.prepare();
      auto [ec, n] = co_await peer.socket.async_read_some(asio::buffer(space.data(), space.size()),
                                                          asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      peer.reader.commit(n);
    }
  } catch (const std::exception&) {
    // A malformed frame: the view stops, and the storm reports the peer as inexact.
  }
}

// Runs `work(i)` for i in [0, count) with at most `concurrency` in flight; rethrows the first
// failure once every worker has stopped.
template <typename Work>
asio::awaitable<void> run_bounded(std::uint64_t count, std::uint64_t concurrency, Work work) {
  auto executor = co_await asio::this_coro::executor;
  std::uint64_t next = 0;
  std::uint64_t running = std::min(count, concurrency);
  std::exception_ptr error;
  const std::uint64_t workers = running;
  for (std::uint64_t w = 0; w < workers; ++w) {
    asio::co_spawn(
        executor,
        [&]() -> asio::awaitable<void> {
          try {
            while (next < count && !error) co_await work(next++);
          } catch (...) {
            if (!error) error = std::current_exception();
          }
          --running;
        },
        asio::detached);
  }
  while (running > 0) co_await sleep_ms(1);
  if (error) std::rethrow_exception(error);
}

}  // namespace

asio::awaitable<int> join_storm(const bench::Args& args) {
  const auto peers = args.num("peers", 10'000);
  const auto channels = std::max<std::uint64_t>(1, args.num("channels", 100));
  const auto concurrency = std::max<std::uint64_t>(1, args.num("concurrency", peers));
  const auto settle_ms = static_cast<std::int64_t>(args.num("settle-ms", 60'000));
  if (peers % channels != 0)
    throw std::invalid_argument("--peers must be a multiple of --channels");
  const auto limit = bench::raise_nofile_limit();
  if (limit < peers + 64) {
    throw std::runtime_error("open-files limit " + std::to_string(limit) + " is too low for " +
                             std::to_string(peers) + " peers");
  }
  auto executor = co_await asio::this_coro::executor;
  // --system nats: the NATS storm alone, reported as the nats row of the same workload.
  const bool nats_only = args.str("system", "switchboard") == "nats";
  bench::Json json;
  json.add("workload", "join-storm")
      .add("system", nats_only ? "nats" : "switchboard")
      .add("peers", peers)
      .add("channels", channels)
      .add("concurrency", concurrency);

  // Baseline first, so that its sockets are gone before the relay's storm begins.
  const auto nats_url = args.str("nats-url", "");
  if (nats_only && nats_url.empty()) throw std::invalid_argument("--system nats needs --nats-url");
  if (!nats_url.empty()) {
    if (nats_url.rfind("nats://127.0.0.1:", 0) != 0) {
      throw std::invalid_argument("loopback NATS URLs only");
    }
    const asio::ip::tcp::endpoint to(
        asio::ip::address_v4::loopback(),
        static_cast<std::uint16_t>(std::stoul(nats_url.substr(nats_url.rfind(':') + 1))));
    std::vector<std::unique_ptr<asio::ip::tcp::socket>> sockets(peers);
    const auto cpu_before = bench::proc_cpu_us(0);
    const auto start = bench::now_ns();
    co_await run_bounded(peers, concurrency, [&](std::uint64_t i) -> asio::awaitable<void> {
      sockets[i] = std::make_unique<asio::ip::tcp::socket>(executor);
      co_await nats_join(*sockets[i], to, i, channels);
    });
    const auto nats_ns = bench::now_ns() - start;
    const auto nats_client_cpu_s = static_cast<double>(bench::proc_cpu_us(0) - cpu_before) / 1e6;
    const auto rate = bench::per_second(static_cast<double>(peers), nats_ns);
    if (nats_only) {
      json.add("join_rate", rate)
          .add("storm_seconds", static_cast<double>(nats_ns) / 1e9)
          .add("client_cpu_s", nats_client_cpu_s);
      const long server_pid = static_cast<long>(args.num("server-pid", 0));
      if (server_pid > 0) json.add("server_cpu_s", proc_cpu_seconds(server_pid));
      json.print();
      for (auto& socket : sockets) socket->close();
      co_return 0;
    }
    json.add("nats_connect_rate", rate).add("nats_seconds", static_cast<double>(nats_ns) / 1e9);
    for (auto& socket : sockets) socket->close();
    sockets.clear();
    co_await sleep_ms(500);  // let both ends forget those connections
  }

  std::vector<Uuid> ids;
  for (std::uint64_t i = 0; i < channels; ++i) ids.push_back(Uuid::random());
  const auto per_channel = peers / channels;
  // --raw 1: peers on raw sockets (as the NATS storm's are), without the client library.
  const bool raw = args.num("raw", 0) != 0;
  json.add("client", raw ? "raw" : "library");
  std::vector<std::shared_ptr<Connection>> connections(raw ? 0 : peers);
  std::vector<std::unique_ptr<RawPeer>> raw_peers(raw ? peers : 0);
  const asio::ip::tcp::endpoint relay_at(asio::ip::make_address(args.str("host", "127.0.0.1")),
                                         static_cast<std::uint16_t>(args.num("port", 7400)));
  const auto version_of = [&](std::size_t i) {
    return raw ? raw_peers[i]->version : connections[i]->membership_version();
  };
  const auto id_of = [&](std::size_t i) {
    return raw ? raw_peers[i]->id : connections[i]->peer_id();
  };
  const auto cpu_before = bench::proc_cpu_us(0);
  const auto start = bench::now_ns();
  std::int64_t joined_ns = 0;
  std::uint64_t welcomed = 0;
  co_await run_bounded(peers, concurrency, [&](std::uint64_t i) -> asio::awaitable<void> {
    if (raw) {
      raw_peers[i] = std::make_unique<RawPeer>(executor);
      co_await raw_join(*raw_peers[i], relay_at, ids[i % channels]);
      asio::co_spawn(executor, raw_follow(*raw_peers[i]), asio::detached);
    } else {
      connections[i] = co_await connect(args, ids[i % channels], false);
    }
    if (++welcomed == peers) joined_ns = bench::now_ns() - start;
  });
  // A channel's version counts its joins (fresh channels, nobody leaves): a peer whose version
  // is the channel's size has applied every change; its member set is checked below.
  std::vector<std::size_t> pending(peers);
  for (std::size_t i = 0; i < peers; ++i) pending[i] = i;
  const auto deadline = bench::now_ns() + settle_ms * 1'000'000LL;
  // When the first peer's view became exact (within the 1 ms of this loop): the storm's end
  // (the relay's quiet ticks, its first writes) is before it, the last writes after it.
  std::int64_t first_exact_ns = 0;
  while (!pending.empty()) {
    std::erase_if(pending, [&](std::size_t i) { return version_of(i) >= per_channel; });
    if (first_exact_ns == 0 && pending.size() < peers) first_exact_ns = bench::now_ns() - start;
    if (pending.empty()) break;
    if (bench::now_ns() > deadline) {
      throw std::runtime_error(std::to_string(pending.size()) +
                               " peers never saw their whole channel");
    }
    co_await sleep_ms(1);
  }
  const auto exact_ns = bench::now_ns() - start;
  // The client's own CPU until every view was exact (not the check below, nor the closes).
  const auto client_cpu_s = static_cast<double>(bench::proc_cpu_us(0) - cpu_before) / 1e6;

  // Exact: every peer sees the same version and, with itself, the channel's whole member set.
  std::uint64_t inexact = 0;
  for (std::uint64_t c = 0; c < channels; ++c) {
    std::vector<Uuid> members;
    for (std::uint64_t i = c; i < peers; i += channels) members.push_back(id_of(i));
    std::sort(members.begin(), members.end());
    for (std::uint64_t i = c; i < peers; i += channels) {
      auto seen = raw ? raw_peers[i]->view : connections[i]->peers();
      seen.push_back(id_of(i));
      std::sort(seen.begin(), seen.end());
      if (seen != members || version_of(i) != per_channel) ++inexact;
    }
  }
  json.add("join_rate", bench::per_second(static_cast<double>(peers), exact_ns))
      .add("storm_seconds", static_cast<double>(exact_ns) / 1e9)
      .add("welcomed_seconds", static_cast<double>(joined_ns) / 1e9)
      .add("first_exact_seconds", static_cast<double>(first_exact_ns) / 1e9)
      .add("inexact_peers", inexact)
      .add("client_cpu_s", client_cpu_s);
  const long relay_pid = static_cast<long>(args.num("relay-pid", 0));
  if (relay_pid > 0) {
    json.add("relay_hwm_kib", bench::proc_status_kib(relay_pid, "VmHWM"))
        .add("server_cpu_s", proc_cpu_seconds(relay_pid));
  }
  json.print();
  for (auto& connection : connections) connection->close();
  for (auto& peer : raw_peers) {
    boost::system::error_code ignored;
    peer->socket.close(ignored);
  }
  co_await sleep_ms(100);  // the followers see their sockets closed and end
  co_return inexact == 0 ? 0 : 1;
}

}  // namespace sbb
