// etcd on loopback for the cluster tests.
#include "support/etcd_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <stdexcept>

namespace switchboard::test {
namespace {

constexpr const char* kEtcd = "/usr/bin/etcd";
constexpr const char* kEtcdctl = "/usr/bin/etcdctl";

}  // namespace

std::uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

EtcdServer::EtcdServer(EtcdOptions options) : options_(std::move(options)) {
  if (::access(kEtcd, X_OK) != 0) {
    throw std::runtime_error("etcd is not installed (scripts/setup.sh installs etcd-server)");
  }
  char pattern[] = "/tmp/switchboard-etcd-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
  data_dir_ = pattern;
  // A port free a moment ago can be taken before etcd binds it: by another test's listener, or
  // as the local port of any outgoing connection on the machine. Only then, new ports.
  for (int attempt = 1;; ++attempt) {
    client_port_ = free_loopback_port();
    peer_port_ = free_loopback_port();
    try {
      start();
      return;
    } catch (const std::runtime_error& e) {
      const bool taken = std::string(e.what()).find("address already in use") != std::string::npos;
      if (!taken || attempt == 3) throw;
      std::error_code ignored;
      std::filesystem::remove_all(data_dir_ + "/data", ignored);  // made for the old ports
    }
  }
}

EtcdServer::~EtcdServer() {
  process_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(data_dir_, ignored);
}

std::string EtcdServer::url() const {
  return (options_.cert_file.empty() ? "http://127.0.0.1:" : "https://127.0.0.1:") +
         std::to_string(client_port_);
}

void EtcdServer::start() {
  const auto peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  // A heartbeat of 50 ms and an election timeout of 500 ms let etcd keep a one-second lease.
  std::vector<std::string> args{"--name",
                                "test",
                                "--data-dir",
                                data_dir_ + "/data",
                                "--listen-client-urls",
                                url(),
                                "--advertise-client-urls",
                                url(),
                                "--listen-peer-urls",
                                peer,
                                "--initial-advertise-peer-urls",
                                peer,
                                "--initial-cluster",
                                "test=" + peer,
                                "--heartbeat-interval",
                                "50",
                                "--election-timeout",
                                "500"};
  if (!options_.cert_file.empty()) {
    args.insert(args.end(), {"--cert-file", options_.cert_file, "--key-file", options_.key_file});
  }
  if (options_.client_cert_auth) {
    args.insert(args.end(), {"--client-cert-auth", "--trusted-ca-file", options_.ca_file});
  }
  process_ = std::make_unique<ChildServer>(kEtcd, std::move(args));
  if (!process_->wait_for_output("ready to serve client requests", std::chrono::seconds(20))) {
    throw std::runtime_error("etcd did not start: " + process_->err());
  }
}

void EtcdServer::stop() {
  if (!process_) return;
  process_->signal(SIGTERM);
  if (!process_->wait_exit(std::chrono::seconds(10))) {
    process_->signal(SIGKILL);
    (void)process_->wait_exit(std::chrono::seconds(10));
  }
  process_.reset();
}

std::string EtcdServer::etcdctl(std::vector<std::string> args) const {
  args.insert(args.begin(), "--endpoints=" + url());
  if (!options_.ca_file.empty()) args.push_back("--cacert=" + options_.ca_file);
  if (!options_.ctl_cert_file.empty()) {
    args.push_back("--cert=" + options_.ctl_cert_file);
    args.push_back("--key=" + options_.ctl_key_file);
  }
  if (!ctl_user_.empty()) args.push_back("--user=" + ctl_user_);
  const auto result = run_server(kEtcdctl, std::move(args), {{"ETCDCTL_API", "3"}});
  if (result.exit_code != 0) throw std::runtime_error("etcdctl failed: " + result.err);
  return result.out;
}

std::vector<std::pair<std::string, std::string>> EtcdServer::get_prefix(
    const std::string& prefix) const {
  std::istringstream lines(etcdctl({"get", "--prefix", prefix}));
  std::vector<std::pair<std::string, std::string>> out;
  std::string key;
  std::string value;
  while (std::getline(lines, key) && std::getline(lines, value)) out.emplace_back(key, value);
  return out;
}

}  // namespace switchboard::test
