// ListPeers and WatchPeers: presence without joining a channel; Locate: where it is served.
#pragma once

#include "grpc_gateway/gateway_context.hpp"
#include "grpc_gateway/mapping.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard::gateway {

grpc::ServerUnaryReactor* list_peers(GatewayContext& gateway, grpc::CallbackServerContext* context,
                                     const pb::ListPeersRequest* request,
                                     pb::ListPeersResponse* response);

grpc::ServerWriteReactor<pb::WatchPeersResponse>* watch_peers(GatewayContext& gateway,
                                                              grpc::CallbackServerContext* context,
                                                              const pb::WatchPeersRequest* request);

grpc::ServerUnaryReactor* locate(GatewayContext& gateway, grpc::CallbackServerContext* context,
                                 const pb::LocateRequest* request, pb::LocateResponse* response);

}  // namespace switchboard::gateway
