// Child-process relay for tests that need the real binary: signals, exit codes, memory.
#include "support/process.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace switchboard::test {
namespace {

std::size_t status_field(int pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) {
      std::istringstream fields(line.substr(field.size()));
      std::size_t kib = 0;
      fields >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

}  // namespace

struct ServerProcess::GrpcLine {
  std::mutex mutex;
  std::condition_variable changed;
  std::uint16_t port = 0;
  bool ended = false;  // stdout closed
};

ServerProcess::ServerProcess(const std::string& binary, std::vector<std::string> args,
                             std::uint16_t core_port) {
  const std::string listen = "127.0.0.1:" + std::to_string(core_port);
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    std::vector<std::string> all{binary,        "--listen",       listen,       "--grpc-listen",
                                 "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    std::_Exit(127);
  }
  ::close(out[1]);
  // The relay prints its address once bound; reading the line is the readiness signal.
  FILE* stream = ::fdopen(out[0], "r");
  char line[256];
  while (std::fgets(line, sizeof line, stream) != nullptr) {
    unsigned a = 0, b = 0, c = 0, d = 0, port = 0;
    if (std::sscanf(line, "listening core %u.%u.%u.%u:%u", &a, &b, &c, &d, &port) == 5) {
      port_ = static_cast<std::uint16_t>(port);
      break;
    }
  }
  // Keep draining stdout in the background so the child never blocks on a full pipe; the gRPC
  // address line follows the core one.
  grpc_ = std::make_shared<GrpcLine>();
  std::thread([stream, grpc = grpc_] {
    char sink[256];
    while (std::fgets(sink, sizeof sink, stream) != nullptr) {
      unsigned a = 0, b = 0, c = 0, d = 0, port = 0;
      if (std::sscanf(sink, "listening grpc %u.%u.%u.%u:%u", &a, &b, &c, &d, &port) == 5) {
        std::lock_guard lock(grpc->mutex);
        grpc->port = static_cast<std::uint16_t>(port);
        grpc->changed.notify_all();
      }
    }
    std::fclose(stream);
    std::lock_guard lock(grpc->mutex);
    grpc->ended = true;
    grpc->changed.notify_all();
  }).detach();
  if (port_ == 0) {
    stop(SIGKILL);
    throw std::runtime_error("relay did not report its port");
  }
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) stop(SIGKILL);
}

int ServerProcess::stop(int signal, std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, signal);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const int done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

std::uint16_t ServerProcess::grpc_port(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(grpc_->mutex);
  grpc_->changed.wait_for(lock, timeout, [&] { return grpc_->port != 0 || grpc_->ended; });
  return grpc_->port;
}

std::size_t ServerProcess::peak_rss() const { return status_field(pid_, "VmHWM:"); }
std::size_t ServerProcess::rss() const { return status_field(pid_, "VmRSS:"); }

}  // namespace switchboard::test
