// tcp-direct: rr-lat and stream over a plain TCP connection (direct, or through tcp-forwarder),
// and the spread floor: the same requests in flight over one connection or over many.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <vector>

#include "common.hpp"

namespace {

constexpr std::size_t kHeaderSize = 13;  // mode u8, size u32 (LE, in a u64 slot), count u64

bool read_exact(int fd, std::uint8_t* out, std::size_t size) {
  while (size > 0) {
    const auto n = read(fd, out, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    out += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool write_exact(int fd, const std::uint8_t* data, std::size_t size) {
  while (size > 0) {
    const auto n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

void no_delay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  return address;
}

int connect_to(std::uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  auto address = loopback(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    throw std::runtime_error("connect to 127.0.0.1:" + std::to_string(port) + " failed");
  }
  no_delay(fd);
  return fd;
}

// A listener on 127.0.0.1 at a port the kernel picks, announced as "listening PORT".
int listen_on_loopback(int backlog) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  auto address = loopback(0);
  socklen_t length = sizeof address;
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener, backlog) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::runtime_error("bind/listen failed");
  }
  std::printf("listening %u\n", static_cast<unsigned>(ntohs(address.sin_port)));
  std::fflush(stdout);
  return listener;
}

// The far side: answers requests (mode R) or sinks a stream and reports (mode S).
int serve(const bench::Args& args) {
  int fd = -1;
  if (args.has("connect")) {
    fd = connect_to(static_cast<std::uint16_t>(args.num("connect", 0)));
    std::printf("ready\n");
    std::fflush(stdout);
  } else {
    const int listener = listen_on_loopback(4);
    fd = accept(listener, nullptr, nullptr);
    close(listener);
    no_delay(fd);
  }
  std::array<std::uint8_t, kHeaderSize> header{};
  if (!read_exact(fd, header.data(), header.size())) return 1;
  const auto size = static_cast<std::size_t>(bench::get_u64(header.data() + 1) & 0xFFFFFFFFu);
  const auto count = bench::get_u64(header.data() + 5);
  std::vector<std::uint8_t> buffer(std::max<std::size_t>(size, 256 * 1024));
  if (header[0] == 'R') {
    for (std::uint64_t i = 0; i < count; ++i) {
      if (!read_exact(fd, buffer.data(), size) || !write_exact(fd, buffer.data(), size)) return 1;
    }
  } else {
    std::uint64_t received = 0;
    std::int64_t last = 0;
    while (received < count) {
      const auto n = read(fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      received += static_cast<std::uint64_t>(n);
      last = bench::now_ns();
    }
    std::array<std::uint8_t, 16> report{};
    bench::put_u64(report.data(), received);
    bench::put_u64(report.data() + 8, static_cast<std::uint64_t>(last));
    write_exact(fd, report.data(), report.size());
  }
  close(fd);
  return 0;
}

void send_header(int fd, char mode, std::uint64_t size, std::uint64_t count) {
  std::array<std::uint8_t, kHeaderSize> header{};
  header[0] = static_cast<std::uint8_t>(mode);
  bench::put_u64(header.data() + 1, size);
  bench::put_u64(header.data() + 5, count);
  if (!write_exact(fd, header.data(), header.size())) throw std::runtime_error("header failed");
}

int rr_lat(const bench::Args& args, const std::string& system) {
  const auto n = args.num("n", 5000);
  const auto warmup = args.num("warmup", 500);
  std::vector<std::uint8_t> body(args.num("size", 128));
  bench::fill_pattern(body.data(), body.size(), 1);
  std::vector<std::uint8_t> reply(body.size());
  const int fd = connect_to(static_cast<std::uint16_t>(args.num("port", 0)));
  send_header(fd, 'R', body.size(), warmup + n);
  std::vector<double> rtt;
  rtt.reserve(n);
  std::int64_t start = 0;
  for (std::uint64_t i = 0; i < warmup + n; ++i) {
    if (i == warmup) start = bench::now_ns();
    const auto t0 = bench::now_ns();
    if (!write_exact(fd, body.data(), body.size()) || !read_exact(fd, reply.data(), reply.size())) {
      throw std::runtime_error("request-reply failed");
    }
    if (i >= warmup) rtt.push_back(static_cast<double>(bench::now_ns() - t0));
  }
  const auto elapsed = bench::now_ns() - start;
  close(fd);
  bench::Json json;
  json.add("workload", "rr-lat").add("system", system).add("n", n);
  bench::add_latency(json, rtt);
  json.add("rps", bench::per_second(static_cast<double>(n), elapsed)).print();
  return 0;
}

int stream(const bench::Args& args, const std::string& system) {
  const auto total = args.num("bytes", 1ULL << 30);
  std::vector<std::uint8_t> chunk(args.num("chunk", 64 * 1024));
  bench::fill_pattern(chunk.data(), chunk.size(), 3);
  const int fd = connect_to(static_cast<std::uint16_t>(args.num("port", 0)));
  send_header(fd, 'S', chunk.size(), total);
  const auto start = bench::now_ns();
  for (std::uint64_t sent = 0; sent < total;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), total - sent));
    if (!write_exact(fd, chunk.data(), n)) throw std::runtime_error("stream write failed");
    sent += n;
  }
  std::array<std::uint8_t, 16> report{};
  if (!read_exact(fd, report.data(), report.size())) throw std::runtime_error("no report");
  close(fd);
  const auto received = bench::get_u64(report.data());
  const auto last = static_cast<std::int64_t>(bench::get_u64(report.data() + 8));
  bench::Json()
      .add("workload", "stream")
      .add("system", system)
      .add("bytes", total)
      .add("received", received)
      .add("mb_s", bench::per_second(static_cast<double>(received), last - start) / 1e6)
      .add("seconds", static_cast<double>(last - start) / 1e9)
      .print();
  return received == total ? 0 : 1;
}

