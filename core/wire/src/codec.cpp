// Frame encoding and decoding; the byte layouts are those of docs/PROTOCOL.md.
#include "switchboard/wire/codec.hpp"

#include <algorithm>
#include <cstring>

namespace switchboard::wire {
namespace {

// The shared-connection version whose MUX answer carries `shards` (version 4: reserved, 0).
constexpr std::uint16_t kMuxShardsVersion = 5;

// Big-endian cursor over a payload; any read past the end marks it failed.
class Reader {
public:
  explicit Reader(Bytes bytes) noexcept : bytes_(bytes) {}

  bool ok() const noexcept { return ok_; }
  bool at_end() const noexcept { return pos_ == bytes_.size(); }
  Bytes rest() const noexcept { return bytes_.subspan(std::min(pos_, bytes_.size())); }

  std::uint8_t u8() noexcept { return static_cast<std::uint8_t>(take(1)); }
  std::uint16_t u16() noexcept { return static_cast<std::uint16_t>(take(2)); }
  std::uint32_t u32() noexcept { return static_cast<std::uint32_t>(take(4)); }
  std::uint64_t u64() noexcept { return take(8); }

  Uuid uuid() noexcept {
    Uuid id;
    if (need(16)) {
      std::memcpy(id.bytes.data(), bytes_.data() + pos_, 16);
      pos_ += 16;
    }
    return id;
  }

  std::string text(std::size_t size) {
    if (!need(size)) return {};
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), size);
    pos_ += size;
    return s;
  }

private:
  bool need(std::size_t n) noexcept {
    if (!ok_ || bytes_.size() - pos_ < n) {
      ok_ = false;
      return false;
    }
    return true;
  }

  std::uint64_t take(std::size_t n) noexcept {
    if (!need(n)) return 0;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v = (v << 8) | bytes_[pos_ + i];
    pos_ += n;
    return v;
  }

  Bytes bytes_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

void put(std::vector<std::uint8_t>& out, std::uint64_t v, std::size_t n) {
  for (std::size_t i = n; i-- > 0;) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
void put_u8(std::vector<std::uint8_t>& out, std::uint8_t v) { out.push_back(v); }
void put_u16(std::vector<std::uint8_t>& out, std::uint16_t v) { put(out, v, 2); }
void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) { put(out, v, 4); }
void put_u64(std::vector<std::uint8_t>& out, std::uint64_t v) { put(out, v, 8); }
void put_bytes(std::vector<std::uint8_t>& out, const void* data, std::size_t size) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  out.insert(out.end(), p, p + size);
}
void put_uuid(std::vector<std::uint8_t>& out, const Uuid& id) {
  put_bytes(out, id.bytes.data(), id.bytes.size());
}

std::string_view clamp_message(const std::string& message) {
  return std::string_view(message).substr(0, kMaxMessageSize);
}

// Reserves a header, returns its offset; finish_frame fills in the length.
std::size_t begin_frame(std::vector<std::uint8_t>& out, FrameType type, std::uint8_t frame_flags,
                        std::uint32_t stream) {
  const std::size_t at = out.size();
  out.resize(at + kHeaderSize);
  encode_header(FrameHeader{type, frame_flags, stream, 0}, out.data() + at);
  return at;
}

void finish_frame(std::vector<std::uint8_t>& out, std::size_t at) {
  const auto length = static_cast<std::uint32_t>(out.size() - at - kHeaderSize);
  std::uint8_t* p = out.data() + at + 8;
  p[0] = static_cast<std::uint8_t>(length >> 24);
  p[1] = static_cast<std::uint8_t>(length >> 16);
  p[2] = static_cast<std::uint8_t>(length >> 8);
  p[3] = static_cast<std::uint8_t>(length);
}

bool known_type(std::uint8_t t) noexcept {
  return (t >= 0x01 && t <= 0x09) || (t >= 0x10 && t <= 0x14);
}

DecodeError finish(const Reader& r) noexcept {
  return r.ok() && r.at_end() ? DecodeError::none : DecodeError::malformed;
}

