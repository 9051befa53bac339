// switchboard-server: command line, logging set-up, and the relay's run until drained.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "server/server.hpp"

namespace {

void add_ms_option(CLI::App& app, const std::string& name, switchboard::core::Milliseconds& value,
                   const std::string& help) {
  app.add_option_function<long long>(
         name, [&value](long long ms) { value = switchboard::core::Milliseconds(ms); }, help)
      ->default_str(std::to_string(value.count()));
}

// Token authentication: every auth setting in one block (see docs/SECURITY.md).
void add_auth_options(CLI::App& app, switchboard::core::auth::AuthConfig& auth) {
  using switchboard::core::auth::Mode;
  app.add_option_function<std::string>(
         "--auth-mode",
         [&auth](const std::string& mode) {
           auth.mode = mode == "required" ? Mode::required : Mode::open;
         },
         "open: tokens ignored; required: every join, stream and presence call needs a valid "
         "signed token")
      ->check(CLI::IsMember({"open", "required"}))
      ->default_str("open");
  app.add_option("--auth-hs256-secret-file", auth.hs256_secret_file,
                 "file holding the HS256 secret (one trailing newline ignored); the secret may "
                 "instead come from SWITCHBOARD_AUTH_HS256_SECRET")
      ->check(CLI::ExistingFile);
  app.add_option("--auth-public-key-file", auth.public_key_files,
                 "PEM public key (RSA for RS256, EC P-256 for ES256) accepted for token "
                 "signatures; repeatable")
      ->check(CLI::ExistingFile)
      ->allow_extra_args(false);
  app.add_option("--auth-issuer", auth.issuer, "when set, tokens must carry this iss");
  app.add_option("--auth-audience", auth.audience, "when set, tokens' aud must contain this");
}

}  // namespace

int main(int argc, char** argv) {
  using switchboard::core::ServerConfig;
  ServerConfig config;
  auto& limits = config.limits;
  std::string log_level = "info";

  CLI::App app{"switchboard-server: the Switchboard channel relay"};
  app.add_option("--listen", config.listen,
                 "core (native) listen address HOST:PORT; port 0 picks one")
      ->capture_default_str();
  app.add_option("--grpc-listen", config.grpc_listen,
                 "gRPC gateway listen address HOST:PORT; port 0 picks one; empty disables")
      ->capture_default_str();
  app.add_option("--threads", config.threads, "I/O threads (0: one per core)")
      ->capture_default_str();
  app.add_option("--max-frame", limits.max_frame, "largest frame payload accepted (bytes)")
      ->capture_default_str();
  app.add_option("--stream-window", limits.stream_window,
                 "bytes buffered per stream direction (flow-control window)")
      ->capture_default_str();
  app.add_option("--max-streams", limits.max_streams_per_connection,
                 "streams one connection may have open in each direction")
      ->capture_default_str();
  app.add_option("--max-peers-per-channel", limits.max_peers_per_channel, "peers per channel")
      ->capture_default_str();
  app.add_option("--max-channels", limits.max_channels, "channels on this relay")
      ->capture_default_str();
  app.add_option("--max-connections", limits.max_connections, "open native connections")
      ->capture_default_str();
  app.add_option("--max-connection-buffer", limits.max_connection_buffer,
                 "bytes queued towards one connection before it is closed as a slow consumer")
      ->capture_default_str();
  add_ms_option(app, "--handshake-timeout-ms", limits.handshake_timeout,
                "time allowed for a connection's HELLO");
  add_ms_option(app, "--keepalive-ms", limits.keepalive_interval,
                "silence before a PING; twice this and the peer is dead");
  add_ms_option(app, "--slow-consumer-timeout-ms", limits.slow_consumer_timeout,
                "time a broadcast receiver may grant no credit before it is dropped");
  add_ms_option(app, "--idle-timeout-ms", limits.default_idle_timeout,
                "default stream idle timeout (0: none)");
  add_ms_option(app, "--drain-timeout-ms", limits.drain_timeout,
                "longest wait for streams in flight at shutdown");
  add_auth_options(app, config.auth);
  if (const char* secret = std::getenv("SWITCHBOARD_AUTH_HS256_SECRET")) {
    config.auth.hs256_secret = secret;  // an environment variable, so it is not in `ps`
  }
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("switchboard");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));

  try {
    switchboard::core::Server server(config);
    server.handle_signals();
    server.start();
    const auto bound = server.core_endpoint();
    std::printf("listening core %s:%u\n", bound.address().to_string().c_str(),
                static_cast<unsigned>(bound.port()));
    if (const auto grpc = server.grpc_address(); !grpc.empty()) {
      std::printf("listening grpc %s\n", grpc.c_str());
    }
    std::fflush(stdout);
    server.wait();
  } catch (const std::exception& e) {
    std::cerr << "switchboard-server: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
