// Soak worker processes: the child's command loop and the parent's spawn, pipe reader and reaping.
#include "soak/worker.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "soak/peer.hpp"

namespace switchboard::soak {
namespace {

/// Writes one line with one write(2): lines under PIPE_BUF never interleave between threads.
void write_line(const std::string& line) {
  static std::mutex mutex;
  const std::string framed = line + "\n";
  std::lock_guard lock(mutex);
  std::size_t done = 0;
  for (int attempt = 0; attempt < 100 && done < framed.size(); ++attempt) {
    const auto n = ::write(STDOUT_FILENO, framed.data() + done, framed.size() - done);
    if (n <= 0) return;  // the parent is gone; nothing to report to
    done += static_cast<std::size_t>(n);
  }
}

/// Makes every TCP connection to the relay close abortively (RST) when the process ends.
void arm_abortive_close(std::uint16_t relay_port) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return;
  while (const dirent* entry = ::readdir(dir)) {
    const int fd = std::atoi(entry->d_name);
    if (fd <= 2) continue;
    sockaddr_in address{};
    socklen_t length = sizeof address;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) continue;
    if (address.sin_family != AF_INET || ntohs(address.sin_port) != relay_port) continue;
    linger option{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, sizeof option);
  }
  ::closedir(dir);
}

}  // namespace

int run_worker(const WorkerArgs& args) {
  // A worker never outlives the driver, whatever happens to the driver.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Workers obey only their stdin, SIGKILL and SIGSTOP. On a shared machine with a small pid
  // space, a stray SIGTERM meant for a reused pid must not pass for a relay failure.
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGINT, SIG_IGN);
  std::vector<std::unique_ptr<SoakPeer>> peers;
  for (std::size_t i = 0; i < args.channels.size(); ++i) {
    PeerConfig config;
    config.port = args.port;
    config.channel = *Uuid::parse(args.channels[i]);
    config.channel_index = args.channel_indexes[i];
    config.seed = args.seed * 1000 + i;
    config.max_body = args.max_body;
    config.deadline = std::chrono::milliseconds(args.deadline_ms);
    config.emit = write_line;
    try {
      peers.push_back(std::make_unique<SoakPeer>(config));
    } catch (const std::exception& e) {
      write_line(fmt::format("X worker peer failed to join: {}", e.what()));
    }
  }
  for (auto& peer : peers) peer->start_traffic();
  char buffer[256];
  // One command per line; the parent sends a few hundred at most in a long run.
  for (int count = 0; count < 1'000'000 && std::fgets(buffer, sizeof buffer, stdin) != nullptr;
       ++count) {
    const std::string line(buffer);
    long long ms = 0;
    if (std::sscanf(buffer, "stall %lld", &ms) == 1) {
      for (auto& peer : peers) peer->stall_reads(std::chrono::milliseconds(ms));
    } else if (std::sscanf(buffer, "pause %lld", &ms) == 1) {
      for (auto& peer : peers) peer->pause_responses(std::chrono::milliseconds(ms));
    } else if (line.rfind("stop", 0) == 0) {
      for (auto& peer : peers) peer->stop_traffic();
    } else if (line.rfind("rst", 0) == 0) {
      arm_abortive_close(args.port);
      std::_Exit(0);  // the kernel closes every socket, with RST: no goodbye reaches the relay
    } else if (line.rfind("quit", 0) == 0) {
      break;
    }
  }
  for (auto& peer : peers) peer->stop_traffic();
  for (auto& peer : peers) peer->close();
  peers.clear();
  return 0;
}

std::vector<std::string> worker_command(const std::string& self, const WorkerArgs& args) {
  std::vector<std::string> command{self,
                                   "--worker",
                                   "--port",
                                   std::to_string(args.port),
                                   "--seed",
                                   std::to_string(args.seed),
                                   "--max-body",
                                   std::to_string(args.max_body),
                                   "--deadline-ms",
                                   std::to_string(args.deadline_ms)};
  for (std::size_t i = 0; i < args.channels.size(); ++i) {
    command.push_back("--peer");
    command.push_back(fmt::format("{}:{}", args.channel_indexes[i], args.channels[i]));
  }
  return command;
}

WorkerProcess::WorkerProcess(std::vector<std::string> argv_text, int owner, Ledger& ledger)
    : owner_(owner) {
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  int to_child[2];
  int from_child[2];
  // Close-on-exec, so that no other worker holds these pipes open and hides an exit.
  if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(to_child[0], STDIN_FILENO);
    ::dup2(from_child[1], STDOUT_FILENO);
    ::execv(argv[0], argv.data());
    std::_Exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  stdin_fd_ = to_child[1];
  const int out_fd = from_child[0];
  reader_ = std::thread([this, out_fd, &ledger] {
    FILE* stream = ::fdopen(out_fd, "r");
    char line[1024];
    // Ends at the child's exit (end of file); each line is one event.
    while (std::fgets(line, sizeof line, stream) != nullptr) {
      std::string text(line);
      if (!text.empty() && text.back() == '\n') text.pop_back();
      ledger.apply(text, owner_);
    }
    std::fclose(stream);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    ledger.owner_died(owner_);
    exited_ = true;
  });
}

WorkerProcess::~WorkerProcess() {
  if (!exited_) ::kill(pid_, SIGKILL);
  if (reader_.joinable()) reader_.join();
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
}

void WorkerProcess::command(const std::string& line) {
  if (exited_ || stdin_fd_ < 0) return;
  const std::string framed = line + "\n";
  (void)!::write(stdin_fd_, framed.data(), framed.size());
}

void WorkerProcess::signal(int sig) {
  if (!exited_) ::kill(pid_, sig);
}

int WorkerProcess::wait_exit(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!exited_ && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return exited_ ? exit_code_.load() : -1;
}

}  // namespace switchboard::soak
