// libFuzzer target for the gateway's message validation and mapping: arbitrary bytes parsed as
// the client messages of Respond, Send, Broadcast and the presence calls, then run through the
// checks and conversions the calls use. What the gateway accepts must be something the core can
// carry to any native peer unchanged.
//
// Input: one byte choosing the message type, then the serialized message.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_check.hpp"
#include "grpc_gateway/mapping.hpp"
#include "switchboard/wire/codec.hpp"

namespace {

using namespace switchboard;
using namespace switchboard::gateway;

/// The id as the gateway writes it back to clients must parse to the same id.
void check_id_text(const Uuid& id) {
  const auto text = id.to_string();
  SWITCHBOARD_FUZZ_CHECK(text.size() == 36);
  const auto again = parse_id(text, false);
  SWITCHBOARD_FUZZ_CHECK(again && *again == id);
}

/// Every status maps to a gRPC status; only OK maps to OK, and the trailer names the status.
void check_status_mapping(Status status, const std::string& message, std::uint32_t app_code) {
  grpc::CallbackServerContext context;
  const auto mapped = to_grpc(&context, status, message, app_code);
  SWITCHBOARD_FUZZ_CHECK(mapped.ok() == (status == Status::ok));
  SWITCHBOARD_FUZZ_CHECK(mapped.ok() || !mapped.error_message().empty());
  SWITCHBOARD_FUZZ_CHECK(status_name(status) != "UNKNOWN");
}

/// A status taken from a client message is a defined one: unset is OK, a defined value maps to
/// the native code one below it (and back), an undefined one to the fallback, never to anything
/// else (in particular never to OK). A cancel never asks for OK.
void check_client_status(int value, Status fallback) {
  const Status status = status_from_client(value, fallback);
  SWITCHBOARD_FUZZ_CHECK(is_valid_status(static_cast<std::uint16_t>(status)));
  if (value == pb::STATUS_UNSPECIFIED) {
    SWITCHBOARD_FUZZ_CHECK(status == Status::ok);
  } else if (value >= pb::STATUS_OK && value <= kMaxStatusValue + 1) {
    SWITCHBOARD_FUZZ_CHECK(static_cast<int>(status) == value - 1);
    SWITCHBOARD_FUZZ_CHECK(to_pb(status) == value);
  } else {
    SWITCHBOARD_FUZZ_CHECK(status == fallback);
  }
  const Status cancel = cancel_status_from_client(value);
  SWITCHBOARD_FUZZ_CHECK(cancel != Status::ok &&
                         is_valid_status(static_cast<std::uint16_t>(cancel)));
  check_status_mapping(status, {}, 0);
}

/// An accepted open becomes an OPEN frame towards a native peer: it must fit the smallest max
/// frame a peer may announce and arrive with the same metadata.
void check_open_for_native_peer(const OpenRequest& request, const std::string& first_chunk) {
  SWITCHBOARD_FUZZ_CHECK(!request.channel.is_nil());
  check_id_text(request.channel);
  if (!request.target.is_nil()) check_id_text(request.target);
  if (!request.sender.is_nil()) check_id_text(request.sender);

  wire::Open open;
  open.kind = request.target.is_nil() ? wire::StreamKind::to_any : wire::StreamKind::to_peer;
  open.peer = request.sender;
  open.metadata = request.metadata;
  SWITCHBOARD_FUZZ_CHECK(open.metadata.size() <= wire::kMaxMetadataEntries);
  const std::size_t prefix = wire::open_prefix_size(open);
  SWITCHBOARD_FUZZ_CHECK(prefix <= wire::kMaxOpenPrefix);

  std::vector<std::uint8_t> frame;
  wire::append_open(frame, 2, open, {});
  const auto decoded = wire::decode_frame(frame, wire::kMinMaxFrame);
  SWITCHBOARD_FUZZ_CHECK(decoded.kind == wire::DecodeResult::Kind::frame);
  SWITCHBOARD_FUZZ_CHECK(decoded.header.length == prefix);
  wire::Open received;
  wire::Bytes body;
  SWITCHBOARD_FUZZ_CHECK(wire::parse_open(decoded.payload, received, body) ==
                         wire::DecodeError::none);
  SWITCHBOARD_FUZZ_CHECK(body.empty());
  SWITCHBOARD_FUZZ_CHECK(received.metadata == request.metadata);

  // The receiving gRPC responder sees the same entries.
  pb::IncomingStart start;
  from_metadata(received.metadata, start.mutable_metadata());
  SWITCHBOARD_FUZZ_CHECK(to_metadata(start.metadata()).size() == request.metadata.size());

  const auto slice = to_slice(first_chunk);
  SWITCHBOARD_FUZZ_CHECK(slice.size == first_chunk.size());
}

template <typename Message>
bool parse(Message& message, const std::uint8_t* data, std::size_t size) {
  return message.ParseFromArray(data, static_cast<int>(size));
}

void fuzz_respond(const std::uint8_t* data, std::size_t size) {
  pb::RespondRequest message;
  if (!parse(message, data, size)) return;
  const auto checked = check_first(message);
  SWITCHBOARD_FUZZ_CHECK(checked.request.has_value() == checked.error.empty());
  if (checked.request) {
    SWITCHBOARD_FUZZ_CHECK(message.kind_case() == pb::RespondRequest::kJoin);
    SWITCHBOARD_FUZZ_CHECK(!checked.request->channel.is_nil());
    check_id_text(checked.request->channel);
  }
  switch (message.kind_case()) {
    case pb::RespondRequest::kEnd:
      check_client_status(message.end().status(), Status::internal);
      check_status_mapping(status_from_client(message.end().status(), Status::internal),
                           message.end().message(), message.end().app_code());
      break;
    case pb::RespondRequest::kCancel:
      check_client_status(message.cancel().status(), Status::cancelled);
      break;
    default:
      break;
  }
}

void fuzz_send(const std::uint8_t* data, std::size_t size) {
  pb::SendRequest message;
  if (!parse(message, data, size)) return;
  const auto checked = check_first(message);
  SWITCHBOARD_FUZZ_CHECK(checked.request.has_value() == checked.error.empty());
  if (checked.request) check_open_for_native_peer(*checked.request, message.open().data());
}

void fuzz_broadcast(const std::uint8_t* data, std::size_t size) {
  pb::BroadcastRequest message;
  if (!parse(message, data, size)) return;
  const auto checked = check_first(message);
  SWITCHBOARD_FUZZ_CHECK(checked.request.has_value() == checked.error.empty());
  if (checked.request) {
    SWITCHBOARD_FUZZ_CHECK(checked.request->target.is_nil());
    check_open_for_native_peer(*checked.request, message.open().data());
  }
}

void fuzz_presence_request(const std::uint8_t* data, std::size_t size) {
  pb::WatchPeersRequest message;  // the same fields as ListPeersRequest
  if (!parse(message, data, size)) return;
  const auto channel = parse_id(message.channel(), false);
  if (channel) check_id_text(*channel);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in a string field is a parse failure; its log line would only slow the run.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  switch (data[0] & 3) {
    case 0:
      fuzz_respond(data + 1, size - 1);
      break;
    case 1:
      fuzz_send(data + 1, size - 1);
      break;
    case 2:
      fuzz_broadcast(data + 1, size - 1);
      break;
    default:
      fuzz_presence_request(data + 1, size - 1);
      break;
  }
  return 0;
}