// ---- spread: requests in flight over one connection or spread over many (no relay). ----
// A relay whose peers hold one connection per channel carries a request across 1,000 channels
// alone on its connection at each end, where 16 requests to one responder share its connection
// and go out in one write. This measures what that alone costs, with nothing but the echo: one
// epoll thread each side, echoing bytes as they come.

void set_non_blocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

int spread_serve(const bench::Args& args) {
  const int listener = listen_on_loopback(4096);
  set_non_blocking(listener);
  const int poller = epoll_create1(0);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = listener;
  epoll_ctl(poller, EPOLL_CTL_ADD, listener, &event);
  std::vector<std::uint8_t> buffer(64 * 1024);
  std::array<epoll_event, 256> ready{};
  const auto deadline =
      bench::now_ns() + static_cast<std::int64_t>(args.num("seconds", 120)) * 1'000'000'000;
  while (bench::now_ns() < deadline) {
    const int n = epoll_wait(poller, ready.data(), static_cast<int>(ready.size()), 1000);
    for (int i = 0; i < n; ++i) {
      const int fd = ready[static_cast<std::size_t>(i)].data.fd;
      if (fd == listener) {
        for (int c; (c = accept(listener, nullptr, nullptr)) >= 0;) {
          no_delay(c);
          set_non_blocking(c);
          epoll_event added{};
          added.events = EPOLLIN;
          added.data.fd = c;
          epoll_ctl(poller, EPOLL_CTL_ADD, c, &added);
        }
        continue;
      }
      const auto got = read(fd, buffer.data(), buffer.size());
      if (got <= 0) {
        if (got < 0 && errno == EAGAIN) continue;
        close(fd);  // also leaves the epoll set
        continue;
      }
      // Replies are small and few per connection: they fit its send buffer.
      if (!write_exact(fd, buffer.data(), static_cast<std::size_t>(got))) close(fd);
    }
  }
  return 0;
}

