// switchboard-server: configuration (flags, environment, file), logging, and the relay's run.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "server/doors.hpp"
#include "server/heap_tuning.hpp"
#include "server/logging.hpp"
#include "server/options.hpp"
#include "server/server.hpp"

namespace {

constexpr int kConfigErrorExit = 2;

std::string text_of(const boost::asio::ip::tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  const auto host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(endpoint.port());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace switchboard::core;

  CLI::App app{
      "switchboard-server: the Switchboard channel relay.\n"
      "Settings come from flags, then SWITCHBOARD_<KEY> environment variables, then the "
      "--config file, then defaults (see docs/OPERATIONS.md)."};
  std::string config_file;
  bool print_config = false;
  bool print_reference = false;
  app.add_option("--config", config_file, "TOML configuration file (also SWITCHBOARD_CONFIG)");
  app.add_flag("--print-config", print_config,
               "print the effective configuration as TOML and exit");
  app.add_flag("--print-config-reference", print_reference,
               "print the configuration reference (Markdown) and exit");

  const auto& table = option_table();
  const ServerConfig defaults;
  std::vector<std::string> flag_values(table.size());
  std::vector<CLI::Option*> flag_options;
  for (std::size_t i = 0; i < table.size(); ++i) {
    const auto& option = table[i];
    std::string names = option.flag();
    for (const auto& alias : option.flag_aliases) names += "," + alias;
    const std::string help = option.help + " [" + option.env_name() + "]";
    CLI::Option* added = nullptr;
    if (option.type == OptionType::boolean) {
      added = app.add_flag(names + "{true}", flag_values[i], help);
    } else {
      added = app.add_option(names, flag_values[i], help);
    }
    // The last occurrence wins, so wrappers may append to a command line that sets a value.
    added->default_str(option.read(defaults))
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    flag_options.push_back(added);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // A flag that does not exist or lacks its value is invalid configuration like any other.
    (void)app.exit(e);
    return kConfigErrorExit;
  }

  if (print_reference) {
    std::cout << config_reference_markdown();
    return 0;
  }

  ConfigSources sources;
  if (!config_file.empty()) {
    sources.file = config_file;
  } else if (const char* from_env = std::getenv("SWITCHBOARD_CONFIG"); from_env && *from_env) {
    sources.file = from_env;
  }
  sources.environment = switchboard_environment();
  for (std::size_t i = 0; i < table.size(); ++i) {
    if (flag_options[i]->count() > 0) sources.flags.emplace_back(table[i].key, flag_values[i]);
  }
  ServerConfig config;
  try {
    config = load_config(sources);
  } catch (const ConfigError& e) {
    std::cerr << "switchboard-server: invalid configuration: " << e.what() << "\n";
    return kConfigErrorExit;
  }
  if (print_config) {
    std::cout << to_toml(config);
    return 0;
  }
  if (const char* secret = std::getenv("SWITCHBOARD_AUTH_HS256_SECRET"); secret && *secret) {
    config.auth.hs256_secret = secret;
  }

  // Before any thread, file or socket exists: a restart keeps only the arguments and the
  // environment.
  const auto huge_page_heap =
      config.heap_huge_pages ? restart_on_huge_page_heap(argv) : huge_page_heap_state();

  configure_logging(config.log_level, config.log_format);
  if (huge_page_heap.in_use) {
    spdlog::info("malloc heap huge_pages=true");
  } else {
    spdlog::info("malloc heap huge_pages=false reason=\"{}\"", huge_page_heap.reason);
  }
  // Before the gRPC door starts gRPC's threads: malloc's settings are the whole process's.
  if (serves_grpc(config)) tune_heap();
  try {
    Server server(config);
    server.handle_signals();
    server.start();
    std::printf("listening core %s\n", text_of(server.core_endpoint()).c_str());
    if (const auto grpc = server.grpc_address(); !grpc.empty()) {
      std::printf("listening grpc %s\n", grpc.c_str());
    }
    if (const auto admin = server.admin_endpoint()) {
      std::printf("listening admin %s\n", text_of(*admin).c_str());
    }
    std::fflush(stdout);
    server.wait();
  } catch (const std::exception& e) {
    spdlog::critical("start-up failed error=\"{}\"", e.what());
    std::cerr << "switchboard-server: " << e.what() << "\n";
    return kConfigErrorExit;
  }
  return 0;
}