DecodeError read_status(Reader& r, Status& out) noexcept {
  const std::uint16_t v = r.u16();
  if (!r.ok()) return DecodeError::malformed;
  if (!is_valid_status(v)) return DecodeError::bad_status;
  out = static_cast<Status>(v);
  return DecodeError::none;
}

}  // namespace

std::string supported_versions_text() {
  std::string text;
  for (auto version = kOldestProtocolVersion; version <= kProtocolVersion; ++version) {
    if (!text.empty()) text += version == kProtocolVersion ? " and " : ", ";
    text += std::to_string(version);
  }
  return text;
}

std::string_view frame_type_name(FrameType type) noexcept {
  switch (type) {
    case FrameType::hello:
      return "HELLO";
    case FrameType::welcome:
      return "WELCOME";
    case FrameType::presence:
      return "PRESENCE";
    case FrameType::ping:
      return "PING";
    case FrameType::go_away:
      return "GOAWAY";
    case FrameType::error:
      return "ERROR";
    case FrameType::redirect:
      return "REDIRECT";
    case FrameType::message:
      return "MESSAGE";
    case FrameType::message_report:
      return "MESSAGE_REPORT";
    case FrameType::open:
      return "OPEN";
    case FrameType::data:
      return "DATA";
    case FrameType::end:
      return "END";
    case FrameType::reset:
      return "RESET";
    case FrameType::window:
      return "WINDOW";
  }
  return "UNKNOWN";
}

std::string_view decode_error_name(DecodeError error) noexcept {
  switch (error) {
    case DecodeError::none:
      return "none";
    case DecodeError::frame_too_large:
      return "frame too large";
    case DecodeError::unknown_type:
      return "unknown frame type";
    case DecodeError::bad_stream_id:
      return "bad stream id";
    case DecodeError::malformed:
      return "malformed payload";
    case DecodeError::bad_magic:
      return "bad magic";
    case DecodeError::unsupported_version:
      return "unsupported protocol version";
    case DecodeError::bad_status:
      return "bad status code";
  }
  return "unknown";
}

DecodeResult decode_frame(Bytes input, std::uint32_t max_frame) noexcept {
  DecodeResult result;
  if (input.size() < kHeaderSize) {
    result.needed = kHeaderSize;
    return result;
  }
  const std::uint8_t* p = input.data();
  const std::uint8_t type = p[0];
  FrameHeader& h = result.header;
  h.type = static_cast<FrameType>(type);
  h.flags = p[1];
  h.stream = (std::uint32_t{p[4]} << 24) | (std::uint32_t{p[5]} << 16) |
             (std::uint32_t{p[6]} << 8) | std::uint32_t{p[7]};
  h.length = (std::uint32_t{p[8]} << 24) | (std::uint32_t{p[9]} << 16) |
             (std::uint32_t{p[10]} << 8) | std::uint32_t{p[11]};
  result.kind = DecodeResult::Kind::error;
  if (!known_type(type)) {
    result.error = DecodeError::unknown_type;
    return result;
  }
  if (is_stream_frame(h.type) != (h.stream != 0)) {
    result.error = DecodeError::bad_stream_id;
    return result;
  }
  if (h.length > max_frame) {
    result.error = DecodeError::frame_too_large;
    return result;
  }
  const std::size_t total = kHeaderSize + std::size_t{h.length};
  if (input.size() < total) {
    result.kind = DecodeResult::Kind::need_more;
    result.needed = total;
    return result;
  }
  result.kind = DecodeResult::Kind::frame;
  result.payload = input.subspan(kHeaderSize, h.length);
  result.consumed = total;
  return result;
}

