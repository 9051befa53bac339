// HTTP/2 frame-header checks for the gRPC door: preface, frame sizes, header blocks, stream
// counts and rate limits, over bytes split anywhere.
#include "grpc_gateway/h2_guard.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace switchboard::gateway {
namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr std::uint32_t kLargestFrame = (1U << 24) - 1;

// Frame types and flags (RFC 9113 section 6).
enum FrameType : std::uint8_t {
  kData = 0x0,
  kHeaders = 0x1,
  kPriority = 0x2,
  kRstStream = 0x3,
  kSettings = 0x4,
  kPushPromise = 0x5,
  kPing = 0x6,
  kGoaway = 0x7,
  kWindowUpdate = 0x8,
  kContinuation = 0x9,
};
constexpr std::uint8_t kEndStream = 0x1;
constexpr std::uint8_t kAck = 0x1;
constexpr std::uint8_t kEndHeaders = 0x4;
constexpr std::uint16_t kSettingsMaxConcurrentStreams = 0x3;
constexpr std::uint16_t kSettingsMaxFrameSize = 0x5;

std::uint32_t read24(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 16) | (std::uint32_t{p[1]} << 8) | p[2];
}
std::uint32_t read32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}
void put32(std::uint8_t* p, std::uint32_t value) {
  p[0] = static_cast<std::uint8_t>(value >> 24);
  p[1] = static_cast<std::uint8_t>(value >> 16);
  p[2] = static_cast<std::uint8_t>(value >> 8);
  p[3] = static_cast<std::uint8_t>(value);
}
void put_header(std::uint8_t* p, std::uint32_t length, std::uint8_t type, std::uint8_t flags,
                std::uint32_t stream) {
  p[0] = static_cast<std::uint8_t>(length >> 16);
  p[1] = static_cast<std::uint8_t>(length >> 8);
  p[2] = static_cast<std::uint8_t>(length);
  p[3] = type;
  p[4] = flags;
  put32(p + 5, stream & 0x7fffffffU);
}

// Fills `d.header` from `bytes[at..]`; true once the nine bytes are there (then parsed).
bool fill_header(auto& d, std::span<const std::uint8_t> bytes, std::size_t& at) {
  const std::size_t n = std::min(d.header.size() - d.header_filled, bytes.size() - at);
  std::memcpy(d.header.data() + d.header_filled, bytes.data() + at, n);
  d.header_filled += n;
  at += n;
  if (d.header_filled < d.header.size()) return false;
  d.header_filled = 0;
  d.length = read24(d.header.data());
  d.type = d.header[3];
  d.flags = d.header[4];
  d.stream = read32(d.header.data() + 5) & 0x7fffffffU;
  d.remaining = d.length;
  return true;
}

}  // namespace

std::string_view violation_name(GuardViolation violation) noexcept {
  switch (violation) {
    case GuardViolation::bad_preface:
      return "bad_preface";
    case GuardViolation::frame_too_large:
      return "frame_too_large";
    case GuardViolation::header_block_too_large:
      return "header_block_too_large";
    case GuardViolation::continuation:
      return "continuation";
    case GuardViolation::bad_stream_id:
      return "bad_stream_id";
    case GuardViolation::control_flood:
      return "control_flood";
    case GuardViolation::reset_flood:
      return "reset_flood";
    case GuardViolation::refusals_pending:
      return "refusals_pending";
    case GuardViolation::count_:
      break;
  }
  return "unknown";
}

H2Guard::H2Guard(H2GuardLimits limits, Clock::time_point now) : limits_(limits) {
  client_.state = Direction::State::preface;
  control_ = {static_cast<double>(std::max<std::uint32_t>(1, limits_.control_frames_per_second)),
              now};
  resets_ = {static_cast<double>(std::max<std::uint32_t>(1, limits_.resets_per_second)), now};
}

GuardStep H2Guard::fail(GuardViolation violation, H2Error code, std::string detail) {
  GuardStep step;
  step.kind = GuardStep::Kind::violation;
  step.violation = violation;
  step.code = code;
  step.detail = std::move(detail);
  failed_ = step;
  return step;
}

