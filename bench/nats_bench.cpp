// nats-bench: the nats-server baseline with the libnats C client: request-reply (responder,
// sequential and concurrent requesters) and publish/subscribe with windowed acks (no drops).
#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kAckSubject = "bench.ack";
constexpr std::size_t kAckSize = 32;  // index, msgs, bytes, last-byte time
std::atomic<std::uint64_t> async_errors{0};

void check(natsStatus status, const char* what) {
  if (status != NATS_OK) {
    throw std::runtime_error(std::string(what) + ": " + natsStatus_GetText(status));
  }
}

void on_async_error(natsConnection*, natsSubscription*, natsStatus status, void*) {
  async_errors.fetch_add(1);
  std::fprintf(stderr, "nats-bench: async error %s\n", natsStatus_GetText(status));
}

natsConnection* connect(const bench::Args& args, bool send_asap) {
  const auto url = args.str("url", "nats://127.0.0.1:4222");
  if (url.rfind("nats://127.0.0.1:", 0) != 0) throw std::invalid_argument("loopback URLs only");
  natsOptions* options = nullptr;
  check(natsOptions_Create(&options), "options");
  check(natsOptions_SetURL(options, url.c_str()), "url");
  check(natsOptions_SetSendAsap(options, send_asap), "send asap");
  check(natsOptions_SetErrorHandler(options, on_async_error, nullptr), "error handler");
  if (args.has("iobuf")) {
    check(natsOptions_SetIOBufSize(options, static_cast<int>(args.num("iobuf", 0))), "iobuf");
  }
  natsConnection* connection = nullptr;
  check(natsConnection_Connect(&connection, options), "connect");
  natsOptions_Destroy(options);
  return connection;
}

void ready() {
  std::printf("ready\n");
  std::fflush(stdout);
}

// ---- Request-reply. ----

void on_request(natsConnection* connection, natsSubscription*, natsMsg* msg, void* closure) {
  const auto reply_size = *static_cast<std::size_t*>(closure);
  std::array<std::uint8_t, 4096> reply{};
  bench::put_u64(reply.data(), static_cast<std::uint64_t>(natsMsg_GetDataLength(msg)));
  bench::put_u64(reply.data() + 8, static_cast<std::uint64_t>(bench::now_ns()));
  natsConnection_Publish(connection, natsMsg_GetReply(msg), reply.data(),
                         static_cast<int>(reply_size));
  natsMsg_Destroy(msg);
}

int responder(const bench::Args& args) {
  static std::size_t reply_size = std::min<std::size_t>(args.num("reply-size", 128), 4096);
  auto* connection = connect(args, true);
  natsSubscription* sub = nullptr;
  const auto subject = args.str("subject", "bench.rr");
  if (args.has("queue")) {
    check(natsConnection_QueueSubscribe(&sub, connection, subject.c_str(),
                                        args.str("queue", "q").c_str(), on_request, &reply_size),
          "queue subscribe");
  } else {
    check(natsConnection_Subscribe(&sub, connection, subject.c_str(), on_request, &reply_size),
          "subscribe");
  }
  check(natsConnection_Flush(connection), "flush");
  ready();
  for (;;) pause();  // until SIGTERM or the alarm
}

std::int64_t one_request(natsConnection* connection, const std::string& subject,
                         const std::vector<std::uint8_t>& body) {
  const auto start = bench::now_ns();
  natsMsg* reply = nullptr;
  check(natsConnection_Request(&reply, connection, subject.c_str(), body.data(),
                               static_cast<int>(body.size()), 5000),
        "request");
  natsMsg_Destroy(reply);
  return bench::now_ns() - start;
}

int rr_lat(const bench::Args& args) {
  const auto n = args.num("n", 5000);
  const auto warmup = args.num("warmup", 500);
  const auto subject = args.str("subject", "bench.rr");
  std::vector<std::uint8_t> body(args.num("size", 128));
  bench::fill_pattern(body.data(), body.size(), 1);
  auto* connection = connect(args, true);
  for (std::uint64_t i = 0; i < warmup; ++i) one_request(connection, subject, body);
  std::vector<double> rtt;
  rtt.reserve(n);
  const auto start = bench::now_ns();
  for (std::uint64_t i = 0; i < n; ++i) {
    rtt.push_back(static_cast<double>(one_request(connection, subject, body)));
  }
  const auto elapsed = bench::now_ns() - start;
  bench::Json json;
  json.add("workload", "rr-lat").add("system", "nats").add("n", n);
  bench::add_latency(json, rtt);
  json.add("rps", bench::per_second(static_cast<double>(n), elapsed)).print();
  natsConnection_Destroy(connection);
  return 0;
}