void encode_header(const FrameHeader& header, std::uint8_t* out) noexcept {
  out[0] = static_cast<std::uint8_t>(header.type);
  out[1] = header.flags;
  out[2] = 0;
  out[3] = 0;
  out[4] = static_cast<std::uint8_t>(header.stream >> 24);
  out[5] = static_cast<std::uint8_t>(header.stream >> 16);
  out[6] = static_cast<std::uint8_t>(header.stream >> 8);
  out[7] = static_cast<std::uint8_t>(header.stream);
  out[8] = static_cast<std::uint8_t>(header.length >> 24);
  out[9] = static_cast<std::uint8_t>(header.length >> 16);
  out[10] = static_cast<std::uint8_t>(header.length >> 8);
  out[11] = static_cast<std::uint8_t>(header.length);
}

// HELLO: magic[4] version u16 flags u16 channel[16] peer[16] max_frame u32 window u32
//        token_len u16 token
DecodeError parse_hello(Bytes payload, Hello& out) {
  if (payload.size() < 4 || std::memcmp(payload.data(), kMagic, 4) != 0) {
    return DecodeError::bad_magic;
  }
  Reader r(payload.subspan(4));
  out.version = r.u16();
  if (!r.ok()) return DecodeError::malformed;
  if (!is_supported_version(out.version)) return DecodeError::unsupported_version;
  out.hello_flags = r.u16();
  out.channel = r.uuid();
  out.peer_id = r.uuid();
  out.max_frame = r.u32();
  out.stream_window = r.u32();
  const std::uint16_t token_len = r.u16();
  if (!r.ok() || token_len > kMaxTokenSize) return DecodeError::malformed;
  out.token = r.text(token_len);
  if (out.channel.is_nil() || out.max_frame < kMinMaxFrame || out.stream_window == 0 ||
      out.stream_window > kMaxWindow) {
    return DecodeError::malformed;
  }
  // An observer is no peer, so it cannot be a target of requests either.
  if (out.observes() && out.accepts_requests()) return DecodeError::malformed;
  return finish(r);
}

std::optional<Uuid> hello_channel_hint(Bytes prefix) noexcept {
  if (prefix.size() < kHelloChannelPrefixSize) return std::nullopt;
  // A MUX names its placement channel where a HELLO names its channel.
  if (prefix[0] != static_cast<std::uint8_t>(FrameType::hello) && prefix[0] != kMuxFrameType) {
    return std::nullopt;
  }
  const auto payload = prefix.subspan(kHeaderSize);
  if (std::memcmp(payload.data(), kMagic, 4) != 0) return std::nullopt;
  Uuid channel;
  std::memcpy(channel.bytes.data(), payload.data() + 8, channel.bytes.size());
  if (channel.is_nil()) return std::nullopt;
  return channel;
}

DecodeError parse_mux_hello(Bytes payload, MuxHello& out) noexcept {
  if (payload.size() != kMuxHelloSize) return DecodeError::malformed;
  if (std::memcmp(payload.data(), kMagic, 4) != 0) return DecodeError::bad_magic;
  Reader r(payload.subspan(4));
  out.version = r.u16();
  r.u16();  // flags: none defined
  out.placement = r.uuid();
  if (out.version < kMinMuxVersion || out.version > kMuxVersion) {
    return DecodeError::unsupported_version;
  }
  return DecodeError::none;
}

DecodeError parse_mux_welcome(Bytes payload, MuxWelcome& out) noexcept {
  if (payload.size() != kMuxWelcomeSize) return DecodeError::malformed;
  if (std::memcmp(payload.data(), kMagic, 4) != 0) return DecodeError::bad_magic;
  Reader r(payload.subspan(4));
  out.version = r.u16();
  out.shards = r.u16();
  out.max_lanes = r.u32();
  if (out.version < kMinMuxVersion || out.version > kMuxVersion) {
    return DecodeError::unsupported_version;
  }
  if (out.version < kMuxShardsVersion) out.shards = 0;
  if (out.max_lanes == 0) return DecodeError::malformed;
  return DecodeError::none;
}

FrameHeader read_header(const std::uint8_t* in) noexcept {
  const auto u32 = [](const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
           std::uint32_t{p[3]};
  };
  return FrameHeader{static_cast<FrameType>(in[0]), in[1], u32(in + 4), u32(in + 8)};
}

