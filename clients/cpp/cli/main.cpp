// switchboard: the command line (global options, subcommands) and the exit code for usage errors.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>

#include "commands.hpp"
#include "signals.hpp"
#include "token.hpp"

using namespace switchboard::cli;

namespace {

/// Descriptors 0-2 must exist, or pipes created later could take their numbers.
void ensure_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
      const int null_fd = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
      if (null_fd >= 0 && null_fd != fd) ::close(null_fd);  // lowest free number: it is `fd`
    }
  }
}

CLI::Validator uuid_check(bool allow_nil) {
  return CLI::Validator([allow_nil](std::string& text) { return check_uuid(text, allow_nil); }, "");
}

CLI::Option* add_channel(CLI::App& command, std::string& channel) {
  return command.add_option("--channel,-c", channel, "channel id (a UUID)")
      ->required()
      ->check(uuid_check(false))
      ->type_name("UUID");
}

void add_progress(CLI::App& command, ProgressFlags& flags) {
  auto* on = command.add_flag("--progress", flags.force_on,
                              "show bytes, rate, elapsed time and ETA on stderr (default: when "
                              "stderr is a terminal)");
  command.add_flag("--no-progress", flags.force_off, "never show the progress line")->excludes(on);
}

}  // namespace

int main(int argc, char** argv) {
  ensure_standard_descriptors();
  block_signals();

  GlobalOptions global;
  RespondOptions respond;
  SendOptions send;
  BroadcastOptions broadcast;
  ListenOptions listen;
  PeersOptions peers;
  PingOptions ping;
  TokenOptions minting;

  CLI::App app{"switchboard: join a Switchboard channel; send, serve, broadcast and watch"};
  app.require_subcommand(1);
  app.add_option("--server,-s", global.server, "relay address HOST:PORT")
      ->envname("SWITCHBOARD_SERVER")
      ->check(CLI::Validator(check_server, ""))
      ->type_name("HOST:PORT")
      ->capture_default_str();
  app.add_option("--peer-id", global.peer_id, "this peer's id (keep an identity across runs)")
      ->check(uuid_check(true))
      ->type_name("UUID");
  app.add_option("--token", global.token, "signed token for a relay that requires one")
      ->envname("SWITCHBOARD_TOKEN")
      ->check(CLI::Validator(
          [](std::string& token) {
            return token.size() <= switchboard::wire::kMaxTokenSize ? std::string{}
                                                                    : "token over 4096 bytes";
          },
          ""));
  // TLS towards the relay's native door; any of the files implies --tls.
  app.add_flag("--tls", global.tls.enabled, "connect over TLS (verifying the relay's certificate)")
      ->envname("SWITCHBOARD_TLS");
  app.add_option("--ca-file", global.tls.ca_file,
                 "PEM CA bundle for the relay's certificate (default: the system's CAs)")
      ->envname("SWITCHBOARD_CA_FILE")
      ->check(CLI::ExistingFile);
  app.add_option("--cert-file", global.tls.cert_file,
                 "PEM client certificate, for a relay requiring mutual TLS")
      ->envname("SWITCHBOARD_CERT_FILE")
      ->check(CLI::ExistingFile);
  app.add_option("--key-file", global.tls.key_file, "PEM private key of --cert-file")
      ->envname("SWITCHBOARD_KEY_FILE")
      ->check(CLI::ExistingFile);
  app.add_option("--server-name", global.tls.server_name,
                 "name checked in the relay's certificate (default: the host of --server)");

  auto* respond_cmd = app.add_subcommand(
      "respond", "serve requests: echo them, or run a command per request (after --)");
  add_channel(*respond_cmd, respond.channel);
  auto* echo = respond_cmd->add_flag("--echo", respond.echo, "stream each request back");
  respond_cmd->add_flag("--reconnect", respond.reconnect,
                        "rejoin with the same peer id whenever the relay connection is lost");
  respond_cmd
      ->add_option("command", respond.command,
                   "command run per request: request body on stdin, stdout is the response")
      ->excludes(echo);

  auto* send_cmd = app.add_subcommand("send", "send stdin as a request; the response to stdout");
  add_channel(*send_cmd, send.channel);
  send_cmd->add_option("--to", send.to, "the responder's peer id (default: any responder)")
      ->check(uuid_check(false))
      ->type_name("UUID");
  send_cmd->add_option("--deadline-ms", send.deadline_ms, "limit for the whole exchange")
      ->type_name("MS")
      ->capture_default_str();
  send_cmd
      ->add_option("--idle-timeout-ms", send.idle_timeout_ms,
                   "limit without bytes moving (default: the relay's)")
      ->type_name("MS")
      ->capture_default_str();
  send_cmd->add_option("--meta", send.meta, "metadata entry key=value (repeatable)")
      ->allow_extra_args(false)
      ->type_name("KEY=VALUE");
  add_progress(*send_cmd, send.progress);

  auto* broadcast_cmd =
      app.add_subcommand("broadcast", "send stdin to every other peer of the channel");
  add_channel(*broadcast_cmd, broadcast.channel);
  add_progress(*broadcast_cmd, broadcast.progress);

  auto* listen_cmd = app.add_subcommand("listen", "write each broadcast received to stdout");
  add_channel(*listen_cmd, listen.channel);
  listen_cmd->add_option("--count,-n", listen.count, "exit after this many broadcasts (0: never)")
      ->check(CLI::Validator(
          [](std::string& text) {
            const bool digits = !text.empty() && text.find_first_not_of("0123456789") == text.npos;
            return digits ? std::string{} : "not a count: '" + text + "'";
          },
          ""))
      ->capture_default_str();
  listen_cmd->add_flag("--reconnect", listen.reconnect,
                       "rejoin whenever the relay connection is lost");
  add_progress(*listen_cmd, listen.progress);

  auto* peers_cmd = app.add_subcommand(
      "peers", "list the peers of the channel, observing it without joining (not in its presence)");
  add_channel(*peers_cmd, peers.channel);
  auto* watch =
      peers_cmd->add_flag("--watch,-w", peers.watch, "then print joined/left events until stopped");
  peers_cmd
      ->add_flag("--reconnect", peers.reconnect,
                 "with --watch: rejoin whenever the relay connection is lost, then print who "
                 "joined or left meanwhile")
      ->needs(watch);

  auto* ping_cmd = app.add_subcommand(
      "ping", "check the relay answers: handshake, one PING/PONG (a cluster relay not serving the "
      "channel answers with a REDIRECT), print the round-trip time");
  ping_cmd->add_option("--channel,-c", ping.channel, "channel to join (default: a random one)")
      ->check(uuid_check(false))
      ->type_name("UUID");
  ping_cmd->add_option("--timeout-ms", ping.timeout_ms, "limit for connect, handshake and PONG")
      ->check(CLI::Range(1U, 3600U * 1000U))
      ->type_name("MS")
      ->capture_default_str();

  auto* uuid_cmd = app.add_subcommand("uuid", "print a random UUID (e.g. a new channel id)");

  auto* token_cmd = app.add_subcommand(
      "token", "mint a signed token (JWT) for a relay run with --auth-mode required");
  token_cmd->add_option("--alg", minting.algorithm, "signature algorithm")
      ->check(CLI::IsMember({"HS256", "RS256", "ES256"}))
      ->capture_default_str();
  token_cmd->add_option("--hs256-secret-file", minting.hs256_secret_file,
                        "HS256 secret (default: $SWITCHBOARD_AUTH_HS256_SECRET)");
  token_cmd->add_option("--private-key-file", minting.private_key_file,
                        "PEM private key for RS256/ES256");
  token_cmd
      ->add_option("--channel,-c", minting.channel,
                   "channel the token is for: a UUID, \"*\" (any), or a prefix ending in \"*\"")
      ->required();
  token_cmd->add_option("--peer", minting.peer, "bind the token to this peer id")
      ->check(uuid_check(false))
      ->type_name("UUID");
  token_cmd
      ->add_option("--perms", minting.perms,
                   "comma-separated permissions: send,respond,broadcast,presence")
      ->capture_default_str();
  token_cmd->add_option("--ttl", minting.ttl, "lifetime: seconds, or with s, m, h or d")
      ->check(CLI::Validator(check_duration, ""))
      ->capture_default_str();
  token_cmd->add_option("--iss", minting.issuer, "issuer claim");
  token_cmd->add_option("--aud", minting.audience, "audience claim");
  token_cmd->add_option("--sub", minting.subject, "subject claim (shows in the relay's logs)");

  for (auto* command : app.get_subcommands({})) command->fallthrough();
  app.footer(
      "Exit codes: 0 success; 1 local input or output failed; 2 usage error; 3 the relay refused\n"
      "the join or the connection was lost; 4 cannot connect to the relay (name or TCP); 10 + the\n"
      "status of a failed stream (11 NO_RESPONDERS, 12 PEER_GONE, 13 DEADLINE_EXCEEDED, 23\n"
      "APPLICATION, ...); 128 + the signal that interrupted send or broadcast.");

  try {
    app.parse(argc, argv);
    if (!global.tls.ca_file.empty() || !global.tls.cert_file.empty()) global.tls.enabled = true;
    if (global.tls.cert_file.empty() != global.tls.key_file.empty()) {
      throw CLI::ValidationError("--cert-file", "give --cert-file and --key-file together");
    }
    if (*respond_cmd && !respond.echo && respond.command.empty()) {
      throw CLI::ValidationError("respond", "give --echo or a command after --");
    }
    if (*send_cmd) {
      if (auto problem = check_metadata(send.meta); !problem.empty()) {
        throw CLI::ValidationError("--meta", problem);
      }
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }

  if (*respond_cmd) return run_respond(global, respond);
  if (*send_cmd) return run_send(global, send);
  if (*broadcast_cmd) return run_broadcast(global, broadcast);
  if (*listen_cmd) return run_listen(global, listen);
  if (*peers_cmd) return run_peers(global, peers);
  if (*ping_cmd) return run_ping(global, ping);
  if (*uuid_cmd) return run_uuid();
  if (*token_cmd) return run_token(minting);
  return kExitUsage;
}