int spread(const bench::Args& args) {
  const auto port = static_cast<std::uint16_t>(args.num("port", 0));
  const auto connections = std::max<std::uint64_t>(1, args.num("conns", 1));
  const auto in_flight = std::max<std::uint64_t>(1, args.num("inflight", 16));
  const auto n = args.num("n", 200000);
  const auto warmup = args.num("warmup", 10000);
  const auto size = std::max<std::uint64_t>(1, args.num("size", 128));
  const long server_pid = static_cast<long>(args.num("server-pid", 0));
  struct Connection {
    int fd = -1;
    std::uint64_t received = 0;         // reply bytes, all of them so far
    std::vector<std::uint8_t> pending;  // requests made this round, written together
  };
  std::vector<Connection> links(connections);
  const int poller = epoll_create1(0);
  for (auto& link : links) {
    link.fd = connect_to(port);
    set_non_blocking(link.fd);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.ptr = &link;
    epoll_ctl(poller, EPOLL_CTL_ADD, link.fd, &event);
  }
  std::vector<std::uint8_t> request(size);
  bench::fill_pattern(request.data(), request.size(), 5);
  std::vector<std::uint8_t> buffer(64 * 1024);
  std::vector<Connection*> dirty;
  std::size_t next = 0;
  std::uint64_t issued = 0, done = 0;
  const auto total = warmup + n;
  auto issue = [&] {
    auto& link = links[next];
    next = (next + 1) % links.size();
    if (link.pending.empty()) dirty.push_back(&link);
    link.pending.insert(link.pending.end(), request.begin(), request.end());
    ++issued;
  };
  auto flush = [&] {
    for (auto* link : dirty) {
      if (!write_exact(link->fd, link->pending.data(), link->pending.size())) {
        throw std::runtime_error("request write failed");
      }
      link->pending.clear();
    }
    dirty.clear();
  };
  while (issued < std::min(in_flight, total)) issue();
  flush();
  std::int64_t start = 0;
  std::uint64_t cpu0 = 0, server_cpu0 = 0;
  std::array<epoll_event, 256> ready{};
  while (done < total) {
    const int count = epoll_wait(poller, ready.data(), static_cast<int>(ready.size()), 10000);
    if (count <= 0) throw std::runtime_error("no reply for 10 s");
    for (int i = 0; i < count; ++i) {
      auto& link = *static_cast<Connection*>(ready[static_cast<std::size_t>(i)].data.ptr);
      const auto got = read(link.fd, buffer.data(), buffer.size());
      if (got < 0 && errno == EAGAIN) continue;
      if (got <= 0) throw std::runtime_error("server closed a connection");
      const auto before = link.received / size;
      link.received += static_cast<std::uint64_t>(got);
      for (auto replies = link.received / size - before; replies > 0; --replies) {
        if (++done == warmup) {
          start = bench::now_ns();
          cpu0 = bench::proc_cpu_us(0);
          server_cpu0 = server_pid > 0 ? bench::proc_cpu_us(server_pid) : 0;
        }
        if (issued < total) issue();
      }
    }
    flush();
  }
  const auto elapsed = bench::now_ns() - start;
  const auto cpu = bench::proc_cpu_us(0) - cpu0;
  const auto server_cpu = server_pid > 0 ? bench::proc_cpu_us(server_pid) - server_cpu0 : 0;
  for (auto& link : links) close(link.fd);
  bench::Json json;
  json.add("workload", "spread").add("system", "direct").add("conns", connections);
  json.add("inflight", in_flight).add("n", n).add("size", size);
  json.add("rps", bench::per_second(static_cast<double>(n), elapsed));
  json.add("client_cpu_us_per_req", static_cast<double>(cpu) / static_cast<double>(n));
  if (server_pid > 0) {
    json.add("server_cpu_us_per_req", static_cast<double>(server_cpu) / static_cast<double>(n));
  }
  json.print();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: tcp-direct serve [--connect PORT]   (else listens on 127.0.0.1:0)\n"
                 "       tcp-direct rr-lat --port P [--n 5000 --warmup 500 --size 128]\n"
                 "       tcp-direct stream --port P [--bytes 1G --chunk 64K]\n"
                 "       tcp-direct spread-serve   (echo over many connections; listens)\n"
                 "       tcp-direct spread --port P [--conns 1 --inflight 16 --n 200000\n"
                 "                 --warmup 10000 --size 128 --server-pid PID]\n"
                 "       [--system direct|forwarder] [--seconds 120]\n");
    return 2;
  }
  try {
    const bench::Args args(argc, argv, 2);
    alarm(static_cast<unsigned>(args.num("seconds", 120)));  // bounded lifetime
    const std::string command = argv[1];
    const auto system = args.str("system", "direct");
    if (command == "serve") return serve(args);
    if (command == "rr-lat") return rr_lat(args, system);
    if (command == "stream") return stream(args, system);
    if (command == "spread-serve") return spread_serve(args);
    if (command == "spread") return spread(args);
    std::fprintf(stderr, "tcp-direct: unknown command %s\n", command.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tcp-direct: %s\n", e.what());
    return 1;
  }
}
