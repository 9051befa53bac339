// The subcommands that watch a channel: listen (broadcasts to stdout) and peers (presence).
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "commands.hpp"
#include "io.hpp"
#include "signals.hpp"

namespace switchboard::cli {
namespace {

using client::BlockingStream;
using client::PresenceChange;

/// Why a long-running command ended, for its exit code.
int closed_exit(int signal_number, bool finished, const client::Outcome& outcome) {
  if (signal_number != 0 || finished) return kExitOk;
  report("relay connection lost: " + outcome.describe());
  return kExitConnection;
}

int output_error_exit(int error) {
  if (error != EPIPE) report(std::string("cannot write output: ") + std::strerror(error));
  return kExitIoError;
}

}  // namespace

int run_listen(const GlobalOptions& global, const ListenOptions& options) {
  const auto channel = parse_uuid(options.channel, false);
  if (!channel) return kExitUsage;
  auto joined = join(global, *channel, Role::peer, options.reconnect);
  if (!joined.client) return joined.exit_code;
  auto client = std::move(joined.client);
  ClientCloser closer(client.get());
  const auto peer = client->peer_id();
  client->on_connection_event([peer](const client::ConnectionEvent& event) {
    if (const auto line = describe_event(event, peer); !line.empty()) report_raw(line);
  });

  std::atomic<bool> finished{false};
  std::atomic<int> write_errno{0};
  std::uint64_t complete = 0;  // only touched by broadcast handlers, which run one at a time
  Progress progress(options.progress.enabled(), false, true, std::nullopt);
  // The client hands us one broadcast at a time, so bodies never interleave on stdout.
  client->on_broadcast([&](BlockingStream& message) {
    if (finished) return;
    for (;;) {
      const auto chunk = message.read_chunk();
      if (chunk.size == 0) break;
      if (!write_all(STDOUT_FILENO, chunk.bytes())) {
        write_errno = errno;
        finished = true;
        closer.close();
        return;
      }
      progress.add_received(chunk.size);
    }
    const auto outcome = message.result();
    if (!outcome.ok()) {
      report("broadcast from " + message.peer().to_string() + " cut short: " + outcome.describe());
      return;
    }
    if (options.count != 0 && ++complete >= options.count) {
      finished = true;
      closer.close();
    }
  });
  report_raw("ready peer=" + client->peer_id().to_string() + " channel=" + channel->to_string());

  SignalWatcher signals([&](int) { closer.close(); });
  const auto outcome = client->wait_closed();
  closer.release();
  client.reset();
  progress.finish();
  if (write_errno != 0) return output_error_exit(write_errno);
  return closed_exit(signals.received(), finished, outcome);
}

int run_peers(const GlobalOptions& global, const PeersOptions& options) {
  const auto channel = parse_uuid(options.channel, false);
  if (!channel) return kExitUsage;
  // A change to print; after a reconnect, `resync` items restart the version sequence from the
  // new snapshot and report who joined or left meanwhile.
  struct WatchItem {
    PresenceChange change;
    bool resync = false;
  };
  // Declared before the client, which may call the handlers until it is destroyed.
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<WatchItem> events;
  bool closed = false;
  auto joined = join(global, *channel, Role::observer, options.reconnect);
  if (!joined.client) return joined.exit_code;
  auto client = std::move(joined.client);

  if (options.watch) {
    // Both run on the client's I/O thread: queue only, the main thread prints.
    client->on_presence([&](const PresenceChange& change) {
      std::lock_guard lock(mutex);
      events.push_back({change, false});
      changed.notify_one();
    });
    client->on_connection_event(
        [&, peer = client->peer_id()](const client::ConnectionEvent& event) {
          if (const auto line = describe_event(event, peer); !line.empty()) report_raw(line);
          if (event.kind != client::ConnectionEvent::Kind::reconnected) return;
          std::lock_guard lock(mutex);
          events.push_back({PresenceChange{false, Uuid{}, event.version}, true});
          for (const auto& id : event.left) {
            events.push_back({PresenceChange{false, id, event.version}, true});
          }
          for (const auto& id : event.joined) {
            events.push_back({PresenceChange{true, id, event.version}, true});
          }
          changed.notify_one();
        });
  }
  // A consistent snapshot: the version before and after reading the list must agree. Events
  // up to that version are in the list already; later ones are printed as changes.
  std::uint64_t version = 0;
  std::vector<Uuid> peers;
  do {
    version = client->membership_version();
    peers = client->peers();
  } while (version != client->membership_version());
  for (const auto& peer : peers) {
    if (!write_line(STDOUT_FILENO, peer.to_string())) return output_error_exit(errno);
  }
  if (!options.watch) return kExitOk;
  report_raw("ready peer=" + client->peer_id().to_string() + " channel=" + channel->to_string());

  ClientCloser closer(client.get());
  SignalWatcher signals([&](int) { closer.close(); });
  client::Outcome outcome;
  std::thread waiter([&] {
    outcome = client->wait_closed();
    std::lock_guard lock(mutex);
    closed = true;
    changed.notify_one();
  });
  int write_errno = 0;
  std::unique_lock lock(mutex);
  for (;;) {
    changed.wait(lock, [&] { return closed || !events.empty(); });
    if (events.empty()) break;
    const WatchItem item = events.front();
    events.pop_front();
    const PresenceChange& change = item.change;
    if (item.resync) {
      version = change.version;  // a new sequence (a restarted relay counts from scratch)
      if (change.peer.is_nil()) continue;
    } else if (change.version <= version) {
      continue;
    }
    lock.unlock();
    const std::string line = std::string(change.joined ? "joined " : "left ") +
                             change.peer.to_string() + " version=" + std::to_string(change.version);
    if (!write_line(STDOUT_FILENO, line) && write_errno == 0) {
      write_errno = errno;
      closer.close();
    }
    lock.lock();
  }
  lock.unlock();
  waiter.join();
  closer.release();
  client.reset();
  if (write_errno != 0) return output_error_exit(write_errno);
  return closed_exit(signals.received(), false, outcome);
}

}  // namespace switchboard::cli
