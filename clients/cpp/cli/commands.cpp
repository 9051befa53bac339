// The stdin-driven subcommands: send (request/response), broadcast, and uuid.
#include "commands.hpp"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "io.hpp"
#include "signals.hpp"

namespace switchboard::cli {
namespace {

using client::BlockingStream;
using client::Outcome;

constexpr std::size_t kInputChunk = 256 * 1024;
constexpr std::size_t kOpenFixedSize = 28;  // OPEN's fixed part (docs/PROTOCOL.md 3.7)

enum class InputEnd { finished, interrupted, stream_failed, read_error };

/// Streams everything `input` yields into `stream`, then ends our direction with OK.
InputEnd stream_input(InputReader& input, BlockingStream& stream, int& read_errno,
                      Progress& progress) {
  std::vector<std::uint8_t> buffer(kInputChunk);
  for (;;) {
    const auto n = input.read(buffer);
    if (n == InputReader::kInterrupted) return InputEnd::interrupted;
    if (n < 0) {
      read_errno = errno;
      stream.reset(Status::cancelled, "the sender could not read its input");
      return InputEnd::read_error;
    }
    if (n == 0) return stream.finish().ok() ? InputEnd::finished : InputEnd::stream_failed;
    if (!stream.write({buffer.data(), static_cast<std::size_t>(n)}).ok()) {
      return InputEnd::stream_failed;
    }
    progress.add_sent(static_cast<std::uint64_t>(n));
  }
}

client::StreamOptions stream_options(const SendOptions& options) {
  client::StreamOptions result;
  result.deadline = std::chrono::milliseconds(options.deadline_ms);
  result.idle_timeout = std::chrono::milliseconds(options.idle_timeout_ms);
  for (const auto& entry : options.meta) {
    const auto eq = entry.find('=');
    result.metadata.emplace_back(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return result;
}

int interrupted_exit(int signal_number) {
  report("interrupted");
  return 128 + signal_number;
}

}  // namespace

std::string check_metadata(const std::vector<std::string>& entries) {
  if (entries.size() > wire::kMaxMetadataEntries) {
    return "at most " + std::to_string(wire::kMaxMetadataEntries) + " --meta entries";
  }
  std::size_t prefix = kOpenFixedSize;
  for (const auto& entry : entries) {
    const auto eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) {
      return "--meta wants key=value, got '" + entry + "'";
    }
    prefix += 4 + entry.size() - 1;
  }
  if (prefix > wire::kMaxOpenPrefix) {
    return "--meta entries too large: " + std::to_string(prefix - kOpenFixedSize) +
           " bytes encoded, at most " + std::to_string(wire::kMaxOpenPrefix - kOpenFixedSize);
  }
  return {};
}

int run_send(const GlobalOptions& global, const SendOptions& options) {
  const auto channel = parse_uuid(options.channel, false);
  const auto target = options.to.empty() ? Uuid{} : parse_uuid(options.to, true).value_or(Uuid{});
  if (!channel) return kExitUsage;
  auto joined = join(global, *channel, Role::peer);
  if (!joined.client) return joined.exit_code;
  auto client = std::move(joined.client);

  auto stream = client->request(client::Target{target}, stream_options(options));
  // Open at once, before any input: NO_RESPONDERS comes back without waiting for stdin.
  (void)stream.write({}, false);

  InputReader input(STDIN_FILENO);
  Progress progress(options.progress.enabled(), true, true, remaining_input_size(STDIN_FILENO));
  SignalWatcher signals([&](int) {
    stream.reset(Status::cancelled, "the sender was interrupted");
    input.interrupt();
  });
  int read_errno = 0;
  // Full duplex: the request is written on its own thread while the response is read here.
  std::thread writer([&] { (void)stream_input(input, stream, read_errno, progress); });

  int write_errno = 0;
  for (;;) {
    const auto chunk = stream.read_chunk();
    if (chunk.size == 0) break;
    if (!write_all(STDOUT_FILENO, chunk.bytes())) {
      write_errno = errno;
      stream.reset(Status::cancelled, "the sender could not write its output");
      break;
    }
    progress.add_received(chunk.size);
  }
  const Outcome outcome = stream.result();
  // The response has ended: whatever of the request is still unsent is not wanted any more.
  stream.reset(Status::cancelled, "the response has ended");
  input.interrupt();
  writer.join();
  progress.finish();

  if (signals.received() != 0) return interrupted_exit(signals.received());
  if (read_errno != 0) {
    report(std::string("cannot read input: ") + std::strerror(read_errno));
    return kExitIoError;
  }
  if (write_errno != 0) {
    if (write_errno != EPIPE)
      report(std::string("cannot write output: ") + std::strerror(write_errno));
    return kExitIoError;
  }
  if (!outcome.ok()) report("send failed: " + outcome.describe());
  return exit_code_for(outcome);
}

int run_broadcast(const GlobalOptions& global, const BroadcastOptions& options) {
  const auto channel = parse_uuid(options.channel, false);
  if (!channel) return kExitUsage;
  auto joined = join(global, *channel, Role::peer);
  if (!joined.client) return joined.exit_code;
  auto client = std::move(joined.client);

  auto stream = client->broadcast();
  InputReader input(STDIN_FILENO);
  Progress progress(options.progress.enabled(), true, false, remaining_input_size(STDIN_FILENO));
  SignalWatcher signals([&](int) {
    stream.reset(Status::cancelled, "the sender was interrupted");
    input.interrupt();
  });
  int read_errno = 0;
  (void)stream_input(input, stream, read_errno, progress);
  const Outcome outcome = stream.result();
  progress.finish();

  if (signals.received() != 0) return interrupted_exit(signals.received());
  if (read_errno != 0) {
    report(std::string("cannot read input: ") + std::strerror(read_errno));
    return kExitIoError;
  }
  if (!outcome.ok()) {
    report("broadcast failed: " + outcome.describe());
    return exit_code_for(outcome);
  }
  report_raw("delivered=" + std::to_string(outcome.delivered) +
             " dropped=" + std::to_string(outcome.dropped));
  return kExitOk;
}

int run_uuid() {
  return write_line(STDOUT_FILENO, Uuid::random().to_string()) ? kExitOk : kExitIoError;
}

}  // namespace switchboard::cli
