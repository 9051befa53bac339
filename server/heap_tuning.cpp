// The relay's malloc thresholds and arena count.
#include "server/heap_tuning.hpp"

// A C library header first: it is what defines __GLIBC__ (through <features.h>), so without it
// the check below is false on glibc too and the settings are silently never made.
#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace switchboard::core {
namespace {

// Above the largest gRPC message the gateway accepts (4 MiB), so message buffers never take
// the mmap/munmap path; the trim threshold leaves the window's worth of buffers in place. One
// arena because malloc_trim cannot release the top of a thread arena: with one per thread the
// idle relay kept tens of MiB, with one it returns below its old idle size (and no slower on
// the relay's few threads).
[[maybe_unused]] constexpr int kMmapThreshold = 8 * 1024 * 1024;
[[maybe_unused]] constexpr int kTrimThreshold = 64 * 1024 * 1024;
[[maybe_unused]] constexpr int kArenas = 1;

}  // namespace

void tune_heap() {
#if defined(__GLIBC__)
  mallopt(M_ARENA_MAX, kArenas);
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  mallopt(M_TRIM_THRESHOLD, kTrimThreshold);
#endif
}

}  // namespace switchboard::core
