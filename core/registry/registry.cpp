// Channel membership, presence announcements and stream routing.
#include "registry/registry.hpp"

#include <algorithm>
#include <stdexcept>

#include "switchboard/wire/frame.hpp"

namespace switchboard::core {

void Limits::validate() const {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  if (max_frame < wire::kMinMaxFrame) fail("max_frame must be at least 1024");
  if (max_frame > 16 * 1024 * 1024) fail("max_frame must be at most 16 MiB");
  if (stream_window == 0) fail("stream_window must be positive");
  if (stream_window > wire::kMaxWindow) fail("stream_window must be at most 2^31 - 1 bytes");
  if (message_window < wire::kMinMaxFrame) fail("message_window must be at least 1024 bytes");
  if (message_window > wire::kMaxWindow) fail("message_window must be at most 2^31 - 1 bytes");
  if (max_streams_per_connection == 0) fail("max_streams_per_connection must be positive");
  if (max_peers_per_channel == 0) fail("max_peers_per_channel must be positive");
  if (max_channels == 0) fail("max_channels must be positive");
  if (max_connections == 0) fail("max_connections must be positive");
  if (max_lanes_per_connection == 0) fail("max_lanes_per_connection must be positive");
  if (connect_rate_per_address > 0 && connect_burst_per_address == 0) {
    fail("connect_burst_per_address must be positive when connect_rate_per_address is set");
  }
  if (read_block_size < max_frame + wire::kHeaderSize) {
    fail("read_block_size must hold one whole frame (max_frame + 12)");
  }
  if (max_connection_buffer < std::size_t{stream_window} + max_frame) {
    fail("max_connection_buffer must hold at least one stream window and one frame");
  }
  if (socket_send_buffer > std::size_t{512} * 1024 * 1024) {
    fail("socket_send_buffer must be at most 512 MiB");
  }
  if (handshake_timeout.count() <= 0) fail("handshake_timeout must be positive");
  if (keepalive_interval.count() <= 0) fail("keepalive_interval must be positive");
  if (slow_consumer_timeout.count() <= 0) fail("slow_consumer_timeout must be positive");
  if (write_timeout.count() <= 0) fail("write_timeout must be positive");
  if (presence_interval.count() < 0) fail("presence_interval must not be negative");
  if (presence_storm_hold.count() < 0) fail("presence_storm_hold must not be negative");
  if (default_idle_timeout.count() < 0) fail("default_idle_timeout must not be negative");
  if (drain_timeout.count() < 0) fail("drain_timeout must not be negative");
  if (grpc_max_header_block < 1024) fail("grpc_max_header_block must be at least 1 KiB");
  if (grpc_max_streams_per_connection == 0) {
    fail("grpc_max_streams_per_connection must be positive");
  }
}

JoinResult Registry::join(const Uuid& channel_id, const Uuid& requested_id, bool accepts_requests,
                          std::shared_ptr<Peer> peer) {
  JoinResult result;
  if (draining()) {
    result.status = Status::refused;
    result.message = "relay is draining";
    return result;
  }
  std::lock_guard lock(mutex_);
  if (auto moving = moving_.find(channel_id); moving != moving_.end()) {
    result.status = Status::refused;
    result.message = "channel is moving to another relay";
    result.moved = moving->second;
    return result;
  }
  auto it = channels_.find(channel_id);
  if (it == channels_.end()) {
    if (channels_.size() >= limits_.max_channels) {
      result.status = Status::resource_exhausted;
      result.message = "relay is at its channel limit";
      return result;
    }
    if (channel_admit_ && !channel_admit_(channel_id)) {
      result.status = Status::refused;
      result.message = "channel is no longer served by this relay";
      result.resolve_again = true;
      return result;
    }
    it = channels_.emplace(channel_id, Channel{}).first;
    if (auto v = watched_versions_.find(channel_id); v != watched_versions_.end()) {
      it->second.version = v->second;
    }
  }
  Channel& channel = it->second;
  Uuid id = requested_id;
  if (id.is_nil()) {
    do {
      id = Uuid::random();
    } while (channel.members.contains(id));
  } else if (channel.members.contains(id)) {
    result.status = Status::refused;
    result.message = "peer id " + id.to_string() + " is already on this channel";
    return result;
  }
  if (channel.members.size() >= limits_.max_peers_per_channel) {
    result.status = Status::resource_exhausted;
    result.message = "channel is full";
    return result;
  }
  result.others.reserve(channel.members.size());
  for (const auto& [member_id, member] : channel.members) result.others.push_back(member_id);
  channel.members.emplace(
      id, Member{std::move(peer), accepts_requests, std::chrono::system_clock::now()});
  if (accepts_requests) channel.responders.push_back(id);
  ++peer_count_;
  announce_locked(channel_id, &channel, wire::PresenceEvent::joined, id);
  result.peer_id = id;
  result.version = channel.version;
  return result;
}

void Registry::leave(const Uuid& channel_id, const Uuid& peer_id) {
  {
    std::lock_guard lock(mutex_);
    auto it = channels_.find(channel_id);
    if (it == channels_.end()) return;
    Channel& channel = it->second;
    if (channel.members.erase(peer_id) == 0) return;
    --peer_count_;
    std::erase(channel.responders, peer_id);
    announce_locked(channel_id, &channel, wire::PresenceEvent::left, peer_id);
    if (!channel.members.empty()) return;
    channels_.erase(it);
    moving_.erase(channel_id);
    if (channel_emptied_) channel_emptied_(channel_id);
  }
}

void Registry::relinquish(const Uuid& channel_id, const cluster::Verdict& next) {
  std::vector<std::shared_ptr<Peer>> peers;
  {
    std::lock_guard lock(mutex_);
    auto it = channels_.find(channel_id);
    if (it == channels_.end()) {
      if (channel_emptied_) channel_emptied_(channel_id);
      return;
    }
    moving_.insert_or_assign(channel_id, next);
    peers.reserve(it->second.members.size());
    for (const auto& [id, member] : it->second.members) peers.push_back(member.peer);
  }
  for (const auto& peer : peers) peer->relocate(next);
}

void Registry::announce_locked(const Uuid& channel_id, Channel* channel, wire::PresenceEvent event,
                               const Uuid& subject) {
  const std::uint64_t version = ++channel->version;
  announced_.store(announced_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  wire::Presence presence{event, version, {subject}};
  const auto logged = channel->presence_log.append(PresenceRecord{event, version, subject});
  for (const auto& [member_id, member] : channel->members) {
    if (member_id != subject) member.peer->on_logged_presence(presence, logged);
  }
  if (auto w = watchers_.find(channel_id); w != watchers_.end()) {
    watched_versions_[channel_id] = version;
    for (const auto& [token, observer] : w->second) observer->on_presence(presence);
  }
}

bool Registry::is_member(const Uuid& channel_id, const Uuid& peer_id) const {
  std::lock_guard lock(mutex_);
  auto it = channels_.find(channel_id);
  return it != channels_.end() && it->second.members.contains(peer_id);
}

std::shared_ptr<Peer> Registry::member(const Uuid& channel_id, const Uuid& peer_id) const {
  std::lock_guard lock(mutex_);
  auto it = channels_.find(channel_id);
  if (it == channels_.end()) return nullptr;
  auto found = it->second.members.find(peer_id);
  return found == it->second.members.end() ? nullptr : found->second.peer;
}

std::uint64_t Registry::watch(const Uuid& channel_id, std::shared_ptr<Peer> observer,
                              std::vector<Uuid>& snapshot, std::uint64_t& version) {
  std::lock_guard lock(mutex_);
  snapshot.clear();
  version = 0;
  if (auto it = channels_.find(channel_id); it != channels_.end()) {
    version = it->second.version;
    for (const auto& [member_id, member] : it->second.members) snapshot.push_back(member_id);
  } else if (auto v = watched_versions_.find(channel_id); v != watched_versions_.end()) {
    version = v->second;
  }
  watched_versions_[channel_id] = version;
  const std::uint64_t token = next_watch_token_++;
  watchers_[channel_id].emplace_back(token, std::move(observer));
  return token;
}

void Registry::unwatch(const Uuid& channel_id, std::uint64_t token) {
  std::lock_guard lock(mutex_);
  auto it = watchers_.find(channel_id);
  if (it == watchers_.end()) return;
  std::erase_if(it->second, [token](const auto& entry) { return entry.first == token; });
  if (it->second.empty()) {
    watchers_.erase(it);
    if (!channels_.contains(channel_id)) watched_versions_.erase(channel_id);
  }
}

// What a route is before a peer is found: NO_RESPONDERS, or REFUSED while draining.
RouteResult Registry::unrouted() const {
  RouteResult result;
  result.status = Status::no_responders;
  if (draining()) {
    result.status = Status::refused;
    result.message = "relay is draining";
  }
  return result;
}

RouteResult Registry::route_to_peer(const Uuid& channel_id, const Uuid& sender,
                                    const Uuid& target) {
  RouteResult result = unrouted();
  if (result.status == Status::refused) return result;
  std::lock_guard lock(mutex_);
  auto it = channels_.find(channel_id);
  if (it == channels_.end()) return result;
  auto member = it->second.members.find(target);
  if (member == it->second.members.end() || target == sender) {
    result.message = "no peer " + target.to_string() + " on this channel";
    return result;
  }
  if (!member->second.accepts_requests) {
    result.message = "peer " + target.to_string() + " does not accept requests";
    return result;
  }
  result.status = Status::ok;
  result.peer = member->second.peer;
  result.peer_id = target;
  return result;
}

RouteResult Registry::route_to_any(const Uuid& channel_id, const Uuid& sender) {
  RouteResult result = unrouted();
  if (result.status == Status::refused) return result;
  std::lock_guard lock(mutex_);
  auto it = channels_.find(channel_id);
  if (it == channels_.end()) return result;
  Channel& channel = it->second;
  const std::size_t n = channel.responders.size();
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t index = (channel.next_responder + i) % n;
    const Uuid& candidate = channel.responders[index];
    if (candidate == sender) continue;
    const auto& member = channel.members.at(candidate);
    if (!member.peer->has_capacity()) continue;
    channel.next_responder = (index + 1) % n;
    result.status = Status::ok;
    result.peer = member.peer;
    result.peer_id = candidate;
    return result;
  }
  result.message = "no peer on this channel can take a request";
  return result;
}

std::vector<std::pair<Uuid, std::shared_ptr<Peer>>> Registry::broadcast_targets(
    const Uuid& channel_id, const Uuid& sender) {
  std::vector<std::pair<Uuid, std::shared_ptr<Peer>>> targets;
  broadcast_targets(channel_id, sender, targets);
  return targets;
}

void Registry::broadcast_targets(const Uuid& channel_id, const Uuid& sender,
                                 std::vector<std::pair<Uuid, std::shared_ptr<Peer>>>& out) {
  out.clear();
  std::lock_guard lock(mutex_);
  auto it = channels_.find(channel_id);
  if (it == channels_.end()) return;
  out.reserve(it->second.members.size());
  for (const auto& [member_id, member] : it->second.members) {
    if (member_id != sender) out.emplace_back(member_id, member.peer);
  }
}

std::vector<Uuid> Registry::members(const Uuid& channel_id, std::uint64_t& version) {
  std::vector<Uuid> ids;
  std::lock_guard lock(mutex_);
  auto it = channels_.find(channel_id);
  version = 0;
  if (it == channels_.end()) return ids;
  version = it->second.version;
  for (const auto& [member_id, member] : it->second.members) ids.push_back(member_id);
  return ids;
}

RegistryStats Registry::stats() const {
  std::lock_guard lock(mutex_);
  return RegistryStats{channels_.size(), peer_count_};
}

std::vector<ChannelInfo> Registry::channel_list() const {
  std::lock_guard lock(mutex_);
  std::vector<ChannelInfo> list;
  list.reserve(channels_.size());
  for (const auto& [id, channel] : channels_) {
    list.push_back(ChannelInfo{id, channel.members.size(), channel.version});
  }
  return list;
}

std::optional<std::vector<PeerInfo>> Registry::channel_peers(const Uuid& channel_id,
                                                             std::uint64_t& version) const {
  std::lock_guard lock(mutex_);
  const auto it = channels_.find(channel_id);
  if (it == channels_.end()) return std::nullopt;
  version = it->second.version;
  std::vector<PeerInfo> peers;
  peers.reserve(it->second.members.size());
  for (const auto& [id, member] : it->second.members) {
    peers.push_back(
        PeerInfo{id, member.accepts_requests, std::string(member.peer->door()), member.joined_at});
  }
  return peers;
}

}  // namespace switchboard::core
