// tcp-forwarder: the baseline relay; pairs accepted connections (first = server side) and copies
// bytes both ways with one blocking thread per direction and a 256 KiB buffer (--mode threads),
// or, as latency floors, with one thread over epoll that may poll before it sleeps (--mode epoll
// --spin-us N; --spin-us -1 never sleeps).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t kBufferSize = 256 * 1024;

struct Pair {
  int server = -1;
  int client = -1;
  ~Pair() {
    close(server);
    close(client);
  }
};

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const auto n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// `pair` keeps both descriptors open until both directions are done.
void pump(std::shared_ptr<Pair> pair, int from, int to) {
  std::vector<char> buffer(kBufferSize);
  for (;;) {
    const auto n = read(from, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !write_all(to, buffer.data(), static_cast<std::size_t>(n))) break;
  }
  shutdown(to, SHUT_WR);
  shutdown(from, SHUT_RD);
  pair.reset();
}

// One direction of a pair in the epoll loop: readable `from` is copied to `to`.
struct Direction {
  std::shared_ptr<Pair> pair;
  int from = -1;
  int to = -1;
};

// Copies what `d.from` has now; false once that direction is over (then shut down; the caller
// takes it out of epoll and lets go of the pair).
bool forward_ready(Direction& d, std::vector<char>& buffer) {
  for (;;) {
    const auto n = recv(d.from, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    // Writes block (the descriptors are blocking): fine for ping-pong, which is what this mode
    // measures; a stream that fills both directions at once could stall it.
    if (n <= 0 || !write_all(d.to, buffer.data(), static_cast<std::size_t>(n))) break;
    if (static_cast<std::size_t>(n) < buffer.size()) return true;
  }
  shutdown(d.to, SHUT_WR);
  shutdown(d.from, SHUT_RD);
  return false;
}

// One thread for every pair: epoll_wait without sleeping while events keep coming, for `spin_us`
// after the last one (negative: always), then blocking.
void epoll_loop(int epoll, long spin_us) {
  using Clock = std::chrono::steady_clock;
  std::vector<char> buffer(kBufferSize);
  std::vector<epoll_event> events(64);
  auto last_event = Clock::now();
  for (;;) {
    int timeout = 0;
    if (spin_us >= 0 && Clock::now() - last_event >= std::chrono::microseconds(spin_us)) {
      timeout = -1;
    }
    const int n = epoll_wait(epoll, events.data(), static_cast<int>(events.size()), timeout);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::perror("tcp-forwarder: epoll_wait");
      return;
    }
    if (n == 0) continue;
    for (int i = 0; i < n; ++i) {
      auto* d = static_cast<Direction*>(events[static_cast<std::size_t>(i)].data.ptr);
      if (!d->pair || forward_ready(*d, buffer)) continue;
      // Out of epoll before the descriptors can close (the last of a pair closes both).
      epoll_ctl(epoll, EPOLL_CTL_DEL, d->from, nullptr);
      d->pair.reset();
    }
    last_event = Clock::now();
  }
}

}  // namespace

int main(int argc, char** argv) {
  int max_pairs = 64;
  unsigned seconds = 600;
  std::string mode = "threads";
  long spin_us = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (key == "--max-pairs") max_pairs = std::atoi(argv[i + 1]);
    if (key == "--seconds") seconds = static_cast<unsigned>(std::atoi(argv[i + 1]));
    if (key == "--mode") mode = argv[i + 1];
    if (key == "--spin-us") spin_us = std::atol(argv[i + 1]);
  }
  if (mode != "threads" && mode != "epoll") {
    std::fprintf(stderr, "tcp-forwarder: --mode threads|epoll\n");
    return 2;
  }
  alarm(seconds);  // bounded lifetime: SIGALRM ends the process

  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener, 64) != 0) {
    std::perror("tcp-forwarder: bind/listen");
    return 1;
  }
  socklen_t length = sizeof address;
  getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  std::printf("listening %u\n", static_cast<unsigned>(ntohs(address.sin_port)));
  std::fflush(stdout);

  std::vector<std::thread> threads;
  const int epoll = mode == "epoll" ? epoll_create1(0) : -1;
  std::vector<std::unique_ptr<Direction>> directions;  // live until exit, as epoll points at them
  if (epoll >= 0) threads.emplace_back(epoll_loop, epoll, spin_us);
  for (int pairs = 0; pairs < max_pairs; ++pairs) {
    auto pair = std::make_shared<Pair>();
    pair->server = accept(listener, nullptr, nullptr);
    pair->client = accept(listener, nullptr, nullptr);
    if (pair->server < 0 || pair->client < 0) {
      std::perror("tcp-forwarder: accept");
      break;
    }
    setsockopt(pair->server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(pair->client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (epoll >= 0) {
      for (const auto& [from, to] :
           {std::pair{pair->client, pair->server}, std::pair{pair->server, pair->client}}) {
        directions.push_back(std::make_unique<Direction>(Direction{pair, from, to}));
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.ptr = directions.back().get();
        epoll_ctl(epoll, EPOLL_CTL_ADD, from, &event);
      }
      continue;
    }
    threads.emplace_back(pump, pair, pair->client, pair->server);
    threads.emplace_back(pump, pair, pair->server, pair->client);
  }
  for (auto& thread : threads) thread.join();
  close(listener);
  return 0;
}
