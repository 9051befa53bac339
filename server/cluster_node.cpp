// The cluster node on the etcd directory; builds without gRPC have no etcd client and refuse.
#include "server/cluster_node.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#if SWITCHBOARD_WITH_GRPC
#include "cluster/etcd_directory.hpp"
#endif

namespace switchboard::core {

std::string default_node_id() {
  char host[256] = {};
  std::string name = ::gethostname(host, sizeof host - 1) == 0 ? host : "relay";
  // Only characters a node id may hold.
  for (auto& c : name) {
    const bool fits = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-';
    if (!fits) c = '-';
  }
  if (name.empty() || name.size() > 100) name = "relay";
  std::random_device random;
  return fmt::format("{}-{:06x}", name, random() & 0xffffffU);
}

#if SWITCHBOARD_WITH_GRPC
namespace {

// A file named by the configuration, whole; empty name: nothing. Throws naming the key.
std::string read_config_file(const std::string& path, const char* key) {
  if (path.empty()) return {};
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  if (!in || content.str().empty()) {
    throw std::runtime_error(
        fmt::format("cluster: {} \"{}\" cannot be read or is empty", key, path));
  }
  return content.str();
}

class EtcdNode final : public ClusterNode {
public:
  explicit EtcdNode(cluster::EtcdDirectoryConfig config) : directory_(std::move(config)) {}
  ~EtcdNode() override { directory_.stop(); }
  cluster::Directory& directory() override { return directory_; }
  void start() override { directory_.start(); }
  void leave(std::chrono::steady_clock::time_point deadline) override {
    directory_.leave(deadline);
  }
  void stop() override { directory_.stop(); }
  std::optional<std::string> not_ready_reason() const override {
    return directory_.not_ready_reason();
  }
  void write_metrics(MetricsWriter& out) const override { directory_.write_metrics(out); }
  std::string json() const override { return directory_.json(); }

private:
  cluster::EtcdDirectory directory_;
};

}  // namespace

std::unique_ptr<ClusterNode> make_cluster_node(const ServerConfig::Cluster& config,
                                               cluster::NodeAddress self) {
  cluster::EtcdDirectoryConfig directory;
  directory.etcd = config.etcd;
  // Read now so that a wrong path fails the start; gRPC reads them again as they change.
  (void)read_config_file(config.etcd_ca_file, "cluster_etcd_ca_file");
  (void)read_config_file(config.etcd_cert_file, "cluster_etcd_cert_file");
  (void)read_config_file(config.etcd_key_file, "cluster_etcd_key_file");
  directory.security.ca_file = config.etcd_ca_file;
  directory.security.cert_file = config.etcd_cert_file;
  directory.security.key_file = config.etcd_key_file;
  directory.security.refresh_seconds = config.etcd_tls_refresh_seconds;
  directory.security.user = config.etcd_user;
  if (!config.etcd_user.empty()) {
    auto password = read_config_file(config.etcd_password_file, "cluster_etcd_password_file");
    password = password.substr(0, password.find_first_of("\r\n"));
    if (password.empty()) {
      throw std::runtime_error("cluster: cluster_etcd_password_file starts with an empty line");
    }
    directory.security.password = std::move(password);
    directory.security.password_file = config.etcd_password_file;
    if (!config.etcd.starts_with("https://")) {
      spdlog::warn("cluster: the etcd password goes to {} unencrypted (http)", config.etcd);
    }
  }
  directory.self = std::move(self);
  directory.prefix = config.prefix;
  directory.lease_ttl = std::chrono::duration_cast<std::chrono::seconds>(config.lease_ttl);
  try {
    return std::make_unique<EtcdNode>(std::move(directory));
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(std::string("cluster: ") + e.what());
  }
}
#else
std::unique_ptr<ClusterNode> make_cluster_node(const ServerConfig::Cluster& /*config*/,
                                               cluster::NodeAddress /*self*/) {
  throw std::runtime_error("cluster: this build has no etcd client (SWITCHBOARD_WITH_GRPC=OFF)");
}
#endif

}  // namespace switchboard::core
