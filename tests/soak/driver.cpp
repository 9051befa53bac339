// Soak driver: the relay, the peers, the chaos loop and the end-of-run checks and report.
#include "soak/driver.hpp"

#include <dirent.h>
#include <fmt/format.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "soak/body.hpp"
#include "soak/ledger.hpp"
#include "soak/peer.hpp"
#include "soak/raw_faults.hpp"
#include "soak/worker.hpp"
#include "support/process.hpp"

namespace switchboard::soak {
namespace {

using std::chrono::milliseconds;

struct Resources {
  std::size_t rss = 0;  // bytes
  std::size_t fds = 0;
};

std::size_t status_kib(int pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) {
      std::istringstream in(line.substr(field.size()));
      std::size_t kib = 0;
      in >> kib;
      return kib;
    }
  }
  return 0;
}

Resources sample(int pid) {
  Resources r;
  r.rss = status_kib(pid, "VmRSS:") * 1024;
  const auto path = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* dir = ::opendir(path.c_str())) {
    while (const dirent* entry = ::readdir(dir)) r.fds += entry->d_name[0] != '.';
    ::closedir(dir);
  }
  return r;
}

double mib(std::size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

std::string join_counts(const std::map<std::string, std::uint64_t>& counts) {
  if (counts.empty()) return "none";
  std::string text;
  for (const auto& [name, count] : counts) {
    text += fmt::format("{}{} {}", text.empty() ? "" : ", ", name, count);
  }
  return text;
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes (relay-side state such as
/// descriptor counts has no event to wait on).
template <typename F>
bool poll_until(F condition, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(50));
  }
}

class Driver {
public:
  explicit Driver(const SoakOptions& options) : o_(options), rng_(options.seed) {}
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;
  // A run that ends by an exception (a peer that cannot reach a relay that died, say) still
  // stops its threads, so the error is reported instead of aborting the process.
  ~Driver() {
    raw_stop_ = true;
    if (raw_thread_.joinable()) raw_thread_.join();
    {
      std::lock_guard lock(watchdog_mutex_);
      finished_ = true;
    }
    watchdog_wake_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
  }
  int run();
  /// How the relay ended, when it is no longer running (for the report of a failed run).
  std::string relay_fate() const;

private:
  std::shared_ptr<SoakPeer> make_local(int channel_index);
  std::unique_ptr<WorkerProcess> make_worker(int slot);
  std::unique_ptr<WorkerProcess> make_grpc_sender(int slot);
  void chaos_step();
  void reap_frozen(bool respawn);
  void raw_fault_loop();
  bool probe_round_trip();
  void check_presence();
  void spawn_peers();
  /// Stops new streams and waits (bounded) for every stream in flight; returns the wait in ms.
  std::int64_t stop_and_drain(bool& drained);
  void leave_all();
  std::uint16_t port() const { return relay_->port(); }
  void violation(std::string text) {
    std::lock_guard lock(violations_mutex_);
    violations_.push_back(std::move(text));
  }

  SoakOptions o_;
  std::mt19937_64 rng_;
  Ledger ledger_;
  std::unique_ptr<test::ServerProcess> relay_;
  std::vector<Uuid> channels_;
  std::vector<std::shared_ptr<SoakPeer>> local_;
  std::vector<std::unique_ptr<WorkerProcess>> workers_;
  std::vector<std::unique_ptr<WorkerProcess>> grpc_senders_;
  std::uint16_t grpc_port_ = 0;
  std::vector<std::thread> aimed_requests_;
  std::atomic<int> aimed_deadline_hits_{0};
  int next_owner_ = 1;
  std::map<std::string, std::uint64_t> faults_;
  std::mutex faults_mutex_;
  std::atomic<bool> raw_stop_{false};
  std::mutex violations_mutex_;
  std::vector<std::string> violations_;
  Resources peak_;
  std::size_t relay_hwm_ = 0;
  // What the driver is doing, for the watchdog's message if the soak itself ever hangs.
  std::atomic<const char*> phase_{"starting"};
  std::mutex watchdog_mutex_;
  std::condition_variable watchdog_wake_;
  bool finished_ = false;
  std::thread watchdog_;
  std::thread raw_thread_;
  void start_watchdog(std::chrono::seconds bound);

  void count_fault(const std::string& kind) {
    std::lock_guard lock(faults_mutex_);
    ++faults_[kind];
  }
  void sample_peak() {
    const auto now = sample(relay_->pid());
    peak_.rss = std::max(peak_.rss, now.rss);
    peak_.fds = std::max(peak_.fds, now.fds);
  }
};

std::shared_ptr<SoakPeer> Driver::make_local(int channel_index) {
  PeerConfig config;
  config.port = port();
  config.channel = channels_[static_cast<std::size_t>(channel_index)];
  config.channel_index = channel_index;
  config.seed = rng_();
  config.max_body = o_.max_body;
  config.deadline = milliseconds(o_.deadline_ms);
  config.emit = [this](const std::string& line) { ledger_.apply(line, 0); };
  auto peer = std::make_shared<SoakPeer>(config);
  peer->start_traffic();
  return peer;
}

std::unique_ptr<WorkerProcess> Driver::make_worker(int slot) {
  WorkerArgs args;
  args.port = port();
  args.seed = rng_() % 1'000'000'000ULL;
  args.max_body = o_.max_body;
  args.deadline_ms = o_.deadline_ms;
  for (int j = 0; j < o_.peers_per_worker; ++j) {
    const int index = (slot * o_.peers_per_worker + j) % o_.channels;
    args.channel_indexes.push_back(index);
    args.channels.push_back(channels_[static_cast<std::size_t>(index)].to_string());
  }
  return std::make_unique<WorkerProcess>(worker_command(o_.self, args), next_owner_++, ledger_);
}

std::unique_ptr<WorkerProcess> Driver::make_grpc_sender(int slot) {
  std::vector<std::string> command{"/usr/bin/python3", o_.grpc_script,
                                   "--grpc",           fmt::format("127.0.0.1:{}", grpc_port_),
                                   "--seed",           std::to_string(rng_() % 1'000'000'000ULL),
                                   "--max-body",       std::to_string(o_.grpc_max_body),
                                   "--deadline-ms",    std::to_string(o_.deadline_ms)};
  for (int c = 0; c < o_.channels; ++c) {
    if (c % std::max(1, o_.grpc_senders) != slot % std::max(1, o_.grpc_senders)) continue;
    command.push_back("--peer");
    command.push_back(fmt::format("{}:{}", c, channels_[static_cast<std::size_t>(c)].to_string()));
  }
  return std::make_unique<WorkerProcess>(command, next_owner_++, ledger_);
}

void Driver::reap_frozen(bool respawn) {
  for (std::size_t slot = 0; slot < workers_.size(); ++slot) {
    auto& worker = workers_[slot];
    if (!worker || !worker->frozen || (respawn && Clock::now() < worker->kill_at)) continue;
    worker->signal(SIGKILL);
    if (worker->wait_exit(milliseconds(5000)) < 0) violation("a frozen worker did not die");
    worker.reset();
    if (respawn) worker = make_worker(static_cast<int>(slot));
  }
}

void Driver::chaos_step() {
  const auto pick = rng_() % 100;
  const auto slot = rng_() % workers_.size();
  auto& worker = workers_[slot];
  const bool worker_usable = worker && !worker->frozen && !worker->exited();
  if (pick < 15) {
    // Clean close of an in-process peer in the middle of its streams, then a newcomer.
    const auto i = rng_() % local_.size();
    auto old = std::move(local_[i]);
    old->close();
    old.reset();
    local_[i] = make_local(static_cast<int>(i % static_cast<std::size_t>(o_.channels)));
    count_fault("clean_close");
  } else if (pick < 30 && worker_usable) {
    ledger_.owner_dying(worker->owner());
    worker->command("rst");
    if (worker->wait_exit(milliseconds(5000)) < 0) violation("a worker ignored rst");
    worker = make_worker(static_cast<int>(slot));
    count_fault("rst_process");
  } else if (pick < 45 && worker_usable) {
    ledger_.owner_dying(worker->owner());
    worker->signal(SIGKILL);
    if (worker->wait_exit(milliseconds(5000)) < 0) violation("a killed worker did not exit");
    worker = make_worker(static_cast<int>(slot));
    count_fault("sigkill_process");
  } else if (pick < 53 && worker_usable) {
    // A host that vanishes without a FIN: only the keepalive can tell.
    ledger_.owner_dying(worker->owner());
    worker->signal(SIGSTOP);
    worker->frozen = true;
    worker->kill_at = Clock::now() + milliseconds(3 * o_.keepalive_ms);
    count_fault("sigstop_process");
  } else if (pick < 58 && !grpc_senders_.empty()) {
    // A gRPC sender dies mid-call: the gateway must cancel its streams at the responders.
    auto& sender = grpc_senders_[rng_() % grpc_senders_.size()];
    const auto sender_slot = static_cast<int>(&sender - grpc_senders_.data());
    ledger_.owner_dying(sender->owner());
    sender->signal(SIGKILL);
    if (sender->wait_exit(milliseconds(5000)) < 0) violation("a killed gRPC sender did not exit");
    sender = make_grpc_sender(sender_slot);
    count_fault("sigkill_grpc_sender");
  } else if (pick < 75) {
    const auto stall = milliseconds(1000 + rng_() % 3000);
    if (rng_() % 2 == 0 && worker_usable) {
      worker->command(fmt::format("stall {}", stall.count()));
    } else {
      local_[rng_() % local_.size()]->stall_reads(stall);
    }
    count_fault("stall_reader");
  } else {
    // A responder paused past the deadline of a request aimed at it.
    const auto c = rng_() % static_cast<std::size_t>(o_.channels);
    const auto peers_per_channel = local_.size() / static_cast<std::size_t>(o_.channels);
    if (peers_per_channel < 2) return;
    const auto r = c + static_cast<std::size_t>(o_.channels) * (rng_() % peers_per_channel);
    auto s = r + static_cast<std::size_t>(o_.channels);
    if (s >= local_.size()) s = c;
    auto responder = local_[r];
    auto sender = local_[s];
    responder->pause_responses(milliseconds(2500));
    const auto size = 1 + rng_() % 65536;
    aimed_requests_.emplace_back([this, sender, target = responder->id(), size] {
      if (sender->one_request(target, milliseconds(1000), size) == Status::deadline_exceeded) {
        ++aimed_deadline_hits_;
      }
    });
    count_fault("pause_responder");
  }
}

void Driver::raw_fault_loop() {
  RawFaultContext context;
  context.port = port();
  context.channels = channels_;
  context.handshake_timeout = milliseconds(o_.handshake_timeout_ms);
  context.ledger = &ledger_;
  std::mt19937_64 rng(o_.seed + 1);
  // Bounded by the stop flag; one fault takes at most about handshake timeout + 3 s.
  for (int i = 0; i < 100'000 && !raw_stop_; ++i) {
    std::vector<std::string> found;
    try {
      count_fault(run_raw_fault(context, rng, found));
    } catch (const std::exception& e) {
      found.push_back(fmt::format("raw fault failed: {}", e.what()));
    }
    for (auto& text : found) violation(std::move(text));
    std::this_thread::sleep_for(milliseconds(100 + rng() % 300));
  }
}

bool Driver::probe_round_trip() {
  try {
    client::ConnectOptions options;
    options.port = port();
    options.channel = Uuid::random();
    options.accept_requests = true;
    client::BlockingClient responder(options);
    responder.serve([](client::BlockingStream& stream) {
      for (int i = 0; i < 100'000; ++i) {
        const auto chunk = stream.read_chunk();
        if (chunk.size == 0 || !stream.write(chunk.bytes()).ok()) break;
      }
    });
    options.accept_requests = false;
    client::BlockingClient sender(options);
    std::vector<std::uint8_t> body(1 << 20);
    fill_body(body, 42);
    std::vector<std::uint8_t> response;
    client::StreamOptions stream_options;
    stream_options.deadline = milliseconds(10'000);
    const auto outcome = sender.send(client::Target::any(), body, response, stream_options);
    return outcome.ok() && response == body;
  } catch (const std::exception&) {
    return false;
  }
}

void Driver::check_presence() {
  const auto expected = ledger_.live_peers();
  for (int c = 0; c < o_.channels; ++c) {
    std::set<std::string> want;
    if (auto it = expected.find(c); it != expected.end()) want = it->second;
    client::ConnectOptions options;
    options.port = port();
    options.channel = channels_[static_cast<std::size_t>(c)];
    std::set<std::string> seen;
    try {
      client::BlockingClient probe(options);
      // Dead peers are already gone from the relay by now; the bound only absorbs event delay.
      poll_until(
          [&] {
            seen.clear();
            for (const auto& id : probe.peers()) seen.insert(id.to_string());
            return seen == want;
          },
          milliseconds(3 * o_.keepalive_ms + 2000));
    } catch (const std::exception& e) {
      violation(fmt::format("presence probe on channel {} failed: {}", c, e.what()));
      continue;
    }
    if (seen != want) {
      violation(fmt::format("presence on channel {}: relay shows {} peers, {} are live", c,
                            seen.size(), want.size()));
    }
  }
}

void Driver::spawn_peers() {
  for (int i = 0; i < o_.local_peers; ++i) local_.push_back(make_local(i % o_.channels));
  for (int w = 0; w < o_.workers; ++w) workers_.push_back(make_worker(w));
  if (grpc_port_ != 0) {
    for (int g = 0; g < o_.grpc_senders; ++g) grpc_senders_.push_back(make_grpc_sender(g));
  }
}

std::int64_t Driver::stop_and_drain(bool& drained) {
  for (auto& peer : local_) peer->stop_traffic();
  for (auto& worker : workers_) {
    if (worker) worker->command("stop");
  }
  for (auto& sender : grpc_senders_) sender->command("stop");
  for (auto& thread : aimed_requests_) thread.join();
  aimed_requests_.clear();
  const auto drain_start = Clock::now();
  drained = poll_until(
      [&] {
        sample_peak();
        return ledger_.unfinished() == 0;
      },
      milliseconds(o_.deadline_ms + o_.margin_ms));
  for (auto& peer : local_) peer->join_traffic();
  return std::chrono::duration_cast<milliseconds>(Clock::now() - drain_start).count();
}

void Driver::leave_all() {
  local_.clear();
  for (auto& worker : workers_) {
    if (!worker) continue;
    ledger_.owner_dying(worker->owner());
    worker->command("quit");
    const int code = worker->wait_exit(milliseconds(20'000));
    if (code != 0) {
      violation(fmt::format("worker {} (pid {}) exited with {} on quit{}", worker->owner(),
                            worker->pid(), code,
                            code > 128 ? fmt::format(" ({})", ::strsignal(code - 128)) : ""));
    }
    worker.reset();
  }
  workers_.clear();
  for (auto& sender : grpc_senders_) {
    sender->command("quit");
    const int code = sender->wait_exit(milliseconds(o_.deadline_ms + 15'000));
    if (code != 0) violation(fmt::format("a gRPC sender exited with {} on quit", code));
  }
  grpc_senders_.clear();
}

void Driver::start_watchdog(std::chrono::seconds bound) {
  watchdog_ = std::thread([this, bound] {
    std::unique_lock lock(watchdog_mutex_);
    if (watchdog_wake_.wait_for(lock, bound, [&] { return finished_; })) return;
    // A hang in a client or the relay must fail the test with a clue, not run into the CTest
    // timeout: say where, take the relay down (workers die with this process), exit.
    fmt::print("soak watchdog: no report after {} s, stuck in phase '{}'\n", bound.count(),
               phase_.load());
    std::fflush(stdout);
    if (relay_) ::kill(relay_->pid(), SIGKILL);
    std::_Exit(3);
  });
}

std::string Driver::relay_fate() const {
  if (!relay_) return "";
  siginfo_t info{};
  // WNOWAIT: look without reaping; the relay's owner still waits for it.
  if (::waitid(P_PID, static_cast<id_t>(relay_->pid()), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
      info.si_pid == 0) {
    return " (the relay is still running)";
  }
  if (info.si_code == CLD_EXITED) return fmt::format(" (the relay exited with {})", info.si_status);
  return fmt::format(" (the relay was killed by {})", ::strsignal(info.si_status));
}

int Driver::run() {
  relay_ = std::make_unique<test::ServerProcess>(
      o_.server,
      std::vector<std::string>{"--keepalive-ms", std::to_string(o_.keepalive_ms),
                               "--handshake-timeout-ms", std::to_string(o_.handshake_timeout_ms),
                               "--slow-consumer-timeout-ms", "2000", "--idle-timeout-ms", "8000",
                               "--drain-timeout-ms", "5000", "--log-level", "error",
                               // Every soak peer connects from 127.0.0.1, and reconnect churn
                               // is the point: the per-address throttle would distort it.
                               "--connect-rate-per-address", "0"});
  const int pid = relay_->pid();
  start_watchdog(std::chrono::seconds(o_.warmup_s + o_.duration_s + 180 +
                                      2 * (o_.deadline_ms + o_.margin_ms) / 1000));
  if (o_.grpc_senders > 0 && !o_.grpc_script.empty()) grpc_port_ = relay_->grpc_port();
  const Resources cold = sample(pid);
  peak_ = cold;
  for (int c = 0; c < o_.channels; ++c) channels_.push_back(Uuid::random());

  // Warm-up: the same peers and traffic without faults, then they leave. The start figures are
  // taken after it, because the allocator keeps the heap that full load once needed (glibc
  // returns little of it), which is not a leak; a leak grows with the chaos that follows.
  bool drained = true;
  phase_ = "warm-up";
  spawn_peers();
  std::this_thread::sleep_for(std::chrono::seconds(o_.warmup_s));
  stop_and_drain(drained);
  if (!drained) violation("streams still open after the warm-up");
  leave_all();
  poll_until([&] { return sample(pid).fds <= cold.fds; }, milliseconds(5000));
  const Resources start = sample(pid);

  phase_ = "chaos";
  spawn_peers();
  const auto chaos_end = Clock::now() + std::chrono::seconds(o_.duration_s);
  raw_thread_ = std::thread([this] { raw_fault_loop(); });
  // The chaos loop: one fault every 250 to 600 ms, bounded by the duration and a step count.
  for (int step = 0; step < 1'000'000 && Clock::now() < chaos_end; ++step) {
    std::this_thread::sleep_for(milliseconds(250 + rng_() % 350));
    reap_frozen(true);
    chaos_step();
    sample_peak();
  }
  phase_ = "drain";
  raw_stop_ = true;
  raw_thread_.join();
  reap_frozen(false);
  const auto drain_ms = stop_and_drain(drained);
  auto report = ledger_.check(milliseconds(o_.margin_ms));
  if (!drained)
    violation(
        fmt::format("{} stream sides still open after the drain bound", ledger_.unfinished()));
  const auto live_at_end = ledger_.live_peers();
  std::size_t live_count = 0;
  for (const auto& [c, peers] : live_at_end) live_count += peers.size();

  phase_ = "probe and presence";
  if (!probe_round_trip()) violation("the relay no longer answers a request after the chaos");
  check_presence();

  phase_ = "leave and resources";
  // The peers leave: in-process ones close, workers quit cleanly.
  leave_all();
  relay_hwm_ = status_kib(pid, "VmHWM:") * 1024;
  const auto rss_limit = start.rss + o_.rss_margin_mib * 1024 * 1024;
  const auto fd_limit = start.fds + o_.fd_margin;
  Resources end;
  poll_until(
      [&] {
        end = sample(pid);
        return end.fds <= fd_limit && end.rss <= rss_limit;
      },
      milliseconds(10'000));
  if (end.fds > fd_limit) {
    violation(fmt::format("relay descriptors {} at the end, start {} (+{} allowed)", end.fds,
                          start.fds, o_.fd_margin));
  }
  if (end.rss > rss_limit) {
    violation(fmt::format("relay RSS {:.1f} MiB at the end, start {:.1f} MiB (+{} MiB allowed)",
                          mib(end.rss), mib(start.rss), o_.rss_margin_mib));
  }
  phase_ = "relay shutdown";
  const int exit_code = relay_->stop(SIGTERM, milliseconds(15'000));
  if (exit_code != 0) violation(fmt::format("relay exit code on SIGTERM: {}", exit_code));

  {
    std::lock_guard lock(watchdog_mutex_);
    finished_ = true;
  }
  watchdog_wake_.notify_all();
  watchdog_.join();
  for (auto& text : violations_) report.violations.push_back(text);
  fmt::print("soak report (seed {})\n", o_.seed);
  fmt::print("  duration: {} s warm-up without faults, {} s of traffic and chaos, drain {} ms\n",
             o_.warmup_s, o_.duration_s, drain_ms);
  fmt::print(
      "  peers: {} at once ({} in-process + {} workers x {}), {} channels, {} joins over "
      "the run, {} live at the end\n",
      o_.local_peers + o_.workers * o_.peers_per_worker, o_.local_peers, o_.workers,
      o_.peers_per_worker, o_.channels, ledger_.joins(), live_count);
  fmt::print("  gRPC senders through the gateway: {}\n", grpc_port_ != 0 ? o_.grpc_senders : 0);
  fmt::print("  streams: {} opened; completed OK: {}\n", report.streams,
             join_counts(report.ok_by_kind));
  fmt::print("  failed (sender side): {}\n", join_counts(report.failed_by_status));
  fmt::print("  receiver sides: {} OK; failed: {}\n", report.receiver_sides_ok,
             join_counts(report.receiver_failed_by_status));
  fmt::print("  sides lost with their killed process: {}\n", report.died_sides);
  fmt::print("  live peers closed by the relay: {}\n", join_counts(ledger_.relay_closes()));
  fmt::print("  bytes verified: {} ({:.2f} GiB)\n", report.bytes_verified,
             static_cast<double>(report.bytes_verified) / (1024.0 * 1024.0 * 1024.0));
  fmt::print("  faults injected: {}\n", join_counts(faults_));
  fmt::print("  aimed requests to paused responders ending DEADLINE_EXCEEDED: {}\n",
             aimed_deadline_hits_.load());
  fmt::print(
      "  relay RSS MiB cold/start/peak/end: {:.1f}/{:.1f}/{:.1f}/{:.1f} (VmHWM {:.1f}; "
      "start is after the warm-up; end allowed start + {} MiB)\n",
      mib(cold.rss), mib(start.rss), mib(peak_.rss), mib(end.rss), mib(relay_hwm_),
      o_.rss_margin_mib);
  fmt::print("  relay fds cold/start/peak/end: {}/{}/{}/{} (end allowed start + {})\n", cold.fds,
             start.fds, peak_.fds, end.fds, o_.fd_margin);
  fmt::print("  relay exit code on SIGTERM: {}\n", exit_code);
  fmt::print("  violations: {}\n", report.violations.size());
  for (const auto& text : report.violations) fmt::print("    {}\n", text);
  std::fflush(stdout);
  return report.violations.empty() ? 0 : 1;
}

}  // namespace

int run_soak(const SoakOptions& options) {
  Driver driver(options);
  try {
    return driver.run();
  } catch (const std::exception& e) {
    fmt::print(stderr, "soak failed to run: {}{}\n", e.what(), driver.relay_fate());
    return 2;
  }
}

}  // namespace switchboard::soak
