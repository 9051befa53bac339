// Soak driver: starts the relay, runs peers in this process and in worker processes, injects
// faults for the configured duration, then checks the ledger, presence and the relay's resources.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace switchboard::soak {

struct SoakOptions {
  std::string self;    // this binary, re-executed for worker processes
  std::string server;  // the switchboard-server binary
  int duration_s = 60;
  int warmup_s = 5;  // traffic without faults before the start figures are taken
  int channels = 6;
  int local_peers = 24;
  int workers = 6;
  int peers_per_worker = 5;
  int grpc_senders = 2;     // Python processes sending through the gRPC gateway (0: none)
  std::string grpc_script;  // tests/soak/grpc_sender.py
  std::size_t grpc_max_body = 1024 * 1024;
  std::uint64_t seed = 0;
  std::size_t max_body = 8 * 1024 * 1024;
  std::int64_t deadline_ms = 15'000;
  std::int64_t keepalive_ms = 1'000;
  std::int64_t handshake_timeout_ms = 2'000;
  std::int64_t margin_ms = 5'000;   // allowed beyond a stream's deadline before it counts as hung
  std::size_t rss_margin_mib = 16;  // relay RSS at the end may exceed the start by this much
  std::size_t fd_margin = 2;        // relay descriptors at the end may exceed the start by this
};

/// Runs the whole soak and prints its report; returns 0 when no check was violated.
int run_soak(const SoakOptions& options);

}  // namespace switchboard::soak