// `total` requests over the requesters' connections, one thread each; returns elapsed ns.
std::int64_t conc_phase(const std::vector<natsConnection*>& connections, const std::string& subject,
                        const std::vector<std::uint8_t>& body, std::uint64_t total,
                        std::vector<double>& samples) {
  std::atomic<std::uint64_t> issued{0};
  std::mutex mutex;
  std::string failure;
  samples.clear();
  std::vector<std::thread> threads;
  const auto start = bench::now_ns();
  for (auto* connection : connections) {
    threads.emplace_back([&, connection] {
      std::vector<double> mine;
      try {
        while (issued.fetch_add(1) < total) {
          mine.push_back(static_cast<double>(one_request(connection, subject, body)));
        }
      } catch (const std::exception& e) {
        std::lock_guard lock(mutex);
        failure = e.what();
        issued = total;  // the other requesters stop too
      }
      std::lock_guard lock(mutex);
      samples.insert(samples.end(), mine.begin(), mine.end());
    });
  }
  for (auto& thread : threads) thread.join();
  if (!failure.empty()) throw std::runtime_error(failure);
  return bench::now_ns() - start;
}

int rr_conc(const bench::Args& args) {
  const auto requesters = args.num("requesters", 16);
  const auto responders = args.num("responders", 1);
  const auto n = args.num("n", 200'000);
  const auto subject = args.str("subject", "bench.rr");
  std::vector<std::uint8_t> body(args.num("size", 128));
  bench::fill_pattern(body.data(), body.size(), 2);
  std::vector<natsConnection*> connections;
  for (std::uint64_t i = 0; i < requesters; ++i) connections.push_back(connect(args, true));
  std::vector<double> samples;
  conc_phase(connections, subject, body, args.num("warmup", n / 20), samples);
  const auto elapsed = conc_phase(connections, subject, body, n, samples);
  bench::Json json;
  json.add("workload", responders > 1 ? "rr-conc-any" : "rr-conc")
      .add("system", "nats")
      .add("n", n)
      .add("requesters", requesters)
      .add("responders", responders);
  bench::add_latency(json, samples);
  json.add("rps", bench::per_second(static_cast<double>(n), elapsed)).print();
  for (auto* connection : connections) natsConnection_Destroy(connection);
  return 0;
}

// ---- Publish/subscribe with acks: the harness's flow control, so nothing is dropped. ----

struct SubState {
  natsConnection* connection = nullptr;
  std::uint64_t index = 0;
  std::uint64_t expect = 0;
  std::uint64_t ack_every = 1;
  std::atomic<std::uint64_t> msgs{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<std::int64_t> last{0};
  std::atomic<bool> done{false};
};

void send_ack(SubState& state) {
  std::array<std::uint8_t, kAckSize> ack{};
  bench::put_u64(ack.data(), state.index);
  bench::put_u64(ack.data() + 8, state.msgs.load());
  bench::put_u64(ack.data() + 16, state.bytes.load());
  bench::put_u64(ack.data() + 24, static_cast<std::uint64_t>(state.last.load()));
  natsConnection_Publish(state.connection, kAckSubject, ack.data(), static_cast<int>(ack.size()));
}

void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto& state = *static_cast<SubState*>(closure);
  state.bytes.fetch_add(static_cast<std::uint64_t>(natsMsg_GetDataLength(msg)));
  state.last.store(bench::now_ns());
  const auto msgs = state.msgs.fetch_add(1) + 1;
  natsMsg_Destroy(msg);
  if (msgs % state.ack_every == 0 || msgs == state.expect) send_ack(state);
  if (msgs == state.expect) state.done.store(true);
}

int sub(const bench::Args& args) {
  const auto count = args.num("subs", 1);
  const auto subject = args.str("subject", "bench.data");
  const auto idle_ns = static_cast<std::int64_t>(args.num("idle-report-ms", 3000)) * 1'000'000;
  std::vector<std::unique_ptr<SubState>> states;
  for (std::uint64_t i = 0; i < count; ++i) {
    auto state = std::make_unique<SubState>();
    state->connection = connect(args, true);
    state->index = i;
    state->expect = args.num("expect-msgs", 1);
    state->ack_every = std::max<std::uint64_t>(1, args.num("ack-every", 16));
    natsSubscription* subscription = nullptr;
    check(natsConnection_Subscribe(&subscription, state->connection, subject.c_str(), on_message,
                                   state.get()),
          "subscribe");
    check(natsSubscription_SetPendingLimits(subscription, -1, -1), "pending limits");
    check(natsConnection_Flush(state->connection), "flush");
    states.push_back(std::move(state));
  }
  ready();
  for (;;) {
    bool all = true;
    for (auto& state : states) {
      const auto last = state->last.load();
      if (!state->done && last != 0 && bench::now_ns() - last > idle_ns) {
        send_ack(*state);  // stopped receiving: the sender learns what arrived
        state->done = true;
      }
      all = all && state->done;
    }
    if (all) break;
    usleep(20'000);
  }
  for (auto& state : states) natsConnection_FlushTimeout(state->connection, 2000);
  return 0;
}

int pub(const bench::Args& args) {
  const auto workload = args.str("workload", "stream");
  const auto subs = args.num("subs", 1);
  const auto n = args.num("n", 16384);
  const auto window = std::max<std::uint64_t>(1, args.num("window", 128));
  const auto subject = args.str("subject", "bench.data");
  std::vector<std::uint8_t> body(args.num("size", 64 * 1024));
  bench::fill_pattern(body.data(), body.size(), 3);
  auto* connection = connect(args, args.has("asap"));
  natsSubscription* acks = nullptr;
  check(natsConnection_SubscribeSync(&acks, connection, kAckSubject), "ack subscribe");
  check(natsSubscription_SetPendingLimits(acks, -1, -1), "pending limits");
  check(natsConnection_Flush(connection), "flush");
  std::vector<std::uint64_t> acked(subs, 0), bytes(subs, 0);
  std::vector<std::int64_t> last(subs, 0);
  auto min_acked = [&] { return *std::min_element(acked.begin(), acked.end()); };
  // Takes one ack; false on timeout.
  auto take_ack = [&](std::int64_t timeout_ms) {
    natsMsg* msg = nullptr;
    if (natsSubscription_NextMsg(&msg, acks, timeout_ms) != NATS_OK) return false;
    const auto* data = reinterpret_cast<const std::uint8_t*>(natsMsg_GetData(msg));
    if (natsMsg_GetDataLength(msg) >= static_cast<int>(kAckSize)) {
      const auto index = bench::get_u64(data);
      if (index < subs) {
        acked[index] = std::max(acked[index], bench::get_u64(data + 8));
        bytes[index] = std::max(bytes[index], bench::get_u64(data + 16));
        last[index] = std::max(last[index], static_cast<std::int64_t>(bench::get_u64(data + 24)));
      }
    }
    natsMsg_Destroy(msg);
    return true;
  };
  const auto start = bench::now_ns();
  for (std::uint64_t i = 0; i < n; ++i) {
    while (i - min_acked() >= window) {
      if (!take_ack(10'000)) throw std::runtime_error("no ack for 10 s");
    }
    check(natsConnection_Publish(connection, subject.c_str(), body.data(),
                                 static_cast<int>(body.size())),
          "publish");
  }
  natsConnection_FlushTimeout(connection, 10'000);
  const auto deadline = bench::now_ns() + 30'000'000'000LL;
  while (min_acked() < n && bench::now_ns() < deadline) take_ack(1000);
  std::uint64_t received = 0, received_bytes = 0;
  std::int64_t end = start;
  for (std::uint64_t i = 0; i < subs; ++i) {
    received += acked[i];
    received_bytes += bytes[i];
    end = std::max(end, last[i]);
  }
  bench::Json json;
  json.add("workload", workload).add("system", "nats").add("subs", subs).add("n", n);
  json.add("received", received).add("lost", subs * n - std::min(subs * n, received));
  if (workload == "small") {
    json.add("msgs_s", bench::per_second(static_cast<double>(received), end - start));
  } else if (workload == "fanout") {
    json.add("aggregate_mb_s",
             bench::per_second(static_cast<double>(received_bytes), end - start) / 1e6);
  } else {
    json.add("mb_s", bench::per_second(static_cast<double>(received_bytes), end - start) / 1e6);
  }
  json.add("async_errors", async_errors.load()).print();
  natsConnection_Destroy(connection);
  return received == subs * n ? 0 : 1;
}

// ---- Idle connections: raw protocol (CONNECT, SUB, PING/PONG), as the C client would need two
// threads per connection. ----

bool read_until(int fd, const std::string& marker, std::string& buffer) {
  char chunk[4096];
  while (buffer.find(marker) == std::string::npos) {
    const auto n = read(fd, chunk, sizeof chunk);
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
  return true;
}

int conns(const bench::Args& args) {
  const auto url = args.str("url", "nats://127.0.0.1:4222");
  if (url.rfind("nats://127.0.0.1:", 0) != 0) throw std::invalid_argument("loopback URLs only");
  const auto port = static_cast<std::uint16_t>(std::stoul(url.substr(url.rfind(':') + 1)));
  const auto peers = args.num("peers", 10'000);
  const auto channels = std::max<std::uint64_t>(1, args.num("channels", 100));
  const auto batch = std::max<std::uint64_t>(1, args.num("concurrency", 128));
  const long pid = static_cast<long>(args.num("server-pid", 0));
  if (bench::raise_nofile_limit() < peers + 64)
    throw std::runtime_error("open-files limit too low");
  usleep(200'000);
  const auto rss_before = bench::proc_status_kib(pid, "VmRSS");
  std::vector<int> fds;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  const auto start = bench::now_ns();
  // `batch` connections at a time: connect and send the handshake for all, then read the PONGs.
  for (std::uint64_t first = 0; first < peers; first += batch) {
    const auto last = std::min(peers, first + batch);
    for (auto i = first; i < last; ++i) {
      const int fd = socket(AF_INET, SOCK_STREAM, 0);
      if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
        throw std::runtime_error("connect failed");
      }
      const std::string hello =
          "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB bench.conns." +
          std::to_string(i % channels) + " " + std::to_string(i) + "\r\nPING\r\n";
      if (write(fd, hello.data(), hello.size()) != static_cast<ssize_t>(hello.size())) {
        throw std::runtime_error("handshake write failed");
      }
      fds.push_back(fd);
    }
    for (auto i = first; i < last; ++i) {
      std::string buffer;
      if (!read_until(fds[i], "PONG\r\n", buffer)) throw std::runtime_error("no PONG");
    }
  }
  const auto join_ns = bench::now_ns() - start;
  usleep(static_cast<useconds_t>(args.num("idle-ms", 1000) * 1000));
  const auto rss_after = bench::proc_status_kib(pid, "VmRSS");
  const auto grown = rss_after > rss_before ? rss_after - rss_before : 0;
  bench::Json()
      .add("workload", "conns")
      .add("system", "nats")
      .add("peers", peers)
      .add("channels", channels)
      .add("join_rate", bench::per_second(static_cast<double>(peers), join_ns))
      .add("relay_rss_before_kib", rss_before)
      .add("relay_rss_after_kib", rss_after)
      .add("kib_per_peer", static_cast<double>(grown) / static_cast<double>(peers))
      .print();
  for (int fd : fds) close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: nats-bench COMMAND --url nats://127.0.0.1:PORT [flags]\n"
                 "  responder [--queue Q --reply-size 128]   rr-lat [--n --warmup --size]\n"
                 "  rr-conc [--requesters 16 --n 200000 --responders 1]\n"
                 "  sub --subs K --expect-msgs M [--ack-every 16]\n"
                 "  pub --workload stream|small|fanout --subs K --n M --size B [--window W]\n"
                 "  conns --server-pid PID [--peers 10000 --channels 100]\n"
                 "  [--seconds 120] [--iobuf BYTES] [--asap]\n");
    return 2;
  }
  try {
    const bench::Args args(argc, argv, 2);
    alarm(static_cast<unsigned>(args.num("seconds", 120)));  // bounded lifetime
    const std::string command = argv[1];
    if (command == "responder") return responder(args);
    if (command == "rr-lat") return rr_lat(args);
    if (command == "rr-conc") return rr_conc(args);
    if (command == "sub") return sub(args);
    if (command == "pub") return pub(args);
    if (command == "conns") return conns(args);
    std::fprintf(stderr, "nats-bench: unknown command %s\n", command.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nats-bench: %s\n", e.what());
    return 1;
  }
}
