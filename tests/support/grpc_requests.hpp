// Test support: one request on a gRPC Requests stream, run to its end.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard::test {

/// Sends `open` (one request with its whole body) on a new Requests call and returns how that
/// request ended: its `end` status, or OK once its response's last chunk arrived.
inline ::switchboard::v1::Status requests_outcome(
    ::switchboard::v1::SwitchboardService::Stub& stub,
    const ::switchboard::v1::RequestsRequest& open,
    std::chrono::seconds limit = std::chrono::seconds(10)) {
  namespace pb = ::switchboard::v1;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + limit);
  auto call = stub.Requests(&context);
  call->Write(open);
  pb::Status outcome = pb::STATUS_INTERNAL;
  pb::RequestsResponse in;
  while (call->Read(&in)) {
    if (in.has_end()) {
      outcome = in.end().status();
      break;
    }
    if (in.chunk().last()) {
      outcome = pb::STATUS_OK;
      break;
    }
  }
  call->WritesDone();
  while (call->Read(&in)) {
  }
  (void)call->Finish();
  return outcome;
}

}  // namespace switchboard::test
