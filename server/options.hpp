// The relay's option table: one row per setting, from which flags, file keys, environment
// names, --print-config and the configuration reference are all generated.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "server/server.hpp"

namespace switchboard::core {

enum class OptionType { string, address, unsigned_integer, size, duration, boolean, choice };

/// One setting. `read` renders the current value as text (the form flags and the environment
/// take); `write` parses that text into the configuration and returns an error message, or
/// nothing when the value is valid.
struct Option {
  std::string key;  ///< file key; the flag is --key with '-' for '_', the variable SWITCHBOARD_KEY
  OptionType type = OptionType::string;
  std::string help;
  std::vector<std::string> flag_aliases;  ///< older flag names that keep working
  std::vector<std::string> choices;       ///< for OptionType::choice
  std::function<std::string(const ServerConfig&)> read;
  std::function<std::optional<std::string>(ServerConfig&, const std::string&)> write;

  std::string flag() const;
  std::string env_name() const;
};

/// Every option, in documentation order.
const std::vector<Option>& option_table();

/// A configuration that cannot be used; `what()` names the key and where it came from.
class ConfigError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Where values come from, lowest precedence first: defaults < file < environment < flags.
struct ConfigSources {
  std::optional<std::string> file;                         ///< path of a TOML file
  std::map<std::string, std::string> environment;          ///< SWITCHBOARD_* variables
  std::vector<std::pair<std::string, std::string>> flags;  ///< key and value, in given order
};

/// Builds the effective configuration; throws ConfigError naming the offending key.
ServerConfig load_config(const ConfigSources& sources);

/// The SWITCHBOARD_* variables of this process (SWITCHBOARD_CONFIG excluded).
std::map<std::string, std::string> switchboard_environment();

/// The configuration as TOML that load_config reads back to the same configuration.
std::string to_toml(const ServerConfig& config);

/// The Markdown reference table of every option with its default (docs/OPERATIONS.md).
std::string config_reference_markdown();

}  // namespace switchboard::core
