// A command run per request: a keeper process that leads its group and runs the command with
// pipes; signalling and reaping without races; no orphans when the CLI dies.
#include "child_process.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <system_error>
#include <utility>

#include "signals.hpp"

extern char** environ;

namespace switchboard::cli {
namespace {

std::string variable_name(const std::string& entry) { return entry.substr(0, entry.find('=')); }

/// The current environment with `extra` added, each extra entry replacing its namesake.
std::vector<std::string> child_environment(const std::vector<std::string>& extra) {
  std::vector<std::string> names;
  names.reserve(extra.size());
  for (const auto& entry : extra) names.push_back(variable_name(entry));
  std::vector<std::string> result;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string text(*entry);
    bool replaced = false;
    for (const auto& name : names) replaced = replaced || variable_name(text) == name;
    if (!replaced) result.push_back(text);
  }
  result.insert(result.end(), extra.begin(), extra.end());
  return result;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

void write_raw(const char* text) noexcept {
  if (::write(STDERR_FILENO, text, std::strlen(text)) < 0) {
    // Nothing more to do in a child about to exit.
  }
}

// The signal the kernel sends the keeper when the thread that forked it dies (with the CLI).
constexpr int kOrphanedSignal = SIGHUP;

/// In the command, between fork and exec: async-signal-safe calls only.
[[noreturn]] void exec_command(char* const* argv, char** envp, const char* failure) noexcept {
  restore_signals_in_child();
  environ = envp;
  ::execvp(argv[0], argv);
  const int error = errno;
  write_raw(failure);
  write_raw(error == ENOENT ? "command not found\n"
                            : (error == EACCES ? "permission denied\n" : "cannot execute\n"));
  _exit(127);
}

/// Ends as the command ended: the same exit code, or death by the same signal.
[[noreturn]] void exit_like(int status) noexcept {
  if (WIFSIGNALED(status)) {
    const int signal_number = WTERMSIG(status);
    struct sigaction fallback {};
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    ::sigaction(signal_number, &fallback, nullptr);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, signal_number);
    ::sigprocmask(SIG_UNBLOCK, &only, nullptr);
    ::kill(::getpid(), signal_number);
    _exit(128 + signal_number);  // a signal that does not end a process
  }
  _exit(WEXITSTATUS(status));
}

/// The keeper: the leader of the command's process group, in the child between fork and exec
/// (async-signal-safe calls only). It runs the command in its group and waits. When the CLI
/// dies, even by SIGKILL, the kernel sends it kOrphanedSignal (PR_SET_PDEATHSIG) and it kills
/// the whole group, whatever the command started meanwhile. A command cannot do this for
/// itself: the death signal is not inherited by the processes it forks. The keeper keeps every
/// signal blocked, so the group's SIGTERM (terminate()) ends the command, then the keeper with
/// the command's own status; SIGKILL ends all at once.
[[noreturn]] void run_keeper(pid_t cli, int stdin_read, int stdout_write, char* const* argv,
                             char** envp, const char* failure) noexcept {
  ::setpgid(0, 0);
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  ::prctl(PR_SET_PDEATHSIG, kOrphanedSignal);
  // The CLI may have died before the line above: then nobody would send the signal.
  if (::getppid() != cli) _exit(127);
  if (::dup2(stdin_read, STDIN_FILENO) < 0 || ::dup2(stdout_write, STDOUT_FILENO) < 0) _exit(126);
  // Every other descriptor (the relay socket, other requests' pipes) stays with the parent:
  // a child holding the socket would keep a dead responder on the channel.
  ::close_range(3, UINT_MAX, 0);
  const pid_t command = ::fork();
  if (command < 0) _exit(126);
  if (command == 0) exec_command(argv, envp, failure);
  // The keeper's own ends of the pipes would keep them open after the command has closed its.
  ::close(STDIN_FILENO);
  ::close(STDOUT_FILENO);
  sigset_t awaited;
  sigemptyset(&awaited);
  sigaddset(&awaited, SIGCHLD);
  sigaddset(&awaited, kOrphanedSignal);
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(command, &status, WNOHANG);
    if (done == command) exit_like(status);
    if (done < 0 && errno != EINTR) _exit(126);
    if (::getppid() != cli) {
      ::kill(0, SIGKILL);  // the whole group, this keeper included
      _exit(137);
    }
    siginfo_t info{};
    (void)::sigwaitinfo(&awaited, &info);
  }
}

}  // namespace

ChildProcess::ChildProcess(const std::vector<std::string>& argv,
                           const std::vector<std::string>& extra_env) {
  // Everything the child needs is built before fork: after it only async-signal-safe calls.
  std::vector<std::string> args = argv;
  std::vector<std::string> env = child_environment(extra_env);
  const auto arg_pointers = pointers(args);
  auto env_pointers = pointers(env);
  const std::string failure = "switchboard: cannot run '" + argv.at(0) + "': ";

  int in[2];
  int out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  if (::pipe2(out, O_CLOEXEC) != 0) {
    const int error = errno;
    ::close(in[0]);
    ::close(in[1]);
    throw std::system_error(error, std::generic_category(), "pipe");
  }
  // The death signal follows the thread that forks: this one waits for the child (wait() or
  // the destructor) before it returns, so it outlives the child unless the CLI dies.
  const pid_t cli = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    run_keeper(cli, in[0], out[1], arg_pointers.data(), env_pointers.data(), failure.c_str());
  }
  const int fork_error = errno;
  // Also here: the group must exist before kill() may target it, whoever runs first.
  if (pid_ > 0) ::setpgid(pid_, pid_);
  ::close(in[0]);
  ::close(out[1]);
  stdin_ = in[1];
  stdout_ = out[0];
  if (pid_ < 0) {
    close_stdin();
    close_stdout();
    throw std::system_error(fork_error, std::generic_category(), "fork");
  }
}

ChildProcess::~ChildProcess() {
  close_stdin();
  close_stdout();
  if (pid_ > 0) {
    kill(SIGKILL);
    (void)wait();
  }
}

void ChildProcess::close_stdin() noexcept {
  if (stdin_ >= 0) ::close(std::exchange(stdin_, -1));
}

void ChildProcess::close_stdout() noexcept {
  if (stdout_ >= 0) ::close(std::exchange(stdout_, -1));
}

void ChildProcess::kill(int signal_number) noexcept {
  std::lock_guard lock(mutex_);
  if (pid_ > 0 && !reaped_) ::kill(-pid_, signal_number);
}

void ChildProcess::terminate(std::chrono::milliseconds grace) {
  std::unique_lock lock(mutex_);
  if (pid_ <= 0 || reaped_) return;
  ::kill(-pid_, SIGTERM);
  if (!reaped_signal_.wait_for(lock, grace, [&] { return reaped_; })) ::kill(-pid_, SIGKILL);
}

int ChildProcess::wait() {
  {
    std::lock_guard lock(mutex_);
    if (reaped_) return status_;
  }
  // Wait without reaping first: until waitpid() below the pid stays a zombie, so a concurrent
  // kill() cannot hit another process that reused it.
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) != 0 &&
         errno == EINTR) {
  }
  std::lock_guard lock(mutex_);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  signal_ = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  status_ = signal_ != 0 ? 128 + signal_ : WEXITSTATUS(status);
  reaped_signal_.notify_all();
  return status_;
}

}  // namespace switchboard::cli
