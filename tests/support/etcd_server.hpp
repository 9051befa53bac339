// Test support: Debian's etcd as a child process on free loopback ports with its own data
// folder, tuned so that a one-second lease works; stop and start again on the same ports.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "support/child_server.hpp"

namespace switchboard::test {

/// How the test etcd serves clients: plain http by default.
struct EtcdOptions {
  /// TLS on the client port (https URLs): etcd's certificate and key.
  std::string cert_file;
  std::string key_file;
  /// The CA etcd trusts for client certificates and etcdctl trusts for etcd's.
  std::string ca_file;
  /// etcd asks every client for a certificate `ca_file` signed (--client-cert-auth).
  bool client_cert_auth = false;
  /// The certificate and key etcdctl presents (with client_cert_auth).
  std::string ctl_cert_file;
  std::string ctl_key_file;
};

class EtcdServer {
public:
  /// Starts etcd and waits until it serves clients; throws when it does not.
  explicit EtcdServer(EtcdOptions options = {});
  ~EtcdServer();
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  /// http://127.0.0.1:PORT, or https:// with TLS.
  std::string url() const;
  /// etcdctl authenticates as "USER:PASSWORD" from now on (empty: not at all).
  void set_etcdctl_user(std::string user_and_password) { ctl_user_ = std::move(user_and_password); }
  /// Stops etcd (SIGTERM, then SIGKILL) and waits for its exit.
  void stop();
  /// Starts it again on the same ports and data; waits until it serves.
  void start();

  /// `etcdctl get --prefix PREFIX` as key and value pairs.
  std::vector<std::pair<std::string, std::string>> get_prefix(const std::string& prefix) const;
  /// Runs etcdctl with `args` against this server; its stdout, or throws on failure.
  std::string etcdctl(std::vector<std::string> args) const;

private:
  EtcdOptions options_;
  std::string ctl_user_;
  std::string data_dir_;
  std::uint16_t client_port_ = 0;
  std::uint16_t peer_port_ = 0;
  std::unique_ptr<ChildServer> process_;
};

/// A TCP port on 127.0.0.1 that was free a moment ago.
std::uint16_t free_loopback_port();

}  // namespace switchboard::test
