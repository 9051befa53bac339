// Test helper for the wire tests: pushing encoded bytes through a FrameReader.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "switchboard/wire/buffer.hpp"

namespace switchboard::wire::test {

/// Feeds `bytes` (one encoded frame) through prepare/commit, as a socket read loop would, and
/// returns the first result that is not need_more (or the last need_more).
inline DecodeResult feed_one(FrameReader& reader, const std::vector<std::uint8_t>& bytes,
                             Frame& frame) {
  std::size_t done = 0;
  DecodeResult r;
  while (done < bytes.size()) {
    auto space = reader.prepare();
    const std::size_t n = std::min(space.size(), bytes.size() - done);
    std::memcpy(space.data(), bytes.data() + done, n);
    reader.commit(n);
    done += n;
    r = reader.next(frame);
    if (r.kind != DecodeResult::Kind::need_more) return r;
  }
  return r;
}

}  // namespace switchboard::wire::test
