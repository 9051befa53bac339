// Whether this test binary is built with a sanitizer: its allocator and shadow memory decide what
// RSS and page-fault counts say, so tests of those skip or relax their checks.
#pragma once

namespace switchboard::test {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

}  // namespace switchboard::test
