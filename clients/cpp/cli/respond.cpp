// The respond subcommand: serves requests with an echo or by running a command per request.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <system_error>
#include <thread>

#include "child_process.hpp"
#include "commands.hpp"
#include "io.hpp"
#include "signals.hpp"

namespace switchboard::cli {
namespace {

using client::BlockingStream;

constexpr std::size_t kOutputChunk = 256 * 1024;
constexpr std::uint32_t kCannotStart = 126;  // the shell's "found but cannot run"
// Time a command gets to exit after SIGTERM before SIGKILL.
constexpr std::chrono::milliseconds kStopGrace{3000};

/// Streams each request chunk straight back as it arrives (full duplex).
void serve_echo(BlockingStream& request) {
  for (;;) {
    const auto chunk = request.read_chunk();
    if (chunk.size == 0) break;
    if (!request.write(chunk.bytes()).ok()) return;
  }
  // After a reset this fails quietly: there is nobody left to answer.
  (void)request.finish();
}

/// A metadata key as an environment variable name: letters, digits and '_' only.
std::string env_name(const std::string& key) {
  std::string name = "SWITCHBOARD_META_";
  for (const char c : key) {
    const bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    name += plain ? c : '_';
  }
  return name;
}

std::vector<std::string> request_environment(const BlockingStream& request) {
  std::vector<std::string> env;
  // An anonymous sender (a gRPC Send without a peer id) arrives as the nil id: empty here.
  const Uuid& sender = request.peer();
  env.push_back("SWITCHBOARD_SENDER=" + (sender.is_nil() ? std::string{} : sender.to_string()));
  env.push_back("SWITCHBOARD_DEADLINE_MS=" + std::to_string(request.deadline().count()));
  for (const auto& [key, value] : request.metadata()) env.push_back(env_name(key) + "=" + value);
  return env;
}

/// Request body -> the child's stdin. Once the child stops reading, the rest is discarded so
/// the request can still complete.
void pump_request(BlockingStream& request, ChildProcess& child) {
  for (;;) {
    const auto chunk = request.read_chunk();
    if (chunk.size == 0) break;
    if (child.stdin_fd() >= 0 && !write_all(child.stdin_fd(), chunk.bytes())) child.close_stdin();
  }
  child.close_stdin();
}

/// Runs `command` for one request: body to its stdin, its stdout back as the response, its
/// exit status as the response's end.
void serve_command(BlockingStream& request, const std::vector<std::string>& command) {
  std::unique_ptr<ChildProcess> child;
  try {
    child = std::make_unique<ChildProcess>(command, request_environment(request));
  } catch (const std::system_error& e) {
    report(std::string("cannot start command: ") + e.what());
    (void)request.fail(Status::application, kCannotStart,
                       std::string("cannot start command: ") + e.what());
    return;
  }
  // Until the stream has fully ended: a reset (or a lost relay) stops the command.
  std::thread watcher([&] {
    if (!request.result().ok()) child->terminate(kStopGrace);
  });
  std::thread pump([&] { pump_request(request, *child); });

  std::vector<std::uint8_t> buffer(kOutputChunk);
  bool answering = true;
  for (;;) {
    const auto n = ::read(child->stdout_fd(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (!request.write({buffer.data(), static_cast<std::size_t>(n)}).ok()) {
      answering = false;
      break;
    }
  }
  child->close_stdout();  // a command still writing gets SIGPIPE
  const int status = child->wait();
  if (answering) {
    if (status == 0) {
      (void)request.finish();
    } else {
      std::string message = "command exited with status " + std::to_string(status);
      if (child->signal() != 0) message += " (signal " + std::to_string(child->signal()) + ")";
      (void)request.fail(Status::application, static_cast<std::uint32_t>(status), message);
    }
  }
  pump.join();
  watcher.join();
}

}  // namespace

int run_respond(const GlobalOptions& global, const RespondOptions& options) {
  const auto channel = parse_uuid(options.channel, false);
  if (!channel) return kExitUsage;
  auto joined = join(global, *channel, Role::responder, options.reconnect);
  if (!joined.client) return joined.exit_code;
  auto client = std::move(joined.client);
  const auto peer = client->peer_id();
  client->on_connection_event([peer](const client::ConnectionEvent& event) {
    if (const auto line = describe_event(event, peer); !line.empty()) report_raw(line);
  });

  if (options.echo) {
    client->serve(serve_echo);
  } else {
    client->serve(
        [&command = options.command](BlockingStream& request) { serve_command(request, command); });
  }
  report_raw("ready peer=" + client->peer_id().to_string() + " channel=" + channel->to_string());

  ClientCloser closer(client.get());
  SignalWatcher signals([&](int) { closer.close(); });
  const auto outcome = client->wait_closed();
  // Tear down (waiting for requests in flight to stop) while a second signal still exits.
  closer.release();
  client.reset();
  if (signals.received() != 0) return kExitOk;
  report("relay connection lost: " + outcome.describe());
  return kExitConnection;
}

}  // namespace switchboard::cli