void append_mux_hello(std::vector<std::uint8_t>& out, const MuxHello& hello) {
  const auto at = begin_frame(out, static_cast<FrameType>(kMuxFrameType), 0, 0);
  put_bytes(out, kMagic, 4);
  put_u16(out, hello.version);
  put_u16(out, 0);
  put_uuid(out, hello.placement);
  finish_frame(out, at);
}

void append_mux_welcome(std::vector<std::uint8_t>& out, const MuxWelcome& welcome) {
  const auto at = begin_frame(out, static_cast<FrameType>(kMuxFrameType), 0, 0);
  put_bytes(out, kMagic, 4);
  put_u16(out, welcome.version);
  put_u16(out, welcome.version >= kMuxShardsVersion ? welcome.shards : std::uint16_t{0});
  put_u32(out, welcome.max_lanes);
  finish_frame(out, at);
}

void encode_lane_header(std::uint32_t lane, std::uint32_t length, bool fin,
                        std::uint8_t* out) noexcept {
  encode_header(FrameHeader{static_cast<FrameType>(kLaneFrameType),
                            fin ? kLaneFin : std::uint8_t{0}, lane, length},
                out);
}

void append_hello(std::vector<std::uint8_t>& out, const Hello& hello) {
  const auto at = begin_frame(out, FrameType::hello, 0, 0);
  put_bytes(out, kMagic, 4);
  put_u16(out, hello.version);
  put_u16(out, hello.hello_flags);
  put_uuid(out, hello.channel);
  put_uuid(out, hello.peer_id);
  put_u32(out, hello.max_frame);
  put_u32(out, hello.stream_window);
  const auto token = std::string_view(hello.token).substr(0, kMaxTokenSize);
  put_u16(out, static_cast<std::uint16_t>(token.size()));
  put_bytes(out, token.data(), token.size());
  finish_frame(out, at);
}

// WELCOME: version u16 reserved u16 peer[16] max_frame u32 window u32 max_streams u32
//          keepalive_ms u32
DecodeError parse_welcome(Bytes payload, Welcome& out) {
  Reader r(payload);
  out.version = r.u16();
  r.u16();
  out.peer_id = r.uuid();
  out.max_frame = r.u32();
  out.stream_window = r.u32();
  out.max_streams = r.u32();
  out.keepalive_ms = r.u32();
  out.message_window = out.version >= kMessageVersion ? r.u32() : 0;
  if (r.ok() && !is_supported_version(out.version)) return DecodeError::unsupported_version;
  if (r.ok() && out.version >= kMessageVersion && out.message_window == 0) {
    return DecodeError::malformed;
  }
  if (r.ok() && (out.max_frame < kMinMaxFrame || out.stream_window == 0 ||
                 out.stream_window > kMaxWindow || out.peer_id.is_nil())) {
    return DecodeError::malformed;
  }
  return finish(r);
}

void append_welcome(std::vector<std::uint8_t>& out, const Welcome& welcome) {
  const auto at = begin_frame(out, FrameType::welcome, 0, 0);
  put_u16(out, welcome.version);
  put_u16(out, 0);
  put_uuid(out, welcome.peer_id);
  put_u32(out, welcome.max_frame);
  put_u32(out, welcome.stream_window);
  put_u32(out, welcome.max_streams);
  put_u32(out, welcome.keepalive_ms);
  if (welcome.version >= kMessageVersion) put_u32(out, welcome.message_window);
  finish_frame(out, at);
}

// PRESENCE: event u8 reserved u8 count u16 version u64 peers[count][16]
DecodeError parse_presence(Bytes payload, Presence& out) {
  Reader r(payload);
  const std::uint8_t event = r.u8();
  r.u8();
  const std::uint16_t count = r.u16();
  out.version = r.u64();
  if (!r.ok() || event > 2) return DecodeError::malformed;
  out.event = static_cast<PresenceEvent>(event);
  if (r.rest().size() != std::size_t{count} * 16) return DecodeError::malformed;
  if (out.event != PresenceEvent::snapshot && count != 1) return DecodeError::malformed;
  out.peers.clear();
  out.peers.reserve(count);
  for (std::uint16_t i = 0; i < count; ++i) out.peers.push_back(r.uuid());
  return finish(r);
}

