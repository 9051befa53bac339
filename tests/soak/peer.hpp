// Soak peer: one native client connection that serves echo requests, verifies broadcasts and
// drives its own mixed traffic, reporting every stream side to the ledger as event lines.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "switchboard/blocking.hpp"

namespace switchboard::soak {

using Emit = std::function<void(const std::string&)>;
using Clock = std::chrono::steady_clock;

struct PeerConfig {
  std::uint16_t port = 0;
  Uuid channel;
  int channel_index = 0;
  std::uint64_t seed = 0;
  std::size_t max_body = 8 * 1024 * 1024;
  std::chrono::milliseconds deadline{15'000};
  Emit emit;
};

class SoakPeer {
public:
  /// Connects and joins (throws client::ConnectError), then serves requests and broadcasts.
  explicit SoakPeer(PeerConfig config);
  /// Closes cleanly (if not done yet) and waits for every handler and the traffic thread.
  ~SoakPeer();
  SoakPeer(const SoakPeer&) = delete;
  SoakPeer& operator=(const SoakPeer&) = delete;

  /// Starts opening streams one after another until stop_traffic() or close().
  void start_traffic();
  /// No new streams; the one in flight finishes on its own.
  void stop_traffic() { traffic_stop_ = true; }
  /// Waits for the traffic thread (bounded by the stream deadline).
  void join_traffic();
  /// Stops reading every stream of this peer for `how_long` (a stalled receiver).
  void stall_reads(std::chrono::milliseconds how_long);
  /// New requests wait `how_long` before being read (a responder paused past deadlines).
  void pause_responses(std::chrono::milliseconds how_long);
  /// Sends one request to `target` with `deadline` and reports it (used to aim at a paused
  /// responder); runs on the calling thread.
  Status one_request(const Uuid& target, std::chrono::milliseconds deadline, std::size_t size);
  /// Clean close: the relay sees a goodbye, every stream of this peer ends with an error.
  void close();

  const Uuid& id() const { return id_; }
  client::BlockingClient& client() { return *client_; }
  std::uint64_t streams_opened() const { return opened_; }

private:
  void traffic_loop();
  Status run_request(std::mt19937_64& rng, client::Target target, std::size_t size,
                     std::chrono::milliseconds deadline);
  void run_broadcast(std::mt19937_64& rng, std::size_t size);
  void write_body(std::mt19937_64& rng, client::BlockingStream& stream,
                  const std::vector<std::uint8_t>& body, client::Outcome& outcome);
  void handle_request(client::BlockingStream& stream);
  void handle_broadcast(client::BlockingStream& stream);
  /// Sleeps (bounded, in small steps) while this peer is told to stall or until it closes;
  /// returns the milliseconds slept, which the ledger's time bound does not charge to the relay.
  std::uint64_t wait_until(const std::atomic<std::int64_t>& until_ms);
  std::string new_sid(std::mt19937_64& rng);

  PeerConfig config_;
  std::unique_ptr<client::BlockingClient> client_;
  Uuid id_;
  std::string who_;
  std::thread traffic_;
  std::thread watcher_;  // reports a close the relay initiated
  std::atomic<bool> traffic_stop_{false};
  std::atomic<bool> closing_{false};
  std::atomic<std::int64_t> stall_until_ms_{0};
  std::atomic<std::int64_t> pause_until_ms_{0};
  std::atomic<std::uint64_t> opened_{0};
  std::mutex close_mutex_;
  bool closed_ = false;
};

/// Milliseconds on the steady clock, for atomics.
inline std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

}  // namespace switchboard::soak
