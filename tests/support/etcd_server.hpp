// Test support: Debian's etcd as a child process on free loopback ports with its own data
// folder, tuned so that a one-second lease works; stop and start again on the same ports.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "support/child_server.hpp"

namespace switchboard::test {

class EtcdServer {
public:
  /// Starts etcd and waits until it serves clients; throws when it does not.
  EtcdServer();
  ~EtcdServer();
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  /// http://127.0.0.1:PORT
  std::string url() const;
  /// Stops etcd (SIGTERM, then SIGKILL) and waits for its exit.
  void stop();
  /// Starts it again on the same ports and data; waits until it serves.
  void start();

  /// `etcdctl get --prefix PREFIX` as key and value pairs.
  std::vector<std::pair<std::string, std::string>> get_prefix(const std::string& prefix) const;
  /// Runs etcdctl with `args` against this server; its stdout, or throws on failure.
  std::string etcdctl(std::vector<std::string> args) const;

private:
  std::string data_dir_;
  std::uint16_t client_port_ = 0;
  std::uint16_t peer_port_ = 0;
  std::unique_ptr<ChildServer> process_;
};

/// A TCP port on 127.0.0.1 that was free a moment ago.
std::uint16_t free_loopback_port();

}  // namespace switchboard::test
