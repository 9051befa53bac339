// switchboard-cluster-bench internals: the relays a run is given, where placement puts a channel,
// CPU time of a process, and the gRPC workload (sb_cluster_grpc.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cluster/placement.hpp"
#include "common.hpp"
#include "switchboard/wire/uuid.hpp"

namespace sbc {

using switchboard::Uuid;

/// One relay of the run: node id, loopback host, native and gRPC ports, process id.
struct RelayInfo {
  std::string id;
  std::string host;
  std::uint16_t port = 0;
  std::uint16_t grpc_port = 0;
  long pid = 0;
};

/// The relays named by --ids, --hosts, --ports, --grpc-ports and --pids (comma lists).
std::vector<RelayInfo> relays_of(const bench::Args& args);
/// Index of the relay placement makes the owner of `channel` (0 for a relay alone); the same
/// rendezvous hash over the node ids as the relays compute with a full view.
std::size_t owner_index(const std::vector<RelayInfo>& relays, const Uuid& channel);
/// Context switches (voluntary and not) of every thread of process `pid` so far.
std::uint64_t context_switches(long pid);
/// utime + stime of process `pid` (0: this process) in seconds, from /proc/PID/stat.
double cpu_seconds(long pid);

/// The gRPC workload; its exit code. Without gRPC in the build it says so and fails.
int grpc_workload(const bench::Args& args);

}  // namespace sbc
