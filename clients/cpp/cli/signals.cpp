// Signal handling for the CLI: blocked signals taken by a sigwait() thread.
#include "signals.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

namespace switchboard::cli {
namespace {

sigset_t termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void block_signals() {
  const sigset_t set = termination_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, nullptr);
}

void restore_signals_in_child() noexcept {
  // Both the blocked mask and ignored dispositions survive exec; the command must not inherit
  // them (it should die of SIGPIPE and stop on SIGTERM like any program).
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  sigemptyset(&fallback.sa_mask);
  sigaction(SIGPIPE, &fallback, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
}

SignalWatcher::SignalWatcher(std::function<void(int)> on_signal)
    : on_signal_(std::move(on_signal)), thread_([this] { run(); }) {}

SignalWatcher::~SignalWatcher() {
  stopping_ = true;
  // Directed at the watcher thread, where it is blocked: sigwait() returns and sees stopping_.
  pthread_kill(thread_.native_handle(), SIGTERM);
  thread_.join();
}

void SignalWatcher::run() {
  const sigset_t set = termination_signals();
  for (;;) {
    int signal_number = 0;
    if (sigwait(&set, &signal_number) != 0) continue;
    if (stopping_) return;
    if (received_.exchange(signal_number) != 0) _exit(128 + signal_number);
    on_signal_(signal_number);
  }
}

}  // namespace switchboard::cli
