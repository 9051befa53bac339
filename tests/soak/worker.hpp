// Soak worker processes: peers living in a child process so that the chaos loop can kill them
// (SIGKILL, SIGSTOP, or an abortive close with RST), and the parent's handle on each child.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "soak/ledger.hpp"

namespace switchboard::soak {

struct WorkerArgs {
  std::uint16_t port = 0;
  std::vector<std::string> channels;  // UUID text, one per peer of the worker
  std::vector<int> channel_indexes;
  std::uint64_t seed = 0;
  std::size_t max_body = 0;
  std::int64_t deadline_ms = 0;
};

/// The child side: runs the peers, reports event lines on stdout, obeys commands on stdin
/// ("stall MS", "pause MS", "stop", "rst", "quit"; end of input means quit). Returns the exit code.
int run_worker(const WorkerArgs& args);

/// The command line of a native worker: `self --worker ...`.
std::vector<std::string> worker_command(const std::string& self, const WorkerArgs& args);

/// The parent side of one worker process (a native worker or the gRPC sender script).
class WorkerProcess {
public:
  /// Starts `command`; its event lines go to `ledger` under owner id `owner`.
  WorkerProcess(std::vector<std::string> command, int owner, Ledger& ledger);
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  void command(const std::string& line);
  void signal(int sig);
  /// Waits up to `timeout` for the exit; returns the exit code, 128+N for signal N, -1 on
  /// timeout.
  int wait_exit(std::chrono::milliseconds timeout);
  bool exited() const { return exited_; }
  int owner() const { return owner_; }
  pid_t pid() const { return pid_; }

  bool frozen = false;
  std::chrono::steady_clock::time_point kill_at{};

private:
  pid_t pid_ = -1;
  int owner_ = 0;
  int stdin_fd_ = -1;
  std::thread reader_;
  std::atomic<bool> exited_{false};
  std::atomic<int> exit_code_{-1};
};

}  // namespace switchboard::soak
