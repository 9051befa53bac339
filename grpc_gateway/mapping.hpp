// Conversions between the gateway's protobuf messages and the core's types and statuses.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <optional>
#include <string>

#include "switchboard/v1/switchboard.pb.h"
#include "switchboard/wire/buffer.hpp"
#include "switchboard/wire/frame.hpp"

namespace switchboard::gateway {

namespace pb = ::switchboard::v1;

/// The gRPC status for a Switchboard status, with `switchboard-status` (and for APPLICATION
/// `switchboard-app-code`) added to the call's trailing metadata.
grpc::Status to_grpc(grpc::CallbackServerContext* context, Status status,
                     const std::string& message, std::uint32_t app_code = 0,
                     bool duplicate_peer = false);

/// An INVALID_ARGUMENT for a malformed message, with the PROTOCOL_ERROR trailer.
grpc::Status invalid_argument(grpc::CallbackServerContext* context, const std::string& message);

/// Parses a UUID field; empty text is nil when `allow_empty`.
std::optional<Uuid> parse_id(const std::string& text, bool allow_empty);

/// A Respond call's `join`, validated.
struct JoinRequest {
  Uuid channel;
  Uuid peer_id;  ///< nil: the relay assigns one
};

/// The `open` of a Send or Broadcast call, validated (membership and draining are the
/// registry's to check).
struct OpenRequest {
  Uuid channel;
  Uuid target;  ///< Send: nil means any peer that serves requests; Broadcast: always nil
  Uuid sender;  ///< nil: an anonymous sender
  wire::Metadata metadata;
};

/// A validated first message, or why it is invalid (the INVALID_ARGUMENT message).
template <typename Request>
struct Checked {
  std::optional<Request> request;
  std::string error;
};

Checked<JoinRequest> check_first(const pb::RespondRequest& first);
Checked<OpenRequest> check_first(const pb::SendRequest& first);
Checked<OpenRequest> check_first(const pb::BroadcastRequest& first);
/// The open of one request of a Requests call.
Checked<OpenRequest> check_open(const pb::SendOpen& open);

/// The protobuf Status of a core status. The protobuf enum is the native code plus one, since
/// its zero is STATUS_UNSPECIFIED.
pb::Status to_pb(Status status);

/// A status a client sent in a ResponseEnd: STATUS_UNSPECIFIED means OK; a value outside the enum
/// is `fallback`.
Status status_from_client(int value, Status fallback);

/// The status a client's StreamCancel asks for: CANCELLED when unset, OK or outside the enum.
Status cancel_status_from_client(int value);

wire::Metadata to_metadata(const google::protobuf::Map<std::string, std::string>& map);
void from_metadata(const wire::Metadata& metadata,
                   google::protobuf::Map<std::string, std::string>* map);

/// Payload bytes as a slice the core can forward (one copy out of the protobuf message).
inline wire::Slice to_slice(const std::string& bytes) {
  return wire::Slice::copy_of({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
}

/// Payload bytes taken out of a parsed message (which is read into again) as a slice, without a
/// copy; `bytes` is left empty.
inline wire::Slice take_slice(std::string& bytes) { return wire::Slice::adopt(std::move(bytes)); }

/// Remaining milliseconds until the call's deadline (0: none; at least 1 when one is set).
std::uint32_t remaining_ms(grpc::CallbackServerContext* context);
bool deadline_passed(grpc::CallbackServerContext* context);

}  // namespace switchboard::gateway
