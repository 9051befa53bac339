// A relay of a test cluster: a real switchboard-server process on 127.0.0.N joined to a test
// etcd, and what its admin endpoint says about it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/child_server.hpp"
#include "support/etcd_server.hpp"
#include "switchboard/wire/uuid.hpp"

namespace switchboard::test {

class Relay {
public:
  /// Relay n ("rN" on 127.0.0.N) with lease TTL `ttl`; `extra` options are appended.
  Relay(const EtcdServer& etcd, int n, const std::string& ttl,
        const std::vector<std::string>& extra = {})
      : Relay(etcd.url(), n, ttl, extra) {}
  /// The same, reaching etcd at `etcd_url` (a proxy in front of it, say).
  Relay(std::string etcd_url, int n, const std::string& ttl,
        const std::vector<std::string>& extra = {})
      : id_("r" + std::to_string(n)),
        host_("127.0.0." + std::to_string(n)),
        etcd_(std::move(etcd_url)),
        ttl_(ttl),
        extra_(extra) {
    start();
  }

  /// Starts the relay again, with the same node id, addresses and ports, once its process has
  /// ended (one still running is killed first).
  void restart() {
    process_.reset();
    start();
  }

  std::optional<double> metric(const std::string& series) const {
    const auto response = http_request(admin_, "GET", "/metrics");
    if (response.status != 200) return std::nullopt;
    return metric_value(response.body, series);
  }
  double members() const { return metric("switchboard_cluster_members").value_or(-1); }
  double revision() const { return metric("switchboard_cluster_view_revision").value_or(-1); }
  HttpResponse health() const { return http_request(admin_, "GET", "/healthz"); }
  /// Whether /channels lists `channel` with at least one peer (nullopt: no answer).
  std::optional<bool> serves(const switchboard::Uuid& channel) const {
    const auto response = http_request(admin_, "GET", "/channels");
    if (response.status != 200) return std::nullopt;
    return response.body.find("\"id\":\"" + channel.to_string() + "\",\"peers\":") !=
           std::string::npos;
  }
  std::string cluster_json() const { return http_request(admin_, "GET", "/cluster").body; }
  /// The lease id as /cluster shows it (hex).
  std::string lease() const {
    const auto json = cluster_json();
    const auto at = json.find("\"lease\":\"");
    if (at == std::string::npos) return {};
    const auto start = at + 9;
    return json.substr(start, json.find('"', start) - start);
  }

  ChildServer& process() { return *process_; }
  std::uint16_t admin() const { return admin_; }
  const std::string& id() const { return id_; }
  const std::string& native() const { return native_; }
  const std::string& host() const { return host_; }
  const std::string& grpc() const { return grpc_; }
  std::uint16_t port() const { return port_; }

private:
  // Ports 0 (the first start) let the system pick; a restart binds the same ones again.
  void start() {
    const auto& host = host_;
    std::vector<std::string> args{"--listen",
                                  host + ":" + std::to_string(port_),
                                  "--grpc-listen",
                                  host + ":" + std::to_string(grpc_port_),
                                  "--admin-listen",
                                  "127.0.0.1:" + std::to_string(admin_),
                                  "--admin-introspection",
                                  "--threads",
                                  "1",
                                  "--cluster-etcd",
                                  etcd_,
                                  "--node-id",
                                  id_,
                                  "--cluster-lease-ttl",
                                  ttl_,
                                  "--drain-timeout",
                                  "5s"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    process_ = std::make_unique<ChildServer>(SWITCHBOARD_SERVER_BINARY, std::move(args));
    EXPECT_TRUE(process_->wait_listening(true)) << process_->err();
    admin_ = process_->port("admin");
    port_ = process_->port("core");
    grpc_port_ = process_->port("grpc");
    native_ = host + ":" + std::to_string(port_);
    grpc_ = host + ":" + std::to_string(grpc_port_);
  }

  std::string id_;
  std::string host_;
  std::string etcd_;
  std::string ttl_;
  std::vector<std::string> extra_;
  std::string native_;
  std::string grpc_;
  std::uint16_t port_ = 0;
  std::uint16_t grpc_port_ = 0;
  std::uint16_t admin_ = 0;
  std::unique_ptr<ChildServer> process_;
};

}  // namespace switchboard::test
