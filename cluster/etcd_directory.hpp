// The cluster directory of a relay: membership on an etcd lease, channel claims that ride on
// it, the fencing rule and the drain. docs/CLUSTER.md explains the model.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/directory.hpp"
#include "cluster/etcd_security.hpp"
#include "relay/metrics.hpp"

namespace switchboard::cluster {

struct EtcdDirectoryConfig {
  /// etcd endpoints, "http://host:port", "https://host:port" or "host:port", comma-separated;
  /// tried in turn.
  std::string etcd;
  /// TLS roots and client certificate (https endpoints), and etcd's user and password.
  EtcdSecurity security;
  /// This relay: its node id (letters, digits, '.', '_', '-') and advertised addresses.
  NodeAddress self;
  /// Keys live under PREFIX/members/ and PREFIX/channels/.
  std::string prefix = "/switchboard";
  /// The lease's TTL (whole seconds, at least 1). Renewed every third of it; the relay fences
  /// itself when a third of it is left since the last renewal that etcd acknowledged.
  std::chrono::seconds lease_ttl{3};
};

/// What the directory shows of itself (metrics, the admin /cluster view, tests).
struct ClusterStatus {
  std::string node_id;
  bool has_view = false;
  bool fenced = false;
  bool leaving = false;
  std::int64_t lease = 0;  ///< current lease id; 0 when none
  std::uint64_t revision = 0;
  std::vector<NodeAddress> members;  ///< sorted by node id
  std::uint64_t channels_held = 0;
  std::uint64_t channels_releasing = 0;
  std::uint64_t claims_won = 0;
  std::uint64_t claims_lost = 0;
  std::uint64_t relinquished = 0;
  std::uint64_t lease_grants = 0;
  std::int64_t renewal_last_us = 0;
  std::int64_t renewal_max_us = 0;
  std::string etcd_endpoint;               ///< the endpoint in use
  std::uint64_t etcd_authentications = 0;  ///< tokens etcd issued (with an etcd user)
};

/// A Directory over etcd. Its threads (lease keeper, membership watcher, claim worker) start
/// with start() and end with stop(); resolve's `done` and the relinquish callback run on them
/// or inline. Thread-safe.
class EtcdDirectory final : public Directory {
public:
  /// Checks the configuration; throws std::invalid_argument. Contacts nothing yet.
  explicit EtcdDirectory(EtcdDirectoryConfig config);
  ~EtcdDirectory() override;
  EtcdDirectory(const EtcdDirectory&) = delete;
  EtcdDirectory& operator=(const EtcdDirectory&) = delete;

  void resolve(const Uuid& channel, Done done) override;
  Verdict locate(const Uuid& channel) override;
  void channel_emptied(const Uuid& channel) override;
  bool admit(const Uuid& channel) override;
  void on_relinquish(Relinquish relinquish) override;

  /// Registers (lease, member key) and starts watching the members; returns at once.
  void start();
  /// Hands every held channel to its next owner (placement over the members without this
  /// relay) and refuses new ones; once the doors report them all emptied, or at `deadline`,
  /// revokes the lease so the others see this relay leave at once. Returns at once.
  void leave(std::chrono::steady_clock::time_point deadline);
  /// Revokes the lease (when still held) and ends the threads promptly. Idempotent.
  void stop();

  /// Why the relay should not be sent peers now (no view, not a member yet, fenced), or
  /// nothing when it is ready.
  std::optional<std::string> not_ready_reason() const;
  ClusterStatus status() const;
  /// The cluster families in the Prometheus text format.
  void write_metrics(core::MetricsWriter& out) const;
  /// The admin endpoint's /cluster body.
  std::string json() const;

private:
  struct State;
  std::unique_ptr<State> state_;
};

/// Whether `id` is a usable node id (1 to 128 of letters, digits, '.', '_', '-').
bool valid_node_id(const std::string& id);

}  // namespace switchboard::cluster
