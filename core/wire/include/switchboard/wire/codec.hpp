// Pure encoding and decoding of frames over byte spans: no I/O, no allocation for data frames.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "switchboard/wire/frame.hpp"

namespace switchboard::wire {

using Bytes = std::span<const std::uint8_t>;

enum class DecodeError : std::uint8_t {
  none = 0,
  frame_too_large,  ///< header length exceeds the negotiated max frame
  unknown_type,     ///< frame type not in this protocol version
  bad_stream_id,    ///< stream frame on stream 0, or connection frame on a stream
  malformed,        ///< payload does not match its type's layout
  bad_magic,        ///< HELLO does not start with "SWBD"
  unsupported_version,
  bad_status,  ///< status value outside the defined set
};

std::string_view decode_error_name(DecodeError error) noexcept;

/// Result of looking at the front of a byte buffer.
struct DecodeResult {
  enum class Kind : std::uint8_t { need_more, frame, error };
  Kind kind = Kind::need_more;
  DecodeError error = DecodeError::none;
  FrameHeader header{};
  Bytes payload{};           ///< view into the input (frame only)
  std::size_t consumed = 0;  ///< header + payload bytes (frame only)
  std::size_t needed = 0;    ///< total bytes needed for the next frame (need_more only)
};

/// Decodes the frame at the front of `input`. A header is validated (type, stream id, length
/// against `max_frame`) as soon as its 12 bytes are present, before any payload is waited for.
DecodeResult decode_frame(Bytes input, std::uint32_t max_frame) noexcept;

/// Writes a 12-byte header into `out`.
void encode_header(const FrameHeader& header, std::uint8_t* out) noexcept;

// Payload parsers. Each validates the whole layout; trailing bytes are an error except where the
// layout says "rest" (OPEN's first body chunk).
DecodeError parse_hello(Bytes payload, Hello& out);
/// Bytes from the start of a connection up to the end of its HELLO's channel id.
inline constexpr std::size_t kHelloChannelPrefixSize = kHeaderSize + 4 + 2 + 2 + 16;
/// The channel named by the HELLO that `prefix` (the first bytes a client sent) starts with;
/// nullopt if they are too few or not the start of a HELLO. Only a hint for placing the
/// connection: the full HELLO is still parsed and validated by parse_hello.
std::optional<Uuid> hello_channel_hint(Bytes prefix) noexcept;
/// True when `prefix` (a connection's first bytes, at least one) starts a shared connection.
constexpr bool is_mux_prefix(Bytes prefix) noexcept {
  return !prefix.empty() && prefix[0] == kMuxFrameType;
}
DecodeError parse_mux_hello(Bytes payload, MuxHello& out) noexcept;
DecodeError parse_mux_welcome(Bytes payload, MuxWelcome& out) noexcept;
/// The 12 header bytes at `in`, read as they are: the shared connection checks them itself.
FrameHeader read_header(const std::uint8_t* in) noexcept;
DecodeError parse_welcome(Bytes payload, Welcome& out);
DecodeError parse_presence(Bytes payload, Presence& out);
/// `body` receives the view of the first body chunk carried by the OPEN frame.
DecodeError parse_open(Bytes payload, Open& out, Bytes& body);
DecodeError parse_end(Bytes payload, End& out);
DecodeError parse_reset(Bytes payload, Reset& out);
DecodeError parse_window(Bytes payload, std::uint32_t& increment) noexcept;
DecodeError parse_ping(Bytes payload, std::uint64_t& opaque) noexcept;
DecodeError parse_go_away(Bytes payload, GoAway& out);
DecodeError parse_redirect(Bytes payload, Redirect& out);
DecodeError parse_error(Bytes payload, Error& out);
/// `body` receives the view of the message's body.
DecodeError parse_message(Bytes payload, MessageHead& out, Bytes& body) noexcept;
DecodeError parse_message_report(Bytes payload, MessageReport& out) noexcept;

// Encoders append a whole frame (header + payload) to `out`.
void append_hello(std::vector<std::uint8_t>& out, const Hello& hello);
void append_welcome(std::vector<std::uint8_t>& out, const Welcome& welcome);
void append_presence(std::vector<std::uint8_t>& out, const Presence& presence, bool more = false);
/// The OPEN frame carries `body` as its first chunk; `fin` ends the sender's direction with it.
void append_open(std::vector<std::uint8_t>& out, std::uint32_t stream, const Open& open,
                 Bytes body = {}, bool fin = false);
void append_data(std::vector<std::uint8_t>& out, std::uint32_t stream, Bytes body, bool fin);
void append_end(std::vector<std::uint8_t>& out, std::uint32_t stream, const End& end);
void append_reset(std::vector<std::uint8_t>& out, std::uint32_t stream, const Reset& reset);
void append_window(std::vector<std::uint8_t>& out, std::uint32_t stream, std::uint32_t increment);
void append_ping(std::vector<std::uint8_t>& out, std::uint64_t opaque, bool ack);
void append_go_away(std::vector<std::uint8_t>& out, const GoAway& go_away);
void append_redirect(std::vector<std::uint8_t>& out, const Redirect& redirect);
void append_error(std::vector<std::uint8_t>& out, const Error& error);
void append_message(std::vector<std::uint8_t>& out, const MessageHead& head, Bytes body);
/// MESSAGE's header and fixed part only (kHeaderSize + kMessageHeadSize bytes at `out`), for a
/// body of `body_size` bytes that is written separately (a gathered write).
void encode_message_head(const MessageHead& head, std::size_t body_size,
                         std::uint8_t* out) noexcept;
void append_message_report(std::vector<std::uint8_t>& out, const MessageReport& report);
void append_mux_hello(std::vector<std::uint8_t>& out, const MuxHello& hello);
void append_mux_welcome(std::vector<std::uint8_t>& out, const MuxWelcome& welcome);
/// The header of a LANE frame carrying `length` bytes of `lane` (FIN: its last).
void encode_lane_header(std::uint32_t lane, std::uint32_t length, bool fin,
                        std::uint8_t* out) noexcept;

/// Size of the OPEN payload before the body (fixed part + metadata).
std::size_t open_prefix_size(const Open& open) noexcept;

}  // namespace switchboard::wire