// A token bucket holding one second's worth: `rate` a second, with a burst of `rate`.
bool H2Guard::take(Bucket& bucket, std::uint32_t rate, Clock::time_point now) {
  if (rate == 0) return true;
  const double burst = rate;
  if (now > bucket.updated) {
    const double elapsed = std::chrono::duration<double>(now - bucket.updated).count();
    bucket.tokens = std::min(burst, bucket.tokens + elapsed * rate);
    bucket.updated = now;
  }
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

GuardStep H2Guard::client_bytes(std::span<const std::uint8_t> bytes, Clock::time_point now) {
  if (failed_) return *failed_;
  auto& d = client_;
  std::size_t at = 0;
  while (at < bytes.size()) {
    switch (d.state) {
      case Direction::State::preface: {
        const std::size_t n = std::min(kPreface.size() - preface_matched_, bytes.size() - at);
        if (std::memcmp(bytes.data() + at, kPreface.data() + preface_matched_, n) != 0) {
          return fail(GuardViolation::bad_preface, H2Error::protocol_error,
                      "not an HTTP/2 connection preface");
        }
        preface_matched_ += n;
        at += n;
        if (preface_matched_ == kPreface.size()) d.state = Direction::State::header;
        continue;
      }
      case Direction::State::header:
        if (!fill_header(d, bytes, at)) continue;
        if (auto failed = client_frame(now)) return *failed;
        if (d.remaining > 0) {
          d.state = Direction::State::payload;
          continue;
        }
        break;
      case Direction::State::payload: {
        const auto n =
            static_cast<std::uint32_t>(std::min<std::size_t>(d.remaining, bytes.size() - at));
        d.remaining -= n;
        at += n;
        if (d.remaining > 0) continue;
        d.state = Direction::State::header;
        break;
      }
    }
    // A whole frame has passed: a refused stream's header block ends here.
    if (refuse_at_end_ != 0) {
      GuardStep step;
      step.kind = GuardStep::Kind::refuse;
      step.consumed = at;
      step.stream = refuse_at_end_;
      refuse_at_end_ = 0;
      return step;
    }
  }
  GuardStep step;
  step.consumed = at;
  return step;
}

std::optional<GuardStep> H2Guard::client_frame(Clock::time_point now) {
  const auto& d = client_;
  if (!settings_seen_) {
    if (d.type != kSettings || (d.flags & kAck) != 0) {
      return fail(GuardViolation::bad_preface, H2Error::protocol_error,
                  "the first frame must be SETTINGS");
    }
    settings_seen_ = true;
  }
  if (d.length > max_frame_) {
    return fail(
        GuardViolation::frame_too_large, H2Error::frame_size_error,
        fmt::format("frame of {} bytes exceeds the {} the server accepts", d.length, max_frame_));
  }
  if (block_stream_ != 0 && (d.type != kContinuation || d.stream != block_stream_)) {
    return fail(GuardViolation::continuation, H2Error::protocol_error,
                fmt::format("frame of type {} inside the header block of stream {}", d.type,
                            block_stream_));
  }
  const bool empty_fragment = d.length == 0 && (d.flags & kEndHeaders) == 0;
  const auto control_flood = [&]() -> std::optional<GuardStep> {
    if (take(control_, limits_.control_frames_per_second, now)) return std::nullopt;
    return fail(
        GuardViolation::control_flood, H2Error::enhance_your_calm,
        fmt::format("more than {} control frames a second", limits_.control_frames_per_second));
  };
  const auto block_too_large = [&]() {
    return fail(GuardViolation::header_block_too_large, H2Error::enhance_your_calm,
                fmt::format("header block exceeds {} bytes", limits_.max_header_block));
  };
  switch (d.type) {
    case kData:
      if ((d.flags & kEndStream) != 0) {
        end_stream(d.stream, kClientEnded);
      } else if (d.length == 0) {
        return control_flood();
      }
      return std::nullopt;
    case kHeaders: {
      if (d.stream == 0 || (d.stream & 1) == 0) {
        return fail(GuardViolation::bad_stream_id, H2Error::protocol_error,
                    fmt::format("HEADERS on stream {}", d.stream));
      }
      if (d.length > limits_.max_header_block) return block_too_large();
      bool refused = false;
      if (d.stream > last_client_stream_) {
        last_client_stream_ = d.stream;
        if (open_streams_ >= limits_.max_streams) {
          refused = true;
          if (!take(resets_, limits_.resets_per_second, now)) {
            return fail(GuardViolation::reset_flood, H2Error::enhance_your_calm,
                        fmt::format("more than {} refused or reset streams a second",
                                    limits_.resets_per_second));
          }
        } else {
          streams_.emplace(d.stream, 0);
          ++open_streams_;
        }
      }
      if ((d.flags & kEndStream) != 0) end_stream(d.stream, kClientEnded);
      if ((d.flags & kEndHeaders) == 0) {
        block_stream_ = d.stream;
        block_bytes_ = d.length;
        block_refused_ = refused;
      } else if (refused) {
        refuse_at_end_ = d.stream;
      }
      if (empty_fragment) return control_flood();
      return std::nullopt;
    }
    case kContinuation:
      if (block_stream_ == 0) {
        return fail(
            GuardViolation::continuation, H2Error::protocol_error,
            fmt::format("CONTINUATION on stream {} without an open header block", d.stream));
      }
      block_bytes_ += d.length;
      if (block_bytes_ > limits_.max_header_block) return block_too_large();
      if ((d.flags & kEndHeaders) != 0) {
        if (block_refused_) refuse_at_end_ = block_stream_;
        block_stream_ = 0;
        block_bytes_ = 0;
        block_refused_ = false;
      }
      if (empty_fragment) return control_flood();
      return std::nullopt;
    case kRstStream:
      close_stream(d.stream);
      if (take(resets_, limits_.resets_per_second, now)) return std::nullopt;
      return fail(
          GuardViolation::reset_flood, H2Error::enhance_your_calm,
          fmt::format("more than {} refused or reset streams a second", limits_.resets_per_second));
    case kPushPromise:
    case kGoaway:
    case kWindowUpdate:
      return std::nullopt;  // gRPC judges these; they cost it little
    case kPriority:
    case kSettings:
    case kPing:
    default:
      return control_flood();
  }
}

void H2Guard::server_bytes(std::span<std::uint8_t> bytes) {
  auto& d = server_;
  std::size_t at = 0;
  while (at < bytes.size()) {
    if (d.state != Direction::State::payload) {
      if (!fill_header(d, bytes, at)) continue;
      server_frame();
      if (d.remaining > 0) d.state = Direction::State::payload;
      continue;
    }
    const auto n =
        static_cast<std::uint32_t>(std::min<std::size_t>(d.remaining, bytes.size() - at));
    if (d.type == kSettings && (d.flags & kAck) == 0) server_payload(bytes.subspan(at, n));
    d.remaining -= n;
    at += n;
    if (d.remaining == 0) d.state = Direction::State::header;
  }
}

void H2Guard::server_frame() {
  const auto& d = server_;
  switch (d.type) {
    case kData:
    case kHeaders:
      if ((d.flags & kEndStream) != 0) end_stream(d.stream, kServerEnded);
      break;
    case kRstStream:
      close_stream(d.stream);
      break;
    case kSettings:
      setting_filled_ = 0;
      break;
    default:
      break;
  }
}

// SETTINGS entries: 16-bit identifier, 32-bit value. The frame size is noted; the stream limit
// is rewritten byte by byte once its identifier has passed, whatever the split.
void H2Guard::server_payload(std::span<std::uint8_t> bytes) {
  for (auto& byte : bytes) {
    if (setting_filled_ >= 2 &&
        ((setting_[0] << 8) | setting_[1]) == kSettingsMaxConcurrentStreams) {
      const auto shift = 8 * (5 - setting_filled_);
      byte = static_cast<std::uint8_t>(limits_.max_streams >> shift);
    }
    setting_[setting_filled_++] = byte;
    if (setting_filled_ < setting_.size()) continue;
    setting_filled_ = 0;
    const auto id = static_cast<std::uint16_t>((setting_[0] << 8) | setting_[1]);
    if (id != kSettingsMaxFrameSize) continue;
    const std::uint32_t value = read32(setting_.data() + 2);
    max_frame_ = std::clamp(value, kDefaultMaxFrame, kLargestFrame);
  }
}

void H2Guard::end_stream(std::uint32_t stream, std::uint8_t side) {
  auto it = streams_.find(stream);
  if (it == streams_.end()) return;
  it->second |= side;
  if (it->second == (kClientEnded | kServerEnded)) {
    streams_.erase(it);
    --open_streams_;
  }
}

void H2Guard::close_stream(std::uint32_t stream) {
  if (streams_.erase(stream) > 0) --open_streams_;
}

std::vector<std::uint8_t> goaway_frame(std::uint32_t last_stream, H2Error code,
                                       std::string_view debug) {
  debug = debug.substr(0, 1024);
  std::vector<std::uint8_t> frame(9 + 8 + debug.size());
  put_header(frame.data(), static_cast<std::uint32_t>(8 + debug.size()), kGoaway, 0, 0);
  put32(frame.data() + 9, last_stream & 0x7fffffffU);
  put32(frame.data() + 13, static_cast<std::uint32_t>(code));
  std::memcpy(frame.data() + 17, debug.data(), debug.size());
  return frame;
}

std::array<std::uint8_t, 13> rst_stream_frame(std::uint32_t stream, H2Error code) {
  std::array<std::uint8_t, 13> frame{};
  put_header(frame.data(), 4, kRstStream, 0, stream);
  put32(frame.data() + 9, static_cast<std::uint32_t>(code));
  return frame;
}

}  // namespace switchboard::gateway
