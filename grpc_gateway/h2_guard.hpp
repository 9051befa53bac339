// The gRPC door's HTTP/2 frame guard: checks the frame headers of one connection, both ways,
// before gRPC parses them. Pure: no I/O, no clock of its own, no connection object.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace switchboard::gateway {

/// What one gRPC connection may do before gRPC sees its bytes.
struct H2GuardLimits {
  /// Bytes of one header block (HEADERS plus its CONTINUATIONs, padding included).
  std::uint32_t max_header_block = 16 * 1024;
  /// Client streams open at once; more are refused with RST_STREAM(REFUSED_STREAM).
  std::uint32_t max_streams = 100;
  /// SETTINGS, PING, PRIORITY, empty and unknown frames from the client per second (0: no limit).
  std::uint32_t control_frames_per_second = 1000;
  /// RST_STREAM frames from the client, plus refused streams, per second (0: no limit).
  std::uint32_t resets_per_second = 200;
};

/// HTTP/2 error codes (RFC 9113 section 7) the guard sends.
enum class H2Error : std::uint32_t {
  no_error = 0x0,
  protocol_error = 0x1,
  frame_size_error = 0x6,
  refused_stream = 0x7,
  enhance_your_calm = 0xb,
};

/// Why the guard closed a connection.
enum class GuardViolation : std::uint8_t {
  bad_preface,             ///< not the HTTP/2 client preface, or no SETTINGS first
  frame_too_large,         ///< a frame longer than the server accepts
  header_block_too_large,  ///< HEADERS + CONTINUATION beyond max_header_block
  continuation,            ///< CONTINUATION out of place, or another frame inside a header block
  bad_stream_id,           ///< HEADERS on stream 0 or on a server (even) stream id
  control_flood,           ///< too many SETTINGS/PING/PRIORITY/empty frames
  reset_flood,             ///< too many RST_STREAMs or refused streams (rapid reset)
  refusals_pending,        ///< refusals piling up while the client does not read
  count_,
};
inline constexpr std::size_t kGuardViolationCount =
    static_cast<std::size_t>(GuardViolation::count_);

std::string_view violation_name(GuardViolation violation) noexcept;

/// What client_bytes() found. `consumed` bytes of the input were checked and may be forwarded.
struct GuardStep {
  enum class Kind : std::uint8_t {
    done,      ///< the whole input was consumed
    refuse,    ///< `stream` exceeded the stream limit; its header block ends at `consumed`
    violation  ///< close the connection with a GOAWAY(`code`, `detail`)
  };
  Kind kind = Kind::done;
  std::size_t consumed = 0;
  std::uint32_t stream = 0;
  GuardViolation violation = GuardViolation::bad_preface;
  H2Error code = H2Error::no_error;
  std::string detail;
};

/// One connection's guard. Feed the client's bytes to client_bytes() and the server's bytes to
/// server_bytes(), in order, split anywhere. Not thread-safe: one connection's strand owns it.
class H2Guard {
public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::uint32_t kDefaultMaxFrame = 16384;

  H2Guard(H2GuardLimits limits, Clock::time_point now);

  /// Checks client bytes until the input ends, a stream must be refused or a rule is broken.
  /// Call again with the rest of the input after a refusal. After a violation the guard is
  /// spent: every later call reports the same violation.
  GuardStep client_bytes(std::span<const std::uint8_t> bytes, Clock::time_point now);
  /// Follows the server's frames: stream ends and resets, and the frame size it accepts. The
  /// value of a SETTINGS_MAX_CONCURRENT_STREAMS the server announces is rewritten, in place, to
  /// the guard's stream limit, so that clients learn the limit the guard applies.
  void server_bytes(std::span<std::uint8_t> bytes);

  /// True between two server frames (a frame of our own may be written to the client here).
  bool server_at_frame_boundary() const noexcept {
    return server_.state == Direction::State::header && server_.header_filled == 0;
  }
  /// True once the client's preface and first SETTINGS have passed.
  bool preface_done() const noexcept { return settings_seen_; }
  std::uint32_t open_streams() const noexcept { return open_streams_; }
  /// The highest client stream id seen (the last-stream-id of a GOAWAY).
  std::uint32_t last_client_stream() const noexcept { return last_client_stream_; }
  std::uint32_t max_frame() const noexcept { return max_frame_; }

private:
  struct Direction {
    enum class State : std::uint8_t { preface, header, payload };
    State state = State::header;
    std::array<std::uint8_t, 9> header{};
    std::size_t header_filled = 0;
    std::uint32_t length = 0;
    std::uint8_t type = 0;
    std::uint8_t flags = 0;
    std::uint32_t stream = 0;
    std::uint32_t remaining = 0;  // payload bytes still to come
  };
  struct Bucket {
    double tokens = 0;
    Clock::time_point updated{};
  };
  enum StreamEnds : std::uint8_t { kClientEnded = 1, kServerEnded = 2 };

  GuardStep fail(GuardViolation violation, H2Error code, std::string detail);
  /// Checks a complete client frame header; sets `refuse_` when the stream is refused.
  std::optional<GuardStep> client_frame(Clock::time_point now);
  void server_frame();
  void server_payload(std::span<std::uint8_t> bytes);
  void end_stream(std::uint32_t stream, std::uint8_t side);
  void close_stream(std::uint32_t stream);
  bool take(Bucket& bucket, std::uint32_t rate, Clock::time_point now);

  H2GuardLimits limits_;
  Direction client_;
  Direction server_;
  std::size_t preface_matched_ = 0;
  bool settings_seen_ = false;  // the client's first frame was SETTINGS
  std::uint32_t max_frame_ = kDefaultMaxFrame;
  // The header block in progress: its stream (0: none), its bytes so far.
  std::uint32_t block_stream_ = 0;
  std::uint32_t block_bytes_ = 0;
  bool block_refused_ = false;
  std::uint32_t refuse_at_end_ = 0;  // a refused stream whose header block ends with this frame
  std::uint32_t last_client_stream_ = 0;
  std::uint32_t open_streams_ = 0;
  std::unordered_map<std::uint32_t, std::uint8_t> streams_;  // open client streams: ends seen
  Bucket control_;
  Bucket resets_;
  // A server SETTINGS payload split across reads: the entry being assembled.
  std::array<std::uint8_t, 6> setting_{};
  std::size_t setting_filled_ = 0;
  std::optional<GuardStep> failed_;
};

/// A GOAWAY frame: `last_stream`, `code` and `debug` as its additional debug data.
std::vector<std::uint8_t> goaway_frame(std::uint32_t last_stream, H2Error code,
                                       std::string_view debug);
/// An RST_STREAM frame.
std::array<std::uint8_t, 13> rst_stream_frame(std::uint32_t stream, H2Error code);

}  // namespace switchboard::gateway
