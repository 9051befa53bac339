// Logging set-up and the JSON line formatter for spdlog.
#include "server/logging.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <chrono>

namespace switchboard::core {
namespace {

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

bool is_key_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
}

class JsonFormatter final : public spdlog::formatter {
public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto time = std::chrono::time_point_cast<std::chrono::microseconds>(msg.time);
    const auto micros = time.time_since_epoch().count() % 1'000'000;
    const std::string timestamp =
        fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:06}Z",
                    fmt::gmtime(std::chrono::system_clock::to_time_t(msg.time)), micros);
    const auto level = spdlog::level::to_string_view(msg.level);
    const auto line = log_line_as_json(timestamp, std::string_view(level.data(), level.size()),
                                       std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

std::string log_line_as_json(std::string_view timestamp, std::string_view level,
                             std::string_view message) {
  // The event is the words before the first key=value; each key=value after it is a field.
  std::size_t fields_at = message.size();
  for (std::size_t at = 0; at < message.size();) {
    std::size_t end = at;
    while (end < message.size() && is_key_char(message[end])) ++end;
    if (end > at && end < message.size() && message[end] == '=' &&
        (at == 0 || message[at - 1] == ' ')) {
      fields_at = at;
      break;
    }
    at = end + 1;
  }
  std::string_view event = message.substr(0, fields_at);
  while (!event.empty() && event.back() == ' ') event.remove_suffix(1);

  std::string out = "{\"ts\":";
  append_json_string(out, timestamp);
  out += ",\"level\":";
  append_json_string(out, level);
  out += ",\"msg\":";
  append_json_string(out, event);
  std::size_t at = fields_at;
  while (at < message.size()) {
    while (at < message.size() && message[at] == ' ') ++at;
    const auto equals = message.find('=', at);
    if (equals == std::string_view::npos) break;
    const auto key = message.substr(at, equals - at);
    std::string value;
    at = equals + 1;
    if (at < message.size() && message[at] == '"') {
      ++at;
      while (at < message.size() && message[at] != '"') {
        if (message[at] == '\\' && at + 1 < message.size()) ++at;
        value += message[at++];
      }
      ++at;  // closing quote
    } else {
      const auto space = message.find(' ', at);
      const auto stop = space == std::string_view::npos ? message.size() : space;
      value = message.substr(at, stop - at);
      at = stop;
    }
    out += ',';
    append_json_string(out, key);
    out += ':';
    append_json_string(out, value);
  }
  out += "}\n";
  return out;
}

void configure_logging(const std::string& level, const std::string& format) {
  auto logger = spdlog::stderr_color_mt("switchboard");
  if (format == "json") logger->set_formatter(std::make_unique<JsonFormatter>());
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

}  // namespace switchboard::core
