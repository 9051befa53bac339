// switchboard-bench request/response workloads: rr-lat (sequential) and rr-conc (concurrent).
// rr-lat --raw 1 (requester) and --raw-serve 1 (responder) speak frames over a blocking socket
// without the client library, to tell the relay's share of a round trip from the library's.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <cerrno>
#include <cstdio>
#include <vector>

#include "sb_bench.hpp"
#include "switchboard/wire/codec.hpp"

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

namespace wire = switchboard::wire;

// A native-protocol connection on a blocking socket: frames in, frames out, nothing else.
class RawLink {
public:
  RawLink(std::uint16_t port, unsigned timeout_s) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      throw std::runtime_error("raw connect to 127.0.0.1:" + std::to_string(port) + " failed");
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // Bounded: a read that waits this long ends the run.
    timeval limit{static_cast<time_t>(timeout_s), 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  }
  ~RawLink() { ::close(fd_); }
  RawLink(const RawLink&) = delete;
  RawLink& operator=(const RawLink&) = delete;

  void send(const std::vector<std::uint8_t>& bytes) {
    for (std::size_t sent = 0; sent < bytes.size();) {
      const auto n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error("raw send failed");
      sent += static_cast<std::size_t>(n);
    }
  }

  // The next frame; its payload stays valid until the next call. PINGs are answered here.
  wire::DecodeResult next() {
    for (;;) {
      in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
      for (;;) {
        auto frame = wire::decode_frame({in_.data() + head_, in_.size() - head_}, 1U << 30);
        if (frame.kind == wire::DecodeResult::Kind::error) throw std::runtime_error("bad frame");
        if (frame.kind == wire::DecodeResult::Kind::need_more) break;
        head_ += frame.consumed;
        if (frame.header.type != wire::FrameType::ping) return frame;
        std::uint64_t opaque = 0;
        if ((frame.header.flags & wire::flags::kAck) == 0 &&
            wire::parse_ping(frame.payload, opaque) == wire::DecodeError::none) {
          std::vector<std::uint8_t> pong;
          wire::append_ping(pong, opaque, true);
          send(pong);
        }
      }
      const std::size_t used = in_.size();
      in_.resize(used + 64 * 1024);
      const auto n = ::recv(fd_, in_.data() + used, 64 * 1024, 0);
      if (n < 0 && errno == EINTR) {
        in_.resize(used);
        continue;
      }
      if (n <= 0) throw std::runtime_error("raw link closed or timed out");
      in_.resize(used + static_cast<std::size_t>(n));
    }
  }

  // HELLO, WELCOME and the presence snapshot; returns how many other peers it listed.
  std::size_t join(const Uuid& channel, bool accept_requests) {
    wire::Hello hello;
    hello.channel = channel;
    hello.hello_flags = accept_requests ? wire::flags::kAcceptRequests : 0;
    hello.max_frame = 1U << 20;
    hello.stream_window = 1U << 20;
    std::vector<std::uint8_t> out;
    wire::append_hello(out, hello);
    send(out);
    if (next().header.type != wire::FrameType::welcome) throw std::runtime_error("no WELCOME");
    std::size_t peers = 0;
    for (;;) {
      const auto frame = next();
      wire::Presence presence;
      if (frame.header.type != wire::FrameType::presence ||
          wire::parse_presence(frame.payload, presence) != wire::DecodeError::none) {
        throw std::runtime_error("no presence snapshot");
      }
      peers += presence.peers.size();
      if ((frame.header.flags & wire::flags::kMore) == 0) return peers;
    }
  }

private:
  int fd_ = -1;
  std::vector<std::uint8_t> in_;
  std::size_t head_ = 0;
};

// Answers each request, once its last byte is in, with `reply_size` bytes; until the relay
// closes the link or nothing comes for --timeout seconds.
int raw_serve(const bench::Args& args) {
  RawLink link(static_cast<std::uint16_t>(args.num("port", 7400)),
               static_cast<unsigned>(args.num("timeout", 120)));
  link.join(channel_of(args), true);
  std::printf("ready\n");
  std::fflush(stdout);
  const std::vector<std::uint8_t> reply(args.num("reply-size", 128), 7);
  std::vector<std::uint8_t> out;
  try {
    for (;;) {
      const auto frame = link.next();
      const auto type = frame.header.type;
      if ((type != wire::FrameType::open && type != wire::FrameType::data) ||
          (frame.header.flags & wire::flags::kFin) == 0) {
        continue;
      }
      out.clear();
      wire::append_data(out, frame.header.stream, {reply.data(), reply.size()}, true);
      link.send(out);
    }
  } catch (const std::exception&) {
    return 0;  // the relay went away, or the run is over
  }
}

// rr-lat with raw frames: each request one OPEN (body, FIN) to any responder; its round trip
// ends with the reply's FIN.
int raw_rr_lat(const bench::Args& args, std::span<const std::uint8_t> body, std::uint64_t n,
               std::uint64_t warmup) {
  RawLink link(static_cast<std::uint16_t>(args.num("port", 7400)),
               static_cast<unsigned>(args.num("timeout", 120)));
  if (link.join(channel_of(args), false) == 0) throw std::runtime_error("no responder joined");
  wire::Open open;
  open.kind = wire::StreamKind::to_any;
  std::vector<std::uint8_t> out;
  std::vector<double> rtt;
  rtt.reserve(n);
  std::uint32_t id = 1;
  std::int64_t start = 0;
  for (std::uint64_t i = 0; i < warmup + n; ++i, id += 2) {
    if (i == warmup) start = bench::now_ns();
    const auto t0 = bench::now_ns();
    out.clear();
    wire::append_open(out, id, open, {body.data(), body.size()}, true);
    link.send(out);
    std::size_t received = 0;
    for (;;) {
      const auto frame = link.next();
      if (frame.header.stream != id) continue;
      const auto type = frame.header.type;
      if (type == wire::FrameType::reset || type == wire::FrameType::end) {
        throw std::runtime_error("request ended without a reply");
      }
      if (type != wire::FrameType::data) continue;
      received += frame.payload.size();
      if ((frame.header.flags & wire::flags::kFin) != 0) break;
    }
    if (received == 0) throw std::runtime_error("empty response");
    if (i >= warmup) rtt.push_back(static_cast<double>(bench::now_ns() - t0));
  }
  const auto elapsed = bench::now_ns() - start;
  bench::Json json;
  json.add("workload", "rr-lat").add("system", "switchboard-raw").add("n", n);
  bench::add_latency(json, rtt);
  json.add("rps", bench::per_second(static_cast<double>(n), elapsed)).print();
  return 0;
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
  if (args.num("raw-serve", 0) != 0) co_return raw_serve(args);
  if (args.num("raw", 0) != 0) co_return raw_rr_lat(args, body, n, warmup);
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
