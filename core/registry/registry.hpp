// The registry owns channels and their membership; it routes new streams and announces presence.
#pragma once

#include <atomic>
#include <boost/unordered/unordered_flat_map.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "registry/limits.hpp"
#include "registry/peer.hpp"

namespace switchboard::core {

struct JoinResult {
  Status status = Status::ok;
  std::string message;
  Uuid peer_id;
  std::uint64_t version = 0;
  std::vector<Uuid> others;  ///< peers already on the channel
  /// Set when the join was refused because this relay is giving the channel up: where to go.
  std::optional<cluster::Verdict> moved;
  /// Set when the join was refused because this relay no longer holds the channel (its claim
  /// went after the directory said to serve it): ask the directory again.
  bool resolve_again = false;
};

struct RouteResult {
  Status status = Status::ok;
  std::string message;
  std::shared_ptr<Peer> peer;
  Uuid peer_id;
};

/// One member as the admin endpoint lists it.
struct PeerInfo {
  Uuid id;
  bool accepts_requests = false;
  std::string door;
  std::chrono::system_clock::time_point joined_at;
};

struct ChannelInfo {
  Uuid id;
  std::size_t peers = 0;
  std::uint64_t version = 0;
};

struct RegistryStats {
  std::size_t channels = 0;
  std::size_t peers = 0;
};

class Registry {
public:
  explicit Registry(Limits limits) : limits_(std::move(limits)) {}

  /// Adds `peer` to `channel` under `requested_id` (nil: a fresh id). A live peer with the same
  /// id makes this fail with REFUSED and leaves the existing peer untouched.
  JoinResult join(const Uuid& channel, const Uuid& requested_id, bool accepts_requests,
                  std::shared_ptr<Peer> peer);
  /// Removes the peer and tells the others. A no-op for an id that is not a member.
  void leave(const Uuid& channel, const Uuid& peer_id);

  /// The target of a Send to a given peer id.
  RouteResult route_to_peer(const Uuid& channel, const Uuid& sender, const Uuid& target);
  /// The next peer round-robin that accepts requests and has room, other than the sender.
  RouteResult route_to_any(const Uuid& channel, const Uuid& sender);
  /// Every other peer of the channel at this moment.
  std::vector<std::pair<Uuid, std::shared_ptr<Peer>>> broadcast_targets(const Uuid& channel,
                                                                        const Uuid& sender);
  /// The same into `out` (cleared first), so a caller that broadcasts often reuses its memory.
  void broadcast_targets(const Uuid& channel, const Uuid& sender,
                         std::vector<std::pair<Uuid, std::shared_ptr<Peer>>>& out);
  std::vector<Uuid> members(const Uuid& channel, std::uint64_t& version);
  /// True when `peer_id` is a member of `channel` now.
  bool is_member(const Uuid& channel, const Uuid& peer_id) const;
  /// The peer behind `peer_id` on `channel` now, or null.
  std::shared_ptr<Peer> member(const Uuid& channel, const Uuid& peer_id) const;

  /// Registers an observer of a channel's presence that is not a member: it gets the snapshot
  /// (returned) and then every change through on_presence. Watching a channel does not keep it
  /// alive or count as a peer. Returns a token for unwatch().
  std::uint64_t watch(const Uuid& channel, std::shared_ptr<Peer> observer,
                      std::vector<Uuid>& snapshot, std::uint64_t& version);
  void unwatch(const Uuid& channel, std::uint64_t token);

  /// This relay gives `channel` up: later joins are refused with `moved` set to `next`, and
  /// every member is told to relocate. When the channel has no member left (at once if it has
  /// none), the channel-emptied callback runs and joins are admitted again.
  void relinquish(const Uuid& channel, const cluster::Verdict& next);
  /// Ties channels to the cluster directory: before a channel gets its first member the
  /// registry asks `admit` (false refuses the join with `resolve_again`), and when it loses
  /// its last one it calls `emptied`. Both run with the registry's lock held, so no join slips
  /// between a channel emptying and its claim going. Set before the doors start.
  void set_channel_hooks(std::function<bool(const Uuid&)> admit,
                         std::function<void(const Uuid&)> emptied) {
    channel_admit_ = std::move(admit);
    channel_emptied_ = std::move(emptied);
  }

  /// From now on joins and new streams are refused.
  void start_draining() noexcept { draining_.store(true); }
  bool draining() const noexcept { return draining_.load(); }

  /// How many presence changes were announced so far (any thread; a count to compare, not to
  /// synchronise with).
  std::uint64_t announcements() const noexcept {
    return announced_.load(std::memory_order_relaxed);
  }

  RegistryStats stats() const;
  /// Every channel with its peer count (a snapshot; for introspection, not the data path).
  std::vector<ChannelInfo> channel_list() const;
  /// The members of `channel`, or nothing when it does not exist.
  std::optional<std::vector<PeerInfo>> channel_peers(const Uuid& channel,
                                                     std::uint64_t& version) const;

private:
  struct Member {
    std::shared_ptr<Peer> peer;
    bool accepts_requests = false;
    std::chrono::system_clock::time_point joined_at = std::chrono::system_clock::now();
  };
  struct Channel {
    // Flat: a join copies every member's id into the snapshot and announces itself to every
    // member, both under the registry's lock; walking nodes scattered over the heap made them
    // a cache miss per member.
    boost::unordered_flat_map<Uuid, Member, UuidHash> members;
    std::vector<Uuid> responders;  // round-robin order of members accepting requests
    std::size_t next_responder = 0;
    std::uint64_t version = 0;
    PresenceLog presence_log;  // what members still owe their clients, recorded once
  };

  RouteResult unrouted() const;
  void announce_locked(const Uuid& channel_id, Channel* channel, wire::PresenceEvent event,
                       const Uuid& subject);

  const Limits limits_;
  mutable std::mutex mutex_;
  std::unordered_map<Uuid, Channel, UuidHash> channels_;
  // Watchers live apart from channels: a channel comes and goes with its members, watchers stay.
  std::unordered_map<Uuid, std::vector<std::pair<std::uint64_t, std::shared_ptr<Peer>>>, UuidHash>
      watchers_;
  std::uint64_t next_watch_token_ = 1;
  // Versions continue across a channel's empty periods so watchers never see one go backwards.
  std::unordered_map<Uuid, std::uint64_t, UuidHash> watched_versions_;
  // Channels being given up, with where their peers go; erased when the channel empties.
  std::unordered_map<Uuid, cluster::Verdict, UuidHash> moving_;
  std::function<bool(const Uuid&)> channel_admit_;
  std::function<void(const Uuid&)> channel_emptied_;
  std::size_t peer_count_ = 0;
  std::atomic<std::uint64_t> announced_{0};  // written under mutex_, read anywhere
  std::atomic<bool> draining_{false};
};

}  // namespace switchboard::core
