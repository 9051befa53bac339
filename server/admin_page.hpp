// The operator page's files (server/admin_page/), embedded in the binary at build time.
#pragma once

#include <optional>
#include <span>
#include <string_view>

namespace switchboard::core {

/// One embedded file: its path under server/admin_page/ and its bytes.
struct EmbeddedFile {
  std::string_view name;
  std::string_view bytes;
};

/// Every file of the page, in the generated admin_page_files.cpp.
std::span<const EmbeddedFile> admin_page_files();

/// A file of the page as the admin endpoint serves it.
struct AdminPageFile {
  std::string_view bytes;
  std::string_view content_type;
};

/// The file at `name` ("" is index.html), or nothing when the page has no such file.
std::optional<AdminPageFile> find_admin_page_file(std::string_view name);

}  // namespace switchboard::core
