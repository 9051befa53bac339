// Status mapping (the table in switchboard.proto) and small protobuf conversions.
#include "grpc_gateway/mapping.hpp"

#include "switchboard/wire/codec.hpp"

namespace switchboard::gateway {

grpc::Status to_grpc(grpc::CallbackServerContext* context, Status status,
                     const std::string& message, std::uint32_t app_code, bool duplicate_peer) {
  context->AddTrailingMetadata("switchboard-status", std::string(status_name(status)));
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  switch (status) {
    case Status::ok:
      return grpc::Status::OK;
    case Status::no_responders:
    case Status::peer_gone:
      code = grpc::StatusCode::UNAVAILABLE;
      break;
    case Status::deadline_exceeded:
    case Status::idle_timeout:
      code = grpc::StatusCode::DEADLINE_EXCEEDED;
      break;
    case Status::cancelled:
      code = grpc::StatusCode::CANCELLED;
      break;
    case Status::refused:
      code = duplicate_peer ? grpc::StatusCode::ALREADY_EXISTS : grpc::StatusCode::UNAVAILABLE;
      break;
    case Status::unauthenticated:
      code = grpc::StatusCode::UNAUTHENTICATED;
      break;
    case Status::permission_denied:
      code = grpc::StatusCode::PERMISSION_DENIED;
      break;
    case Status::resource_exhausted:
    case Status::slow_consumer:
      code = grpc::StatusCode::RESOURCE_EXHAUSTED;
      break;
    case Status::protocol_error:
      code = grpc::StatusCode::INVALID_ARGUMENT;
      break;
    case Status::internal:
      code = grpc::StatusCode::INTERNAL;
      break;
    case Status::application:
      code = grpc::StatusCode::UNKNOWN;
      context->AddTrailingMetadata("switchboard-app-code", std::to_string(app_code));
      break;
  }
  return grpc::Status(code, message.empty() ? std::string(status_name(status)) : message);
}

grpc::Status invalid_argument(grpc::CallbackServerContext* context, const std::string& message) {
  return to_grpc(context, Status::protocol_error, message);
}

std::optional<Uuid> parse_id(const std::string& text, bool allow_empty) {
  if (text.empty()) return allow_empty ? std::optional<Uuid>(Uuid{}) : std::nullopt;
  return Uuid::parse(text);
}

namespace {

template <typename Request>
Checked<Request> rejected(std::string error) {
  return Checked<Request>{std::nullopt, std::move(error)};
}

/// Channel and optional sender of a Send or Broadcast open; `target` is Send's only.
Checked<OpenRequest> check_open(const std::string& channel_text, const std::string* target_text,
                                const std::string& sender_text,
                                const google::protobuf::Map<std::string, std::string>& metadata) {
  const auto channel = parse_id(channel_text, false);
  if (!channel || channel->is_nil()) {
    return rejected<OpenRequest>(channel_text.empty()
                                     ? "open.channel is required"
                                     : "open.channel is not a UUID: " + channel_text);
  }
  OpenRequest request;
  request.channel = *channel;
  if (target_text) {
    const auto target = parse_id(*target_text, true);
    if (!target) return rejected<OpenRequest>("open.target is not a UUID: " + *target_text);
    request.target = *target;
  }
  const auto sender = parse_id(sender_text, true);
  if (!sender) return rejected<OpenRequest>("open.sender_peer_id is not a UUID");
  request.sender = *sender;
  // Native receivers get the metadata in an OPEN frame, whose fixed part and metadata must fit
  // the smallest max frame a peer may announce (the native door refuses larger ones too).
  if (metadata.size() > wire::kMaxMetadataEntries) {
    return rejected<OpenRequest>("open.metadata has more than " +
                                 std::to_string(wire::kMaxMetadataEntries) + " entries");
  }
  wire::Open open;
  open.metadata = to_metadata(metadata);
  if (wire::open_prefix_size(open) > wire::kMaxOpenPrefix) {
    return rejected<OpenRequest>(
        "open.metadata is too large: its entries (4 bytes + key + value each) may total " +
        std::to_string(wire::kMaxOpenPrefix - wire::open_prefix_size({})) + " bytes");
  }
  request.metadata = std::move(open.metadata);
  return Checked<OpenRequest>{std::move(request), {}};
}

}  // namespace

Checked<JoinRequest> check_first(const pb::RespondRequest& first) {
  if (first.kind_case() != pb::RespondRequest::kJoin) {
    return rejected<JoinRequest>("the first message of Respond must be join");
  }
  const auto& join = first.join();
  const auto channel = parse_id(join.channel(), false);
  if (!channel || channel->is_nil()) {
    return rejected<JoinRequest>(join.channel().empty()
                                     ? "join.channel is required"
                                     : "join.channel is not a UUID: " + join.channel());
  }
  const auto peer = parse_id(join.peer_id(), true);
  if (!peer) return rejected<JoinRequest>("join.peer_id is not a UUID: " + join.peer_id());
  return Checked<JoinRequest>{JoinRequest{*channel, *peer}, {}};
}

Checked<OpenRequest> check_first(const pb::SendRequest& first) {
  if (first.kind_case() != pb::SendRequest::kOpen) {
    return rejected<OpenRequest>("the first message of Send must be open");
  }
  const auto& open = first.open();
  return check_open(open.channel(), &open.target(), open.sender_peer_id(), open.metadata());
}

Checked<OpenRequest> check_open(const pb::SendOpen& open) {
  return check_open(open.channel(), &open.target(), open.sender_peer_id(), open.metadata());
}

Checked<OpenRequest> check_first(const pb::BroadcastRequest& first) {
  if (first.kind_case() != pb::BroadcastRequest::kOpen) {
    return rejected<OpenRequest>("the first message of Broadcast must be open");
  }
  const auto& open = first.open();
  return check_open(open.channel(), nullptr, open.sender_peer_id(), open.metadata());
}

pb::Status to_pb(Status status) { return static_cast<pb::Status>(static_cast<int>(status) + 1); }

Status status_from_client(int value, Status fallback) {
  if (value == pb::STATUS_UNSPECIFIED) return Status::ok;
  // Range-check the protobuf enum's int itself: narrowing first would turn 65537 into OK.
  if (value < pb::STATUS_OK || value > kMaxStatusValue + 1) return fallback;
  return static_cast<Status>(value - 1);
}

Status cancel_status_from_client(int value) {
  const Status status = status_from_client(value, Status::cancelled);
  return status == Status::ok ? Status::cancelled : status;
}

wire::Metadata to_metadata(const google::protobuf::Map<std::string, std::string>& map) {
  wire::Metadata metadata;
  metadata.reserve(map.size());
  for (const auto& [key, value] : map) metadata.emplace_back(key, value);
  return metadata;
}

void from_metadata(const wire::Metadata& metadata,
                   google::protobuf::Map<std::string, std::string>* map) {
  for (const auto& [key, value] : metadata) (*map)[key] = value;
}

std::uint32_t remaining_ms(grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return 0;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::system_clock::now());
  if (left.count() >= 0xFFFFFFFFLL) return 0;  // effectively none
  return static_cast<std::uint32_t>(std::max<std::int64_t>(left.count(), 1));
}

bool deadline_passed(grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  // gRPC's deadline timer runs on its own clock and may cancel the call a little before the
  // wall clock reaches the deadline: a cancellation that close is the deadline.
  constexpr auto kTimerSlack = std::chrono::milliseconds(250);
  return deadline != std::chrono::system_clock::time_point::max() &&
         std::chrono::system_clock::now() + kTimerSlack >= deadline;
}

}  // namespace switchboard::gateway
