// A 128-bit identifier for channels and peers, with its canonical text form.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace switchboard {

/// A UUID as 16 raw bytes. The all-zero value means "none" (e.g. "let the relay assign an id").
struct Uuid {
  std::array<std::uint8_t, 16> bytes{};

  /// Parses the 36-character form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
  static std::optional<Uuid> parse(std::string_view text) noexcept;
  /// A random version-4 UUID from a per-thread generator seeded by the OS.
  static Uuid random();

  /// Lower-case 36-character text form.
  std::string to_string() const;
  bool is_nil() const noexcept;

  friend bool operator==(const Uuid&, const Uuid&) = default;
  friend auto operator<=>(const Uuid&, const Uuid&) = default;
};

struct UuidHash {
  std::size_t operator()(const Uuid& id) const noexcept;
};

}  // namespace switchboard
