// The wire protocol's frame layout and the typed contents of every frame (docs/PROTOCOL.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "switchboard/wire/status.hpp"
#include "switchboard/wire/uuid.hpp"

namespace switchboard::wire {

/// The newest protocol version, the one this code sends in HELLO. A relay also speaks every
/// version from kOldestProtocolVersion on, and answers each client in the version it spoke;
/// what each version adds is listed in docs/PROTOCOL.md (Versioning).
inline constexpr std::uint16_t kProtocolVersion = 3;
inline constexpr std::uint16_t kOldestProtocolVersion = 1;
/// Whether this code speaks `version` (the one check of a HELLO's or WELCOME's version).
constexpr bool is_supported_version(std::uint16_t version) noexcept {
  return version >= kOldestProtocolVersion && version <= kProtocolVersion;
}
/// "1, 2 and 3": the versions this code speaks, for the message refusing another one.
std::string supported_versions_text();
/// The first version whose clients understand REDIRECT.
inline constexpr std::uint16_t kRedirectVersion = 2;
/// The first version with MESSAGE and MESSAGE_REPORT (whole messages without a stream).
inline constexpr std::uint16_t kMessageVersion = 3;
inline constexpr std::uint8_t kMagic[4] = {'S', 'W', 'B', 'D'};
/// type(1) flags(1) reserved(2) stream(4) length(4), all big-endian.
inline constexpr std::size_t kHeaderSize = 12;
/// No implementation may announce a max frame below this: every control frame with a message of
/// up to kMaxMessageSize bytes fits.
inline constexpr std::uint32_t kMinMaxFrame = 1024;
inline constexpr std::size_t kMaxMessageSize = 512;
/// The most credit one side may hold for one stream direction, as in HTTP/2: 2^31 - 1 bytes.
inline constexpr std::uint32_t kMaxWindow = 0x7fff'ffff;
inline constexpr std::size_t kMaxTokenSize = 4096;
inline constexpr std::size_t kMaxMetadataEntries = 64;
/// OPEN's fixed part plus metadata must fit the smallest frame any side may announce.
inline constexpr std::size_t kMaxOpenPrefix = kMinMaxFrame;

// ---- Shared connections (protocol versions 4 and 5, docs/PROTOCOL.md section 18). ----
// A connection whose first frame is MUX carries lanes; each lane is the byte stream of one
// connection of versions 1-3 (HELLO, WELCOME, ...), cut into LANE frames. MUX and LANE are
// frames of the shared connection only, never of a lane.
inline constexpr std::uint16_t kMuxVersion = 5;
/// The oldest shared-connection version a relay still answers (4: no placement shards).
inline constexpr std::uint16_t kMinMuxVersion = 4;
inline constexpr std::uint8_t kMuxFrameType = 0x0A;
inline constexpr std::uint8_t kLaneFrameType = 0x0B;
/// LANE flag: the sender sends no more bytes on this lane.
inline constexpr std::uint8_t kLaneFin = 0x01;
/// The most lane bytes one LANE frame carries (either direction).
inline constexpr std::uint32_t kMaxLaneChunk = 64 * 1024;
/// MUX payloads: client -> relay magic(4) version(2) flags(2) placement channel(16); relay ->
/// client magic(4) version(2) shards(2) max_lanes(4) (shards: reserved, 0, in version 4).
inline constexpr std::size_t kMuxHelloSize = 24;
inline constexpr std::size_t kMuxWelcomeSize = 12;

enum class FrameType : std::uint8_t {
  hello = 0x01,
  welcome = 0x02,
  presence = 0x03,
  ping = 0x04,
  go_away = 0x05,
  error = 0x06,
  redirect = 0x07,
  message = 0x08,         ///< version 3: a whole message, no stream
  message_report = 0x09,  ///< version 3: relay -> client, what became of its messages
  open = 0x10,
  data = 0x11,
  end = 0x12,
  reset = 0x13,
  window = 0x14,
};

/// True for frames that belong to a stream (nonzero stream id); the others use stream 0.
constexpr bool is_stream_frame(FrameType type) noexcept {
  return static_cast<std::uint8_t>(type) >= 0x10;
}
std::string_view frame_type_name(FrameType type) noexcept;

namespace flags {
/// OPEN, DATA: the sender's direction of the stream ends with this frame (status OK).
inline constexpr std::uint8_t kFin = 0x01;
/// PING: this is the answer (pong).
inline constexpr std::uint8_t kAck = 0x01;
/// PRESENCE snapshot: more snapshot frames follow.
inline constexpr std::uint8_t kMore = 0x02;
/// HELLO: the peer accepts requests (it can be a target of Send, by id or "any").
inline constexpr std::uint16_t kAcceptRequests = 0x0001;
/// HELLO (version 2 on): the connection observes the channel's presence without joining it.
inline constexpr std::uint16_t kObserve = 0x0002;
}  // namespace flags

/// The HELLO flags `version` defines; the others are reserved, so ignored on receipt (a
/// version-1 HELLO with the OBSERVE bit joins as a peer, as it always did).
constexpr std::uint16_t defined_hello_flags(std::uint16_t version) noexcept {
  return version >= 2 ? static_cast<std::uint16_t>(flags::kAcceptRequests | flags::kObserve)
                      : flags::kAcceptRequests;
}

struct FrameHeader {
  FrameType type{};
  std::uint8_t flags = 0;
  std::uint32_t stream = 0;
  std::uint32_t length = 0;
};

/// Client -> relay, the first frame on a connection.
struct Hello {
  std::uint16_t version = kProtocolVersion;
  std::uint16_t hello_flags = 0;
  Uuid channel;
  Uuid peer_id;                     ///< nil: the relay assigns one
  std::uint32_t max_frame = 0;      ///< largest payload the client accepts
  std::uint32_t stream_window = 0;  ///< credit the client grants per stream it receives
  std::string token;

