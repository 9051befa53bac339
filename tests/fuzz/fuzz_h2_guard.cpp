// libFuzzer target for the gRPC door's HTTP/2 guard: a client byte stream fed whole and in two
// pieces must give the same refusals and the same violation, the stream count never passes the
// limit, and the server's bytes (the same input) are followed without fault.
//
// Input: split point (u16, big-endian, taken modulo the stream size + 1), one configuration byte
// (stream limit, header block limit, rates), then the byte stream.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "fuzz_check.hpp"
#include "grpc_gateway/h2_guard.hpp"

namespace {

using namespace switchboard::gateway;

struct Event {
  GuardStep::Kind kind;
  std::uint32_t stream;
  GuardViolation violation;
  bool operator==(const Event&) const = default;
};

std::vector<Event> feed(H2Guard& guard, std::span<const std::uint8_t> bytes, std::size_t split,
                        const H2GuardLimits& limits, H2Guard::Clock::time_point now) {
  std::vector<Event> events;
  for (auto piece : {bytes.first(split), bytes.subspan(split)}) {
    while (!piece.empty()) {
      const auto step = guard.client_bytes(piece, now);
      SWITCHBOARD_FUZZ_CHECK(step.consumed <= piece.size());
      SWITCHBOARD_FUZZ_CHECK(guard.open_streams() <= limits.max_streams);
      if (step.kind == GuardStep::Kind::violation) {
        events.push_back({step.kind, 0, step.violation});
        return events;
      }
      SWITCHBOARD_FUZZ_CHECK(step.consumed > 0 || step.kind == GuardStep::Kind::refuse);
      piece = piece.subspan(step.consumed);
      if (step.kind == GuardStep::Kind::refuse) {
        events.push_back({step.kind, step.stream, GuardViolation::count_});
      }
    }
  }
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const std::size_t split_seed = (std::size_t{data[0]} << 8) | data[1];
  const std::uint8_t config = data[2];
  std::span<const std::uint8_t> stream(data + 3, size - 3);
  const std::size_t split = split_seed % (stream.size() + 1);

  H2GuardLimits limits;
  limits.max_streams = 1 + (config & 0x3);
  limits.max_header_block = (config & 0x4) != 0 ? 64 : 16 * 1024;
  limits.control_frames_per_second = (config & 0x8) != 0 ? 4 : 0;
  limits.resets_per_second = (config & 0x10) != 0 ? 4 : 0;
  const auto now = H2Guard::Clock::now();

  H2Guard whole(limits, now);
  const auto expected = feed(whole, stream, stream.size(), limits, now);
  H2Guard split_guard(limits, now);
  SWITCHBOARD_FUZZ_CHECK(feed(split_guard, stream, split, limits, now) == expected);

  // The same bytes as the server's, in two pieces: only SETTINGS' stream limit may change.
  std::vector<std::uint8_t> server(stream.begin(), stream.end());
  H2Guard follower(limits, now);
  follower.server_bytes(std::span(server.data(), split));
  follower.server_bytes(std::span(server.data() + split, server.size() - split));
  SWITCHBOARD_FUZZ_CHECK(follower.open_streams() == 0);
  return 0;
}