void append_presence(std::vector<std::uint8_t>& out, const Presence& presence, bool more) {
  const auto at = begin_frame(out, FrameType::presence, more ? flags::kMore : 0, 0);
  put_u8(out, static_cast<std::uint8_t>(presence.event));
  put_u8(out, 0);
  const auto count = std::min<std::size_t>(presence.peers.size(), 0xFFFF);
  put_u16(out, static_cast<std::uint16_t>(count));
  put_u64(out, presence.version);
  for (std::size_t i = 0; i < count; ++i) put_uuid(out, presence.peers[i]);
  finish_frame(out, at);
}

// OPEN: kind u8 reserved u8 meta_count u16 deadline_ms u32 idle_ms u32 peer[16]
//       meta_count x (key_len u16 key value_len u16 value) body(rest)
DecodeError parse_open(Bytes payload, Open& out, Bytes& body) {
  Reader r(payload);
  const std::uint8_t kind = r.u8();
  r.u8();
  const std::uint16_t meta_count = r.u16();
  out.deadline_ms = r.u32();
  out.idle_ms = r.u32();
  out.peer = r.uuid();
  if (!r.ok() || kind > 2 || meta_count > kMaxMetadataEntries) return DecodeError::malformed;
  out.kind = static_cast<StreamKind>(kind);
  out.metadata.clear();
  for (std::uint16_t i = 0; i < meta_count && r.ok(); ++i) {
    std::string key = r.text(r.u16());
    std::string value = r.text(r.u16());
    if (r.ok()) out.metadata.emplace_back(std::move(key), std::move(value));
  }
  if (!r.ok()) return DecodeError::malformed;
  body = r.rest();
  return DecodeError::none;
}

std::size_t open_prefix_size(const Open& open) noexcept {
  std::size_t size = 28;
  for (const auto& [key, value] : open.metadata) size += 4 + key.size() + value.size();
  return size;
}

void append_open(std::vector<std::uint8_t>& out, std::uint32_t stream, const Open& open, Bytes body,
                 bool fin) {
  const auto at = begin_frame(out, FrameType::open, fin ? flags::kFin : 0, stream);
  put_u8(out, static_cast<std::uint8_t>(open.kind));
  put_u8(out, 0);
  const auto count = std::min(open.metadata.size(), kMaxMetadataEntries);
  put_u16(out, static_cast<std::uint16_t>(count));
  put_u32(out, open.deadline_ms);
  put_u32(out, open.idle_ms);
  put_uuid(out, open.peer);
  for (std::size_t i = 0; i < count; ++i) {
    const auto key = std::string_view(open.metadata[i].first).substr(0, 0xFFFF);
    const auto value = std::string_view(open.metadata[i].second).substr(0, 0xFFFF);
    put_u16(out, static_cast<std::uint16_t>(key.size()));
    put_bytes(out, key.data(), key.size());
    put_u16(out, static_cast<std::uint16_t>(value.size()));
    put_bytes(out, value.data(), value.size());
  }
  put_bytes(out, body.data(), body.size());
  finish_frame(out, at);
}

void append_data(std::vector<std::uint8_t>& out, std::uint32_t stream, Bytes body, bool fin) {
  const auto at = begin_frame(out, FrameType::data, fin ? flags::kFin : 0, stream);
  put_bytes(out, body.data(), body.size());
  finish_frame(out, at);
}

// END: status u16 message_len u16 app_code u32 delivered u32 dropped u32 message
DecodeError parse_end(Bytes payload, End& out) {
  Reader r(payload);
  if (auto e = read_status(r, out.status); e != DecodeError::none) return e;
  const std::uint16_t len = r.u16();
  out.app_code = r.u32();
  out.delivered = r.u32();
  out.dropped = r.u32();
  if (!r.ok() || len > kMaxMessageSize) return DecodeError::malformed;
  out.message = r.text(len);
  return finish(r);
}