  /// The flags this HELLO's version defines and sets.
  std::uint16_t effective_flags() const noexcept {
    return static_cast<std::uint16_t>(hello_flags & defined_hello_flags(version));
  }
  bool accepts_requests() const noexcept {
    return (effective_flags() & flags::kAcceptRequests) != 0;
  }
  bool observes() const noexcept { return (effective_flags() & flags::kObserve) != 0; }
};

/// Relay -> client, the answer to an accepted HELLO; PRESENCE snapshot frames follow.
struct Welcome {
  std::uint16_t version = kProtocolVersion;
  Uuid peer_id;
  std::uint32_t max_frame = 0;      ///< largest payload the relay accepts
  std::uint32_t stream_window = 0;  ///< credit the relay grants per stream the client sends on
  std::uint32_t max_streams = 0;    ///< streams the client may have open at once
  std::uint32_t keepalive_ms = 0;   ///< the relay pings after this much silence
  /// Version 3 on: message body bytes the client may have sent and not yet had reported back
  /// (MESSAGE_REPORT); absent (0) in versions 1 and 2.
  std::uint32_t message_window = 0;
};

/// Client -> relay, the first frame of a shared connection (version 4 on).
struct MuxHello {
  std::uint16_t version = kMuxVersion;
  /// The channel whose I/O thread should run the shared connection (a hint; nil: any).
  Uuid placement;
};

/// Relay -> client, the answer to MUX: lanes may be opened now.
struct MuxWelcome {
  std::uint16_t version = kMuxVersion;
  /// Version 5: the relay's I/O threads that connections are placed on by channel (0 or 1: a
  /// shared connection's placement makes no difference). See placement_shard().
  std::uint16_t shards = 0;
  std::uint32_t max_lanes = 0;  ///< lanes the connection may have open at once
};

/// The I/O thread, of `shards`, that a relay placing by channel runs `channel`'s connections
/// on: bytes 8 to 15 of the id as a big-endian integer, modulo `shards` (0 when shards <= 1).
/// Channel ids are random (v4), so any eight of their bytes spread channels evenly.
constexpr std::uint32_t placement_shard(const Uuid& channel, std::uint32_t shards) noexcept {
  if (shards <= 1) return 0;
  std::uint64_t hash = 0;
  for (std::size_t i = 8; i < 16; ++i) hash = (hash << 8) | channel.bytes[i];
  return static_cast<std::uint32_t>(hash % shards);
}

enum class PresenceEvent : std::uint8_t { snapshot = 0, joined = 1, left = 2 };

/// Relay -> client: membership snapshot (possibly over several frames) or one change.
struct Presence {
  PresenceEvent event = PresenceEvent::snapshot;
  std::uint64_t version = 0;  ///< the channel's membership version after this event
  std::vector<Uuid> peers;
};

enum class StreamKind : std::uint8_t { to_peer = 0, to_any = 1, broadcast = 2 };

using Metadata = std::vector<std::pair<std::string, std::string>>;

/// Opens a stream. Client -> relay: `peer` is the target (to_peer). Relay -> client: `peer` is
/// the sender. Bytes after the metadata are the first body chunk.
struct Open {
  StreamKind kind = StreamKind::to_peer;
  std::uint32_t deadline_ms = 0;  ///< remaining time for the whole stream; 0 = none
  std::uint32_t idle_ms = 0;      ///< idle timeout; 0 = the relay's default
  Uuid peer;
  Metadata metadata;
};

/// MESSAGE (version 3): a whole message in one frame. Client -> relay: `peer` is the target
/// (to_peer) or nil (broadcast). Relay -> client: `peer` is the sender. The body is the rest.
struct MessageHead {
  StreamKind kind = StreamKind::broadcast;  ///< to_peer or broadcast (to_any is not defined)
  Uuid peer;
};
/// MESSAGE's fixed part: kind u8, reserved u8 + u16, peer 16 bytes.
inline constexpr std::size_t kMessageHeadSize = 20;

/// MESSAGE_REPORT (version 3): counts since the previous report, relay -> client.
struct MessageReport {
  std::uint32_t credit = 0;     ///< body bytes of the client's messages that left the relay
  std::uint32_t messages = 0;   ///< the client's messages finished (each counted once)
  std::uint32_t delivered = 0;  ///< receivers that were written a message of the client's
  std::uint32_t dropped = 0;    ///< receivers a message of the client's did not reach
  std::uint32_t refused = 0;    ///< messages its token did not allow (not sent to anybody)
  std::uint32_t lost = 0;       ///< messages to this client dropped because it read too slowly
};

/// Ends the sender's direction with a status; from the relay on a broadcast it is the summary.
struct End {
  Status status = Status::ok;
  std::uint32_t app_code = 0;
  std::uint32_t delivered = 0;  ///< broadcast: receivers that got the whole message
  std::uint32_t dropped = 0;    ///< broadcast: receivers dropped (slow, gone, refused)
  std::string message;
};

/// Aborts both directions of a stream.
struct Reset {
  Status status = Status::cancelled;
  std::uint32_t app_code = 0;
  std::string message;
};

struct GoAway {
  std::uint32_t last_stream = 0;  ///< highest client stream id the relay accepted
  Status status = Status::ok;
  std::string message;
};

/// The channel is served by another relay of the cluster: in answer to a HELLO (instead of
/// WELCOME), or later on a joined connection, where it also means what GOAWAY means.
struct Redirect {
  std::uint32_t last_stream = 0;  ///< as in GOAWAY; 0 in answer to a HELLO
  std::uint64_t revision = 0;     ///< the cluster membership revision the relay decided at
  std::string address;            ///< HOST:PORT of the relay that serves the channel
  std::string message;
};
/// The longest address a REDIRECT carries (a DNS name of 253 bytes, a colon and a port).
inline constexpr std::size_t kMaxAddressSize = 260;

/// Connection-level error; the sender closes the connection after it.
struct Error {
  Status status = Status::protocol_error;
  std::string message;
};

}  // namespace switchboard::wire
