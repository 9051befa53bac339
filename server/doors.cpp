// The door list: the native door always, the gRPC door when the build has it.
#include "server/doors.hpp"

#include "native/native_door.hpp"

// The only place that knows whether this build has the gRPC door.
#if SWITCHBOARD_WITH_GRPC
#include "grpc_gateway/grpc_door.hpp"

namespace switchboard::core {
namespace {
constexpr bool kGrpcDoorBuilt = true;

std::unique_ptr<Door> make_grpc_door(const ServerConfig& config, RelayContext& context,
                                     transport::IoContexts& io, transport::Admission& admission) {
  return std::make_unique<gateway::GrpcDoor>(
      context, io, admission, gateway::GrpcDoorConfig{config.grpc_listen, config.tls});
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
