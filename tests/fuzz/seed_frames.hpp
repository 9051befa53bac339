// Sample frames of every kind for the fuzz seed corpora: valid client and relay frames and a few
// broken streams.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "switchboard/wire/codec.hpp"

namespace switchboard::seeds {

using Buffer = std::vector<std::uint8_t>;
using Named = std::vector<std::pair<std::string, Buffer>>;

inline Uuid fixed_uuid(std::uint8_t first) {
  Uuid id;
  for (std::size_t i = 0; i < id.bytes.size(); ++i)
    id.bytes[i] = static_cast<std::uint8_t>(first + i);
  return id;
}
inline Uuid channel() { return fixed_uuid(0x10); }
inline Uuid peer() { return fixed_uuid(0x40); }

inline wire::Bytes text(const char* s) {
  return {reinterpret_cast<const std::uint8_t*>(s), std::char_traits<char>::length(s)};
}

template <typename Encode>
Buffer frame(Encode&& encode) {
  Buffer out;
  encode(out);
  return out;
}

inline wire::Hello hello(bool accept_requests) {
  wire::Hello hello;
  hello.hello_flags = accept_requests ? wire::flags::kAcceptRequests : 0;
  hello.channel = channel();
  hello.max_frame = wire::kMinMaxFrame;
  hello.stream_window = 4096;
  return hello;
}

/// Frames a client sends, one of each kind.
inline Named client_frames() {
  using namespace wire;
  Named out;
  out.emplace_back("hello", frame([](Buffer& b) { append_hello(b, hello(true)); }));
  Open open;
  open.kind = StreamKind::to_any;
  open.deadline_ms = 2000;
  open.metadata = {{"content-type", "text/plain"}, {"trace", "abc"}};
  out.emplace_back("open-body",
                   frame([&](Buffer& b) { append_open(b, 1, open, text("request body")); }));
  Open broadcast;
  broadcast.kind = StreamKind::broadcast;
  out.emplace_back("open-broadcast-fin",
                   frame([&](Buffer& b) { append_open(b, 3, broadcast, text("all"), true); }));
  out.emplace_back("data", frame([](Buffer& b) { append_data(b, 1, text("more bytes"), false); }));
  out.emplace_back("data-fin", frame([](Buffer& b) { append_data(b, 1, {}, true); }));
  out.emplace_back("window", frame([](Buffer& b) { append_window(b, 2, 4096); }));
  out.emplace_back("end", frame([](Buffer& b) {
                     append_end(b, 2, End{Status::application, 7, 0, 0, "no such item"});
                   }));
  out.emplace_back("reset", frame([](Buffer& b) {
                     append_reset(b, 1, Reset{Status::cancelled, 0, "bye"});
                   }));
  out.emplace_back("ping", frame([](Buffer& b) { append_ping(b, 0x1122334455667788u, false); }));
  out.emplace_back("pong", frame([](Buffer& b) { append_ping(b, 1, true); }));
  return out;
}

/// Frames only the relay sends.
inline Named relay_frames() {
  using namespace wire;
  Named out;
  Welcome welcome;
  welcome.peer_id = peer();
  welcome.max_frame = 65536;
  welcome.stream_window = 262144;
  welcome.max_streams = 256;
  welcome.keepalive_ms = 15000;
  out.emplace_back("welcome", frame([&](Buffer& b) { append_welcome(b, welcome); }));
  out.emplace_back("presence-snapshot", frame([](Buffer& b) {
                     append_presence(b, Presence{PresenceEvent::snapshot, 3, {peer(), channel()}});
                   }));
  out.emplace_back("presence-joined", frame([](Buffer& b) {
                     append_presence(b, Presence{PresenceEvent::joined, 4, {peer()}});
                   }));
  out.emplace_back("goaway", frame([](Buffer& b) {
                     append_go_away(b, GoAway{5, Status::ok, "draining"});
                   }));
  out.emplace_back("error", frame([](Buffer& b) {
                     append_error(b, Error{Status::protocol_error, "bad frame"});
                   }));
  return out;
}

/// Streams that must fail: garbage, an unknown type, a stream frame on stream 0, too large.
inline Named bad_streams() {
  Named out;
  out.emplace_back("garbage", Buffer{0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
                                     0x06, 0x07, 0x08, 0x09, 0x0A});
  out.emplace_back("unknown-type", Buffer{0x7F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  out.emplace_back("data-on-stream-0", Buffer{0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'x'});
  out.emplace_back("too-large", Buffer{0x11, 0, 0, 0, 0, 0, 0, 1, 0x7F, 0xFF, 0xFF, 0xFF});
  out.emplace_back("truncated-hello",
                   Buffer{0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 'S', 'W', 'B', 'D', 0, 1});
  return out;
}

}  // namespace switchboard::seeds
