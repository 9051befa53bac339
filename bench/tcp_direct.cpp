// tcp-direct: rr-lat and stream over a plain TCP connection (direct, or through tcp-forwarder).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

// The far side: answers requests (mode R) or sinks a stream and reports (mode S).
int serve(const bench::Args& args) {
  int fd = -1;
  if (args.has("connect")) {
    fd = connect_to(static_cast<std::uint16_t>(args.num("connect", 0)));
    std::printf("ready\n");
    std::fflush(stdout);
  } else {
    const int listener = socket(AF_INET, SOCK_STREAM, 0);
    auto address = loopback(0);
    socklen_t length = sizeof address;
    if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        listen(listener, 4) != 0 ||
        getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("bind/listen failed");
    }
    std::printf("listening %u\n", static_cast<unsigned>(ntohs(address.sin_port)));
    std::fflush(stdout);
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

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: tcp-direct serve [--connect PORT]   (else listens on 127.0.0.1:0)\n"
                 "       tcp-direct rr-lat --port P [--n 5000 --warmup 500 --size 128]\n"
                 "       tcp-direct stream --port P [--bytes 1G --chunk 64K]\n"
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
    std::fprintf(stderr, "tcp-direct: unknown command %s\n", command.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tcp-direct: %s\n", e.what());
    return 1;
  }
}
