// The relay's membership in a cluster as the server drives it: the directory the doors ask,
// its start, drain and stop, and what the admin endpoint shows of it.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "cluster/directory.hpp"
#include "relay/metrics.hpp"
#include "server/server.hpp"

namespace switchboard::core {

class ClusterNode {
public:
  virtual ~ClusterNode() = default;
  virtual cluster::Directory& directory() = 0;
  virtual void start() = 0;
  /// Hands the held channels to the other relays; the lease goes once they are emptied or at
  /// `deadline`. Returns at once.
  virtual void leave(std::chrono::steady_clock::time_point deadline) = 0;
  /// Ends the membership (revokes the lease when still held) and its threads.
  virtual void stop() = 0;
  /// Why the relay is not ready for peers (for /healthz), or nothing.
  virtual std::optional<std::string> not_ready_reason() const = 0;
  virtual void write_metrics(MetricsWriter& out) const = 0;
  /// The /cluster admin view.
  virtual std::string json() const = 0;
};

/// HOSTNAME-XXXXXX with six random hex digits: unique per process, readable in logs.
std::string default_node_id();

/// The etcd-backed node for `config` (whose etcd is set) advertising `self`; throws
/// std::runtime_error when the configuration is unusable or the build has no cluster support.
std::unique_ptr<ClusterNode> make_cluster_node(const ServerConfig::Cluster& config,
                                               cluster::NodeAddress self);

}  // namespace switchboard::core
