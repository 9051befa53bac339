// The invariant check shared by the fuzz targets: a violated invariant aborts like a crash, so
// libFuzzer saves the input that caused it.
#pragma once

#include <cstdio>
#include <cstdlib>

#define SWITCHBOARD_FUZZ_CHECK(condition)                                                          \
  do {                                                                                             \
    if (!(condition)) {                                                                            \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #condition, __FILE__, __LINE__); \
      std::abort();                                                                                \
    }                                                                                              \
  } while (false)
