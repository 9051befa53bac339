// The switchboard subcommands: their options and entry points (each returns the exit code).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"
#include "progress.hpp"

namespace switchboard::cli {

struct RespondOptions {
  std::string channel;
  bool echo = false;
  bool reconnect = false;
  std::vector<std::string> command;  ///< after `--`: run per request
};

struct SendOptions {
  std::string channel;
  std::string to;  ///< empty: any responder
  std::uint32_t deadline_ms = 0;
  std::uint32_t idle_timeout_ms = 0;
  std::vector<std::string> meta;  ///< key=value
  ProgressFlags progress;
};

struct BroadcastOptions {
  std::string channel;
  ProgressFlags progress;
};

struct ListenOptions {
  std::string channel;
  bool reconnect = false;
  std::uint64_t count = 0;  ///< 0: until stopped
  ProgressFlags progress;
};

struct PeersOptions {
  std::string channel;
  bool watch = false;
  bool reconnect = false;
};

struct PingOptions {
  std::string channel;  ///< empty: a fresh random channel, so no peer sees the probe
  std::uint32_t timeout_ms = 3000;
};

/// Empty when `entries` (key=value each) form valid request metadata, else the reason.
std::string check_metadata(const std::vector<std::string>& entries);

int run_respond(const GlobalOptions& global, const RespondOptions& options);
int run_send(const GlobalOptions& global, const SendOptions& options);
int run_broadcast(const GlobalOptions& global, const BroadcastOptions& options);
int run_listen(const GlobalOptions& global, const ListenOptions& options);
int run_peers(const GlobalOptions& global, const PeersOptions& options);
int run_ping(const GlobalOptions& global, const PingOptions& options);
int run_uuid();

}  // namespace switchboard::cli
