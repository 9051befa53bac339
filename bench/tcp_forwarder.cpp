// tcp-forwarder: the baseline relay; pairs accepted connections (first = server side) and copies
// bytes both ways with one blocking thread per direction and a 256 KiB buffer.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
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

}  // namespace

int main(int argc, char** argv) {
  int max_pairs = 64;
  unsigned seconds = 600;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (key == "--max-pairs") max_pairs = std::atoi(argv[i + 1]);
    if (key == "--seconds") seconds = static_cast<unsigned>(std::atoi(argv[i + 1]));
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
    threads.emplace_back(pump, pair, pair->client, pair->server);
    threads.emplace_back(pump, pair, pair->server, pair->client);
  }
  for (auto& thread : threads) thread.join();
  close(listener);
  return 0;
}
