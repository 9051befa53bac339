// The door list: the native door always, the gRPC door when the build has it.
#include "server/doors.hpp"

#include "native/native_door.hpp"

// The only place that knows whether this build has the gRPC door.
#if SWITCHBOARD_WITH_GRPC
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "grpc_gateway/grpc_door.hpp"

namespace switchboard::core {
namespace {
constexpr bool kGrpcDoorBuilt = true;

std::string read_pem(const std::string& path, const char* key) {
  if (path.empty()) return {};
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (!(in && text << in.rdbuf())) {
    throw std::runtime_error(std::string("key '") + key + "': cannot read " + path);
  }
  return text.str();
}

std::unique_ptr<Door> make_grpc_door(const ServerConfig& config, RelayContext& context,
                                     transport::IoContexts& io, transport::Admission& admission) {
  gateway::CarryOptions carry;
  carry.node_id = config.cluster.node_id;
  // A cluster's relays share one TLS set-up: a relay whose gRPC door uses TLS reaches the others'
  // with TLS, presenting its own certificate to doors that ask for a client's.
  if (!config.cluster.etcd.empty() && config.tls.grpc) {
    carry.tls = true;
    carry.ca_pem = read_pem(config.cluster.ca_file, "cluster_ca_file");
    carry.cert_pem = read_pem(config.tls.cert_file, "tls_cert_file");
    carry.key_pem = read_pem(config.tls.key_file, "tls_key_file");
  }
  return std::make_unique<gateway::GrpcDoor>(
      context, io, admission,
      gateway::GrpcDoorConfig{config.grpc_listen, config.tls, std::move(carry)});
}
}  // namespace
}  // namespace switchboard::core
#else
namespace switchboard::core {
namespace {
constexpr bool kGrpcDoorBuilt = false;

std::unique_ptr<Door> make_grpc_door(const ServerConfig&, RelayContext&, transport::IoContexts&,
                                     transport::Admission&) {
  return nullptr;
}
}  // namespace
}  // namespace switchboard::core
#endif

namespace switchboard::core {

std::vector<std::unique_ptr<Door>> make_doors(const ServerConfig& config, RelayContext& context,
                                              transport::IoContexts& io,
                                              transport::Admission& admission) {
  std::vector<std::unique_ptr<Door>> doors;
  doors.push_back(std::make_unique<net::NativeDoor>(
      context, io, admission, net::NativeDoorConfig{config.listen, config.placement, config.tls}));
  if (auto grpc = make_grpc_door(config, context, io, admission)) doors.push_back(std::move(grpc));
  return doors;
}

bool serves_grpc(const ServerConfig& config) {
  return kGrpcDoorBuilt && !config.grpc_listen.empty();
}

}  // namespace switchboard::core
