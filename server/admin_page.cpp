// Lookup of the operator page's embedded files by name, with the Content-Type each is served with.
#include "server/admin_page.hpp"

#include <array>
#include <utility>

namespace switchboard::core {
namespace {

std::optional<std::string_view> content_type_of(std::string_view name) {
  constexpr std::array<std::pair<std::string_view, std::string_view>, 5> kTypes{{
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".json", "application/json"},
  }};
  for (const auto& [suffix, type] : kTypes) {
    if (name.ends_with(suffix)) return type;
  }
  return std::nullopt;
}

}  // namespace

std::optional<AdminPageFile> find_admin_page_file(std::string_view name) {
  if (name.empty()) name = "index.html";
  for (const auto& file : admin_page_files()) {
    if (file.name != name) continue;
    // A file of a type the table does not know is not served rather than served as guesswork.
    const auto type = content_type_of(name);
    if (!type) return std::nullopt;
    return AdminPageFile{file.bytes, *type};
  }
  return std::nullopt;
}

}  // namespace switchboard::core