void append_end(std::vector<std::uint8_t>& out, std::uint32_t stream, const End& end) {
  const auto at = begin_frame(out, FrameType::end, 0, stream);
  const auto message = clamp_message(end.message);
  put_u16(out, static_cast<std::uint16_t>(end.status));
  put_u16(out, static_cast<std::uint16_t>(message.size()));
  put_u32(out, end.app_code);
  put_u32(out, end.delivered);
  put_u32(out, end.dropped);
  put_bytes(out, message.data(), message.size());
  finish_frame(out, at);
}

// RESET: status u16 message_len u16 app_code u32 message
DecodeError parse_reset(Bytes payload, Reset& out) {
  Reader r(payload);
  if (auto e = read_status(r, out.status); e != DecodeError::none) return e;
  const std::uint16_t len = r.u16();
  out.app_code = r.u32();
  if (!r.ok() || len > kMaxMessageSize) return DecodeError::malformed;
  out.message = r.text(len);
  return finish(r);
}

void append_reset(std::vector<std::uint8_t>& out, std::uint32_t stream, const Reset& reset) {
  const auto at = begin_frame(out, FrameType::reset, 0, stream);
  const auto message = clamp_message(reset.message);
  put_u16(out, static_cast<std::uint16_t>(reset.status));
  put_u16(out, static_cast<std::uint16_t>(message.size()));
  put_u32(out, reset.app_code);
  put_bytes(out, message.data(), message.size());
  finish_frame(out, at);
}

// MESSAGE: kind u8 reserved u8 reserved u16 peer[16] body(rest)
DecodeError parse_message(Bytes payload, MessageHead& out, Bytes& body) noexcept {
  Reader r(payload);
  const std::uint8_t kind = r.u8();
  r.u8();
  r.u16();
  out.peer = r.uuid();
  if (!r.ok()) return DecodeError::malformed;
  if (kind != static_cast<std::uint8_t>(StreamKind::to_peer) &&
      kind != static_cast<std::uint8_t>(StreamKind::broadcast)) {
    return DecodeError::malformed;
  }
  out.kind = static_cast<StreamKind>(kind);
  body = r.rest();
  return DecodeError::none;
}

void encode_message_head(const MessageHead& head, std::size_t body_size,
                         std::uint8_t* out) noexcept {
  encode_header(FrameHeader{FrameType::message, 0, 0,
                            static_cast<std::uint32_t>(kMessageHeadSize + body_size)},
                out);
  std::uint8_t* p = out + kHeaderSize;
  p[0] = static_cast<std::uint8_t>(head.kind);
  p[1] = p[2] = p[3] = 0;
  std::memcpy(p + 4, head.peer.bytes.data(), 16);
}

void append_message(std::vector<std::uint8_t>& out, const MessageHead& head, Bytes body) {
  const auto at = out.size();
  out.resize(at + kHeaderSize + kMessageHeadSize);
  encode_message_head(head, body.size(), out.data() + at);
  put_bytes(out, body.data(), body.size());
}

// MESSAGE_REPORT: credit u32 messages u32 delivered u32 dropped u32 refused u32 lost u32
DecodeError parse_message_report(Bytes payload, MessageReport& out) noexcept {
  Reader r(payload);
  out.credit = r.u32();
  out.messages = r.u32();
  out.delivered = r.u32();
  out.dropped = r.u32();
  out.refused = r.u32();
  out.lost = r.u32();
  return finish(r);
}

void append_message_report(std::vector<std::uint8_t>& out, const MessageReport& report) {
  const auto at = begin_frame(out, FrameType::message_report, 0, 0);
  put_u32(out, report.credit);
  put_u32(out, report.messages);
  put_u32(out, report.delivered);
  put_u32(out, report.dropped);
  put_u32(out, report.refused);
  put_u32(out, report.lost);
  finish_frame(out, at);
}

