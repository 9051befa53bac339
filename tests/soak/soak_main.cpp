// soak_test: the fault-injection soak (driver mode) and its worker processes (--worker mode).
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <random>

#include "soak/driver.hpp"
#include "soak/worker.hpp"

namespace {

std::string self_path(const char* argv0) {
  char buffer[4096];
  const auto n = ::readlink("/proc/self/exe", buffer, sizeof buffer - 1);
  if (n <= 0) return argv0;
  return std::string(buffer, static_cast<std::size_t>(n));
}

}  // namespace

int main(int argc, char** argv) {
  using switchboard::soak::SoakOptions;
  // A worker that has died must not take the driver with it when the driver writes to it.
  ::signal(SIGPIPE, SIG_IGN);
  SoakOptions options;
  options.self = self_path(argv[0]);
  options.server = SWITCHBOARD_SERVER_BINARY;
  options.grpc_script = SWITCHBOARD_SOAK_GRPC_SCRIPT;
  if (const char* env = std::getenv("SWITCHBOARD_SOAK_S"); env != nullptr && *env != '\0') {
    options.duration_s = std::atoi(env);
  }
  options.seed = std::random_device{}();
  bool worker = false;
  switchboard::soak::WorkerArgs worker_args;
  std::vector<std::string> peer_specs;

  CLI::App app{"soak_test: relay soak under injected faults"};
  app.add_flag("--worker", worker, "run as a worker process (started by the driver)");
  app.add_option("--duration-s", options.duration_s,
                 "seconds of traffic and chaos (env SWITCHBOARD_SOAK_S)")
      ->capture_default_str();
  app.add_option("--warmup-s", options.warmup_s, "seconds of traffic without faults first")
      ->capture_default_str();
  app.add_option("--server", options.server, "switchboard-server binary")->capture_default_str();
  app.add_option("--channels", options.channels)->capture_default_str();
  app.add_option("--local-peers", options.local_peers, "peers in the driver process")
      ->capture_default_str();
  app.add_option("--workers", options.workers, "worker processes")->capture_default_str();
  app.add_option("--peers-per-worker", options.peers_per_worker)->capture_default_str();
  app.add_option("--grpc-senders", options.grpc_senders,
                 "processes sending through the gRPC gateway (Python client)")
      ->capture_default_str();
  app.add_option("--seed", options.seed)->capture_default_str();
  app.add_option("--max-body", options.max_body, "largest body in bytes")->capture_default_str();
  app.add_option("--deadline-ms", options.deadline_ms, "deadline of every traffic stream")
      ->capture_default_str();
  app.add_option("--rss-margin-mib", options.rss_margin_mib)->capture_default_str();
  app.add_option("--fd-margin", options.fd_margin)->capture_default_str();
  app.add_option("--port", worker_args.port, "worker: relay port");
  app.add_option("--peer", peer_specs, "worker: CHANNEL_INDEX:CHANNEL_UUID, one per peer");
  CLI11_PARSE(app, argc, argv);

  if (worker) {
    worker_args.seed = options.seed;
    worker_args.max_body = options.max_body;
    worker_args.deadline_ms = options.deadline_ms;
    for (const auto& spec : peer_specs) {
      const auto colon = spec.find(':');
      if (colon == std::string::npos) return 2;
      worker_args.channel_indexes.push_back(std::atoi(spec.substr(0, colon).c_str()));
      worker_args.channels.push_back(spec.substr(colon + 1));
    }
    return switchboard::soak::run_worker(worker_args);
  }
  return switchboard::soak::run_soak(options);
}
