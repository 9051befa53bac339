// Soak ledger: every side of every stream, fed by event lines from all peers and processes, and
// the end-of-run checks (nothing lost, corrupted, hung or left unfinished).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace switchboard::soak {

/// Event lines (space separated, one write each so that pipes never interleave them):
///   OS sid kind deadline_ms who                 a sender opened (kind: req, bc, raw)
///   ES sid status verified bytes elapsed_ms delivered dropped
///   OR sid who kind deadline_ms                 a responder or broadcast receiver got it
///   ER sid who status verified bytes elapsed_ms
///   J who channel   L who                       a peer joined / left cleanly
///   Q who                                       a peer starts leaving (its streams may fail)
///   C who reason                                the relay closed a peer's connection
///   X text                                      a driver error (always a violation)
class Ledger {
public:
  struct Side {
    int owner = 0;  // 0: the driver process; n: worker n
    std::string who;
    std::uint32_t deadline_ms = 0;
    std::chrono::steady_clock::time_point opened;
    std::chrono::steady_clock::time_point finished;
    bool done = false;
    bool died = false;  // its process was killed before it could report
    int status = -1;
    bool verified = false;
    std::uint64_t bytes = 0;
    std::uint64_t elapsed_ms = 0;
    std::uint32_t delivered = 0;
    std::uint32_t dropped = 0;
  };
  struct Stream {
    std::string kind;
    bool has_sender = false;
    Side sender;
    std::map<std::string, Side> receivers;
  };
  struct Report {
    std::uint64_t streams = 0;
    std::map<std::string, std::uint64_t> ok_by_kind;
    std::map<std::string, std::uint64_t> failed_by_status;           // sender side
    std::map<std::string, std::uint64_t> receiver_failed_by_status;  // responder / receiver side
    std::uint64_t receiver_sides_ok = 0;
    std::uint64_t died_sides = 0;
    std::uint64_t bytes_verified = 0;
    std::vector<std::string> violations;
  };

  void apply(const std::string& line, int owner);
  /// Marks every unfinished side of `owner` as died and its peers as gone.
  void owner_died(int owner);
  /// The driver is about to kill, freeze or stop `owner`: its peers are leaving from now on.
  void owner_dying(int owner);
  /// Relay-initiated closes of live peers, by reason.
  std::map<std::string, std::uint64_t> relay_closes();
  /// Sides neither finished nor died.
  std::size_t unfinished();
  /// Live peers per channel, as announced by J/L lines and owner deaths.
  std::map<int, std::set<std::string>> live_peers();
  /// Peer connections that joined over the whole run.
  std::uint64_t joins();
  Report check(std::chrono::milliseconds margin);

private:
  Stream& stream_locked(const std::string& sid) { return streams_[sid]; }

  std::mutex mutex_;
  std::map<std::string, Stream> streams_;
  std::map<std::string, std::pair<int, int>> peers_;  // who -> (owner, channel)
  std::vector<std::string> errors_;
  std::uint64_t joins_ = 0;
  // When each peer began to leave (kept after it left): a receiver that left after reading a
  // whole broadcast may rightly count as dropped in the sender's summary.
  std::map<std::string, std::chrono::steady_clock::time_point> leaving_since_;
  std::map<std::string, std::uint64_t> relay_closes_;
  void leaving_locked(const std::string& who, std::chrono::steady_clock::time_point when) {
    leaving_since_.emplace(who, when);
  }
};

}  // namespace switchboard::soak
