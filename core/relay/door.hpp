// A front door of the relay as the process running it sees one: serve, drain, stop, count and
// describe, so that start-up, shutdown and the admin endpoint know no door's internals.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "relay/metrics.hpp"
#include "relay/relay_context.hpp"

namespace switchboard::core {

/// What the relay's logs and admin endpoint say about a door.
struct DoorDescription {
  std::string_view name;  ///< "native" or "grpc": the door label of its metrics and log keys
  std::optional<boost::asio::ip::tcp::endpoint> endpoint;  ///< bound address; none when off
  bool tls = false;
  /// The door's DoorCounters (the relay's counters hold one per door).
  const DoorCounters* counters = nullptr;
  /// Log keys for the door's connections: open ones when the drain begins, all of them when the
  /// relay stops (gRPC: calls).
  std::string_view open_key;
  std::string_view total_key;
  /// Bytes the stop summary reports: native socket bytes with framing, gRPC message payloads
  /// (its HTTP/2 bytes are gRPC's, not the relay's).
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
};

/// What a draining door still holds that the relay's drain waits for on its I/O threads.
struct DrainProgress {
  std::int64_t connections = 0;
  std::int64_t streams = 0;
};

/// Threading: constructed, started and destroyed by the relay's owner; drain(), terminate(),
/// drain_progress() and open_connections() run on the accept context's thread (I/O thread 0);
/// stop() runs on a thread that is not an I/O thread; describe(), write_metrics() and
/// reload_tls() may run on any thread.
class Door {
public:
  virtual ~Door() = default;

  /// Starts accepting on the relay's I/O threads (which the caller runs).
  virtual void start() = 0;
  /// Stops admitting connections and streams; streams in flight go on to their end.
  virtual void drain() = 0;
  /// What the drain still waits for. A door whose stop() waits for its own streams (gRPC's
  /// server waits for its calls) reports nothing here.
  virtual DrainProgress drain_progress() const = 0;
  /// The drain timeout passed: ends at once what drain_progress() still reports. Never blocks.
  virtual void terminate() = 0;
  /// Ends whatever is still open by `deadline`, then closes every connection; blocks until
  /// done. Safe to call more than once.
  virtual void stop(std::chrono::system_clock::time_point deadline) = 0;
  /// Connections open now, counted against the relay's connection limit.
  virtual std::int64_t open_connections() const = 0;
  /// Re-reads the door's certificate files (new connections use them, live ones keep theirs);
  /// false when they failed to load or the door has no TLS.
  virtual bool reload_tls() = 0;
  virtual DoorDescription describe() const = 0;
  /// The door's own metric families (those every door has come from its DoorCounters).
  virtual void write_metrics(MetricsWriter& out) const = 0;
};

}  // namespace switchboard::core
