// A command run per request: fork + execvp with the child's stdin and stdout on pipes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

namespace switchboard::cli {

/// One command, run by a keeper process that leads the command's process group (so that
/// signals reach whatever the command started too) and kills that group when the CLI dies,
/// even by SIGKILL (PR_SET_PDEATHSIG). The death signal fires when the *thread* that made the
/// object ends: make and destroy the object on the same thread, which must outlive the child
/// (wait() or the destructor blocks until it is reaped). stdin and stdout are pipes owned by
/// this object; stderr is inherited.
/// Thread-safety: kill() and terminate() may be called from any thread, concurrently with
/// wait(); each pipe end is used by one thread at a time.
class ChildProcess {
public:
  /// Starts `argv[0]` (searched in PATH) with the current environment plus `extra_env`
  /// ("NAME=value" entries, replacing variables of the same name). Throws std::system_error
  /// when pipes or fork fail; a command that cannot be executed exits with status 127.
  ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env);
  /// Kills (SIGKILL) and reaps a child still running, closes the pipes.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  /// Write end of the child's stdin, or -1 once closed.
  int stdin_fd() const noexcept { return stdin_; }
  /// Read end of the child's stdout, or -1 once closed.
  int stdout_fd() const noexcept { return stdout_; }
  void close_stdin() noexcept;
  void close_stdout() noexcept;

  /// Sends `signal_number` to the child's process group unless the child has been reaped
  /// (never signals a recycled pid).
  void kill(int signal_number) noexcept;
  /// SIGTERM, then SIGKILL if the child has not been reaped by wait() within `grace`.
  void terminate(std::chrono::milliseconds grace);
  /// Waits for the command to exit and reaps its keeper. Returns the command's exit code, or
  /// 128 + the signal that killed it (the shell's convention).
  int wait();
  /// After wait(): the signal that killed the child, or 0 if it exited.
  int signal() const noexcept { return signal_; }

private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  std::mutex mutex_;
  std::condition_variable reaped_signal_;
  bool reaped_ = false;
  int status_ = 0;
  int signal_ = 0;
};

}  // namespace switchboard::cli