// WINDOW: increment u32 (nonzero)
DecodeError parse_window(Bytes payload, std::uint32_t& increment) noexcept {
  Reader r(payload);
  increment = r.u32();
  if (r.ok() && increment == 0) return DecodeError::malformed;
  return finish(r);
}

void append_window(std::vector<std::uint8_t>& out, std::uint32_t stream, std::uint32_t increment) {
  const auto at = begin_frame(out, FrameType::window, 0, stream);
  put_u32(out, increment);
  finish_frame(out, at);
}

// PING: opaque u64
DecodeError parse_ping(Bytes payload, std::uint64_t& opaque) noexcept {
  Reader r(payload);
  opaque = r.u64();
  return finish(r);
}

void append_ping(std::vector<std::uint8_t>& out, std::uint64_t opaque, bool ack) {
  const auto at = begin_frame(out, FrameType::ping, ack ? flags::kAck : 0, 0);
  put_u64(out, opaque);
  finish_frame(out, at);
}

// GOAWAY: last_stream u32 status u16 message_len u16 message
DecodeError parse_go_away(Bytes payload, GoAway& out) {
  Reader r(payload);
  out.last_stream = r.u32();
  if (auto e = read_status(r, out.status); e != DecodeError::none) return e;
  const std::uint16_t len = r.u16();
  if (!r.ok() || len > kMaxMessageSize) return DecodeError::malformed;
  out.message = r.text(len);
  return finish(r);
}

void append_go_away(std::vector<std::uint8_t>& out, const GoAway& go_away) {
  const auto at = begin_frame(out, FrameType::go_away, 0, 0);
  const auto message = clamp_message(go_away.message);
  put_u32(out, go_away.last_stream);
  put_u16(out, static_cast<std::uint16_t>(go_away.status));
  put_u16(out, static_cast<std::uint16_t>(message.size()));
  put_bytes(out, message.data(), message.size());
  finish_frame(out, at);
}

// REDIRECT: last_stream u32 revision u64 address_len u16 address message_len u16 message
DecodeError parse_redirect(Bytes payload, Redirect& out) {
  Reader r(payload);
  out.last_stream = r.u32();
  out.revision = r.u64();
  const std::uint16_t address_len = r.u16();
  if (!r.ok() || address_len == 0 || address_len > kMaxAddressSize) return DecodeError::malformed;
  out.address = r.text(address_len);
  const std::uint16_t len = r.u16();
  if (!r.ok() || len > kMaxMessageSize) return DecodeError::malformed;
  out.message = r.text(len);
  return finish(r);
}

void append_redirect(std::vector<std::uint8_t>& out, const Redirect& redirect) {
  const auto at = begin_frame(out, FrameType::redirect, 0, 0);
  const auto address = std::string_view(redirect.address).substr(0, kMaxAddressSize);
  const auto message = clamp_message(redirect.message);
  put_u32(out, redirect.last_stream);
  put_u64(out, redirect.revision);
  put_u16(out, static_cast<std::uint16_t>(address.size()));
  put_bytes(out, address.data(), address.size());
  put_u16(out, static_cast<std::uint16_t>(message.size()));
  put_bytes(out, message.data(), message.size());
  finish_frame(out, at);
}

// ERROR: status u16 message_len u16 message
DecodeError parse_error(Bytes payload, Error& out) {
  Reader r(payload);
  if (auto e = read_status(r, out.status); e != DecodeError::none) return e;
  const std::uint16_t len = r.u16();
  if (!r.ok() || len > kMaxMessageSize) return DecodeError::malformed;
  out.message = r.text(len);
  return finish(r);
}

void append_error(std::vector<std::uint8_t>& out, const Error& error) {
  const auto at = begin_frame(out, FrameType::error, 0, 0);
  const auto message = clamp_message(error.message);
  put_u16(out, static_cast<std::uint16_t>(error.status));
  put_u16(out, static_cast<std::uint16_t>(message.size()));
  put_bytes(out, message.data(), message.size());
  finish_frame(out, at);
}

}  // namespace switchboard::wire
