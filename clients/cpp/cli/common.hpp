// Shared pieces of the CLI: global options, address/id parsing, joining, exit codes, messages.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "switchboard/blocking.hpp"

namespace switchboard::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitIoError = 1;  ///< local input or output failed
inline constexpr int kExitUsage = 2;
inline constexpr int kExitConnection =
    3;  ///< the relay refused the join, or the connection was lost
inline constexpr int kExitUnreachable =
    4;  ///< the relay could not be reached (resolve, TCP connect)
inline constexpr int kExitStatusBase = 10;  ///< + the numeric status of a failed stream

inline constexpr std::string_view kDefaultServer = "127.0.0.1:7400";

/// Options every subcommand shares (already validated by the parser).
struct GlobalOptions {
  std::string server{kDefaultServer};
  std::string peer_id;  ///< empty: the relay assigns one
  std::string token;
  client::TlsOptions tls;  ///< --tls, --ca-file, --cert-file, --key-file, --server-name
};

struct ServerAddress {
  std::string host;
  std::uint16_t port = 0;
};

/// Parses `HOST:PORT` or `[V6HOST]:PORT`.
std::optional<ServerAddress> parse_server(std::string_view text);
/// Parses a channel or peer id; the nil UUID is refused when `allow_nil` is false.
std::optional<Uuid> parse_uuid(std::string_view text, bool allow_nil);

/// Empty when `text` is a valid `HOST:PORT`, else the reason (for the option parser).
std::string check_server(const std::string& text);
/// Empty when `text` is a valid UUID (nil allowed only if `allow_nil`), else the reason.
std::string check_uuid(const std::string& text, bool allow_nil);

/// How a command takes part in its channel.
enum class Role : std::uint8_t {
  peer,       ///< a member that sends, broadcasts or listens
  responder,  ///< a member that accepts requests
  observer,   ///< presence only, no member (protocol version 2)
};

/// The result of join(): a client, or the exit code of the failure already reported.
struct Joined {
  std::unique_ptr<client::BlockingClient> client;
  int exit_code = kExitOk;
};

/// Joins (or observes) `channel` on the relay named by `global`. On failure prints the reason
/// and returns no client with the exit code: kExitUnreachable when the relay could not be
/// reached ("cannot connect to HOST:PORT: <reason>"), else kExitConnection. With `reconnect`,
/// the client rejoins by itself after a lost connection, retrying without limit until closed.
Joined join(const GlobalOptions& global, const Uuid& channel, Role role, bool reconnect = false);

/// The line and exit code for a first connection that failed with `outcome`.
int report_join_failure(const GlobalOptions& global, const Uuid& channel,
                        const client::Outcome& outcome);

/// The stderr line for a connection event worth telling a user ("" for the others):
/// "switchboard: relay connection lost: ...; reconnecting" and "reconnected peer=... version=N".
std::string describe_event(const client::ConnectionEvent& event, const Uuid& peer);

/// Lets a signal watcher close a client that the command may destroy first: close() is a no-op
/// after release(). Thread-safe.
class ClientCloser {
public:
  explicit ClientCloser(client::BlockingClient* client) : client_(client) {}
  void close();
  void release();

private:
  std::mutex mutex_;
  client::BlockingClient* client_;
};

/// The exit code of a finished stream: 0 for OK, else kExitStatusBase + the status value.
int exit_code_for(const client::Outcome& outcome);

/// Writes "switchboard: <text>\n" to stderr in one write(2), so concurrent lines never mix.
void report(std::string_view text);
/// Writes "<text>\n" to stderr in one write(2).
void report_raw(std::string_view text);

}  // namespace switchboard::cli
