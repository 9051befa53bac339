// Process logging set-up: level and format (human text or one JSON object per line).
#pragma once

#include <string>
#include <string_view>

namespace switchboard::core {

/// Installs the "switchboard" logger on stderr as the default logger. `format` is "text" or
/// "json"; `level` is an spdlog level name.
void configure_logging(const std::string& level, const std::string& format);

/// One log message ("event key=value key=\"quoted value\"") as a JSON object line with ts,
/// level, msg (the event words) and each key=value as a field.
std::string log_line_as_json(std::string_view timestamp, std::string_view level,
                             std::string_view message);

}  // namespace switchboard::core
