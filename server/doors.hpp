// The relay's front doors, made from its configuration: the one place that knows which doors
// this build has.
#pragma once

#include <memory>
#include <vector>

#include "relay/door.hpp"
#include "relay/relay_context.hpp"
#include "server/server.hpp"
#include "transport/io_contexts.hpp"
#include "transport/listener.hpp"

namespace switchboard::core {

/// The doors `config` asks for, bound and ready to start: native, then gRPC when this build has
/// it (off, reporting zero counters, when its address is empty). Throws when an address cannot
/// be bound or a certificate not loaded.
std::vector<std::unique_ptr<Door>> make_doors(const ServerConfig& config, RelayContext& context,
                                              transport::IoContexts& io,
                                              transport::Admission& admission);

/// Whether `config` runs a gRPC door (built in, with an address).
bool serves_grpc(const ServerConfig& config);

}  // namespace switchboard::core
