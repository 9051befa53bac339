// The etcd-backed directory: a lease keeper, a membership watcher and a claim worker, each on
// its own thread, around one mutex-guarded state.
#include "cluster/etcd_directory.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "cluster/etcd_client.hpp"
#include "cluster/placement.hpp"

namespace switchboard::cluster {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr milliseconds kCallTimeout{1000};

std::string code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    default:
      return "code " + std::to_string(static_cast<int>(code));
  }
}
constexpr std::string_view kFencedReason = "relay fenced: cannot renew its lease";

/// The member key's value: one line, "v1 NODE NATIVE GRPC" ("-" for no gRPC door).
std::string member_value(const NodeAddress& self) {
  return fmt::format("v1 {} {} {}", self.node_id, self.native, self.grpc.empty() ? "-" : self.grpc);
}

std::optional<NodeAddress> parse_member(std::string_view value) {
  std::vector<std::string> words;
  for (std::size_t at = 0; at < value.size();) {
    const auto space = std::min(value.find(' ', at), value.size());
    if (space > at) words.emplace_back(value.substr(at, space - at));
    at = space + 1;
  }
  if (words.size() != 4 || words[0] != "v1") return std::nullopt;
  return NodeAddress{words[1], words[2], words[3] == "-" ? std::string{} : words[3]};
}

Verdict unavailable(std::string reason, std::uint64_t revision) {
  Verdict verdict;
  verdict.kind = Verdict::Kind::unavailable;
  verdict.reason = std::move(reason);
  verdict.revision = revision;
  return verdict;
}

Verdict redirect(const NodeAddress& owner, std::uint64_t revision) {
  Verdict verdict;
  verdict.kind = Verdict::Kind::redirect;
  verdict.owner = owner;
  verdict.revision = revision;
  return verdict;
}

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
      continue;
    }
    out += c;
  }
  out += '"';
}

std::string join_ids(const std::vector<std::string>& ids) {
  std::string out;
  for (const auto& id : ids) out += (out.empty() ? "" : ",") + id;
  return out;
}

}  // namespace

bool valid_node_id(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  return std::ranges::all_of(id, [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

using Relinquishes = std::vector<std::pair<Uuid, Verdict>>;

struct EtcdDirectory::State {
  explicit State(EtcdDirectoryConfig c)
      : config(std::move(c)),
        members_prefix(config.prefix + "/members/"),
        channels_prefix(config.prefix + "/channels/"),
        member_key(members_prefix + config.self.node_id),
        client(parse_etcd_endpoints(config.etcd), config.security),
        ttl(config.lease_ttl),
        margin(std::chrono::duration_cast<Clock::duration>(config.lease_ttl) / 3),
        renew_every(std::chrono::duration_cast<Clock::duration>(config.lease_ttl) / 3) {}

  const EtcdDirectoryConfig config;
  const std::string members_prefix;
  const std::string channels_prefix;
  const std::string member_key;
  EtcdClient client;
  const Clock::duration ttl;
  // The lease cannot expire before TTL after the send of the last renewal etcd acknowledged
  // (etcd counts from when it received it, later). The relay stops serving `margin` before
  // that, which absorbs the rate difference of the two clocks and the time a decision takes
  // to reach the doors.
  const Clock::duration margin;
  const Clock::duration renew_every;

  mutable std::mutex mutex;
  std::condition_variable wake;
  bool started = false;
  bool stopping = false;
  Relinquish relinquish;

  // The lease.
  std::int64_t lease = 0;
  std::int64_t abandoned_lease = 0;  ///< a fenced lease not yet revoked
  bool registered = false;           ///< the lease and the member key are in place
  bool fenced = false;
  bool leaving = false;
  bool left = false;               ///< the lease was revoked by leave(): no re-registration
  std::uint64_t keeper_kicks = 0;  ///< bumped when the keeper has something to look at
  Clock::time_point leave_deadline;
  Clock::time_point renewed_sent;  ///< send time of the last acknowledged renewal (or grant)

  // Why etcd refused or could not be reached, each reason logged once until registration
  // succeeds: a wrong certificate or password fails every retry the same way, and the threads'
  // calls may fail for different reasons in turn. At most a few distinct ones are kept.
  std::set<std::string> etcd_errors_logged;

  void report_etcd_error(std::unique_lock<std::mutex>& lock, const char* what,
                         const grpc::Status& status) {
    constexpr std::size_t kReasonsLogged = 8;
    auto reason = fmt::format("{}: {}", code_name(status.error_code()), status.error_message());
    if (etcd_errors_logged.size() >= kReasonsLogged || etcd_errors_logged.contains(reason)) return;
    etcd_errors_logged.insert(std::move(reason));
    // explain() may make a short call of its own: not under the lock resolve() and the
    // metrics take.
    lock.unlock();
    spdlog::warn("cluster etcd call failed node={} call={} etcd={} error=\"{}: {}\"", self_id(),
                 what, client.current_endpoint(), code_name(status.error_code()),
                 client.explain(status));
    lock.lock();
  }

  // The membership view.
  bool has_view = false;
  std::uint64_t revision = 0;
  std::map<std::string, NodeAddress> members;
  grpc::ClientContext* watch_context = nullptr;

  // Claims.
  std::unordered_set<Uuid, UuidHash> held;
  std::unordered_map<Uuid, std::string, UuidHash> releasing;  ///< channel -> next owner
  std::unordered_set<Uuid, UuidHash> to_delete;               ///< claims to remove from etcd
  std::deque<std::pair<Uuid, Done>> claims;                   ///< resolves waiting for etcd

  // Counters.
  std::uint64_t claims_won = 0;
  std::uint64_t claims_lost = 0;
  std::uint64_t relinquished = 0;
  std::uint64_t lease_grants = 0;
  std::int64_t renewal_last_us = 0;
  std::int64_t renewal_max_us = 0;

  std::thread keeper;
  std::thread watcher;
  std::thread worker;

  std::string claim_key(const Uuid& channel) const { return channels_prefix + channel.to_string(); }
  const std::string& self_id() const { return config.self.node_id; }

  bool expiring_locked(Clock::time_point now) const {
    return registered && now > renewed_sent + ttl - margin;
  }

  std::optional<std::string> not_ready_locked(Clock::time_point now) const {
    if (stopping) return "relay stopping";
    if (left) return "relay has left the cluster";
    if (fenced || expiring_locked(now)) return std::string(kFencedReason);
    if (!has_view) return "no membership view yet";
    if (!registered || !members.contains(self_id())) return "relay is joining the cluster";
    return std::nullopt;
  }

  std::vector<std::string> member_ids(bool without_self) const {
    std::vector<std::string> ids;
    for (const auto& [id, address] : members) {
      if (!(without_self && id == self_id())) ids.push_back(id);
    }
    return ids;
  }

  /// Moves every held channel whose owner is no longer this relay to `releasing` and returns
  /// the relinquish calls to make (outside the lock).
  Relinquishes rebalance_locked() {
    Relinquishes out;
    if (!has_view || fenced || !members.contains(self_id())) return out;
    const auto ids = member_ids(leaving);
    for (auto it = held.begin(); it != held.end();) {
      const auto owner = owner_of(*it, ids);
      if (owner == self_id()) {
        ++it;
        continue;
      }
      out.emplace_back(*it, owner.empty() ? unavailable("no other relay in the cluster", revision)
                                          : redirect(members.at(owner), revision));
      releasing[*it] = owner;
      ++relinquished;
      it = held.erase(it);
    }
    return out;
  }

  void call_relinquish(const Relinquishes& calls) {
    if (calls.empty()) return;
    Relinquish callback;
    {
      std::lock_guard lock(mutex);
      callback = relinquish;
    }
    for (const auto& [channel, next] : calls) {
      spdlog::debug("cluster relinquish channel={} next={}", channel.to_string(),
                    next.kind == Verdict::Kind::redirect ? next.owner.node_id : next.reason);
      if (callback) callback(channel, next);
    }
  }

  /// Waits until `deadline` or stop; returns false when stopping.
  bool pause_until(std::unique_lock<std::mutex>& lock, Clock::time_point deadline) {
    wake.wait_until(lock, deadline, [&] { return stopping; });
    return !stopping;
  }

  // ---- lease keeper ----

  /// Loses the lease: every held channel is relinquished as unavailable and forgotten; the
  /// keeper registers again with a new lease.
  void fence(std::unique_lock<std::mutex>& lock, std::string_view why) {
    Relinquishes calls;
    for (const auto& channel : held) {
      calls.emplace_back(channel, unavailable(std::string(kFencedReason), revision));
    }
    relinquished += calls.size();
    held.clear();
    releasing.clear();
    to_delete.clear();
    const bool was_fenced = fenced;
    fenced = true;
    registered = false;
    if (!was_fenced) {
      spdlog::warn("cluster relay fenced node={} lease={:x} reason=\"{}\" relinquished={}",
                   self_id(), lease, why, calls.size());
    }
    lock.unlock();
    call_relinquish(calls);
    lock.lock();
  }

  /// An abandoned lease may still hold keys: etcd only looked unreachable, or it restarted and
  /// restored its leases with a fresh TTL. Its claims must go; retried until etcd confirms.
  void revoke_abandoned(std::unique_lock<std::mutex>& lock) {
    const auto old_lease = abandoned_lease;
    if (old_lease == 0) return;
    lock.unlock();
    const auto revoked = client.lease_revoke(old_lease, milliseconds(300));
    lock.lock();
    if ((revoked.ok() || revoked.error_code() == grpc::StatusCode::NOT_FOUND) &&
        abandoned_lease == old_lease) {
      abandoned_lease = 0;
    }
  }

  void register_lease(std::unique_lock<std::mutex>& lock) {
    if (lease != 0) abandoned_lease = lease;
    lease = 0;
    revoke_abandoned(lock);
    if (stopping) return;
    lock.unlock();
    const auto sent = Clock::now();
    etcdserverpb::LeaseGrantResponse granted;
    auto status = client.lease_grant(config.lease_ttl.count(), granted, kCallTimeout,
                                     client.endpoint_count());
    if (status.ok() && granted.error().empty()) {
      status = client.put(member_key, member_value(config.self), granted.id(), kCallTimeout,
                          client.endpoint_count());
      if (!status.ok()) (void)client.lease_revoke(granted.id(), milliseconds(300));
    }
    lock.lock();
    if (stopping) {
      if (status.ok()) {
        lock.unlock();
        (void)client.lease_revoke(granted.id(), milliseconds(300));
        lock.lock();
      }
      return;
    }
    if (!status.ok() || !granted.error().empty()) {
      report_etcd_error(
          lock, "registration",
          status.ok() ? grpc::Status(grpc::StatusCode::UNKNOWN, granted.error()) : status);
      pause_until(lock, Clock::now() + renew_every / 3);
      return;
    }
    etcd_errors_logged.clear();
    lease = granted.id();
    registered = true;
    renewed_sent = sent;
    ++lease_grants;
    const bool was_fenced = fenced;
    fenced = false;
    spdlog::info("cluster lease granted node={} lease={:x} ttl_s={} etcd={} native={} grpc={}",
                 self_id(), lease, config.lease_ttl.count(), client.current_endpoint(),
                 config.self.native, config.self.grpc.empty() ? "-" : config.self.grpc);
    if (was_fenced) spdlog::info("cluster relay unfenced node={} lease={:x}", self_id(), lease);
    // A fresh view from a fresh Range: whatever the old watch missed is re-read.
    if (watch_context != nullptr) watch_context->TryCancel();
  }

  void finish_leave(std::unique_lock<std::mutex>& lock) {
    left = true;
    const auto revoked = lease;
    registered = false;
    lease = 0;
    lock.unlock();
    const auto status = client.lease_revoke(revoked, kCallTimeout);
    lock.lock();
    spdlog::info("cluster left node={} lease={:x} revoked={} unreleased={}", self_id(), revoked,
                 status.ok(), releasing.size() + held.size());
  }

  void keep_lease() {
    std::unique_lock lock(mutex);
    auto next_renewal = Clock::now();
    while (!stopping) {
      if (left) {
        wake.wait(lock, [&] { return stopping; });
        break;
      }
      if (leaving && (Clock::now() >= leave_deadline || (held.empty() && releasing.empty()))) {
        if (registered) {
          finish_leave(lock);
          continue;
        }
      }
      if (!registered) {
        if (leaving) {
          left = true;
          continue;
        }
        register_lease(lock);
        next_renewal = renewed_sent + renew_every;
        continue;
      }
      const auto fence_at = renewed_sent + ttl - margin;
      auto until = std::min(next_renewal, fence_at);
      if (leaving) until = std::min(until, leave_deadline);
      const auto kicks = keeper_kicks;
      wake.wait_until(lock, until, [&] { return stopping || keeper_kicks != kicks; });
      if (stopping) break;
      const auto now = Clock::now();
      if (now > fence_at) {
        fence(lock, "no renewal acknowledged in time");
        continue;
      }
      if (now < next_renewal) continue;
      const auto current = lease;
      lock.unlock();
      const auto sent = Clock::now();
      etcdserverpb::LeaseKeepAliveResponse response;
      // Bounded by the fence: the keeper must be back in time to relinquish the channels.
      const auto timeout =
          std::clamp(std::chrono::duration_cast<milliseconds>(fence_at - sent), milliseconds(50),
                     std::chrono::duration_cast<milliseconds>(renew_every));
      const auto status = client.keep_alive_once(current, response, timeout);
      const auto took = Clock::now() - sent;
      lock.lock();
      if (stopping || lease != current || !registered) continue;
      if (!status.ok()) {
        spdlog::debug("cluster lease renewal failed etcd={} error=\"{}\"",
                      client.current_endpoint(), status.error_message());
        next_renewal = Clock::now() + renew_every / 4;
        continue;
      }
      if (response.ttl() <= 0) {
        fence(lock, "the lease is gone");
        continue;
      }
      if (Clock::now() > sent + ttl - margin) {
        // Acknowledged, but too late to trust the time between: the fence was already due.
        fence(lock, "renewal acknowledged too late");
        continue;
      }
      renewed_sent = sent;
      renewal_last_us = std::chrono::duration_cast<std::chrono::microseconds>(took).count();
      renewal_max_us = std::max(renewal_max_us, renewal_last_us);
      next_renewal = sent + renew_every;
      revoke_abandoned(lock);
    }
  }

  // ---- membership watcher ----

  void apply_view(std::unique_lock<std::mutex>& lock, std::map<std::string, NodeAddress> next,
                  std::uint64_t next_revision) {
    std::vector<std::string> joined;
    std::vector<std::string> gone;
    for (const auto& [id, address] : next) {
      if (!members.contains(id)) joined.push_back(id);
    }
    for (const auto& [id, address] : members) {
      if (!next.contains(id)) gone.push_back(id);
    }
    const bool first = !has_view;
    members = std::move(next);
    revision = next_revision;
    has_view = true;
    if (first || !joined.empty() || !gone.empty()) {
      spdlog::info("cluster members changed node={} revision={} members={} joined={} left={}",
                   self_id(), revision, join_ids(member_ids(false)), join_ids(joined),
                   join_ids(gone));
    }
    auto calls = rebalance_locked();
    lock.unlock();
    call_relinquish(calls);
    lock.lock();
  }

  void watch_members() {
    const auto range_end = prefix_range_end(members_prefix);
    std::unique_lock lock(mutex);
    while (!stopping) {
      lock.unlock();
      etcdserverpb::RangeResponse range;
      auto status = client.range(members_prefix, range_end, range, kCallTimeout);
      lock.lock();
      if (stopping) break;
      if (!status.ok()) {
        report_etcd_error(lock, "membership read", status);
        pause_until(lock, Clock::now() + milliseconds(200));
        continue;
      }
      std::map<std::string, NodeAddress> view;
      std::uint64_t view_revision = 0;
      for (const auto& kv : range.kvs()) {
        if (auto member = parse_member(kv.value())) view[member->node_id] = *member;
        view_revision = std::max(view_revision, static_cast<std::uint64_t>(kv.mod_revision()));
      }
      apply_view(lock, std::move(view), view_revision);
      if (stopping) break;

      grpc::ClientContext context;
      watch_context = &context;
      lock.unlock();
      grpc::Status refused;
      auto stream = client.watch(context, refused);
      if (!stream) {
        lock.lock();
        watch_context = nullptr;
        if (stopping) break;
        report_etcd_error(lock, "watch", refused);
        client.endpoint_failed(refused);
        pause_until(lock, Clock::now() + milliseconds(100));
        continue;
      }
      etcdserverpb::WatchRequest request;
      auto* create = request.mutable_create_request();
      create->set_key(members_prefix);
      create->set_range_end(range_end);
      create->set_start_revision(range.header().revision() + 1);
      bool healthy = stream->Write(request);
      etcdserverpb::WatchResponse response;
      while (healthy && stream->Read(&response)) {
        if (response.canceled() || response.compact_revision() > 0) break;
        if (response.events_size() == 0) continue;
        lock.lock();
        auto next = members;
        auto next_revision = revision;
        for (const auto& event : response.events()) {
          const auto& kv = event.kv();
          next_revision = std::max(next_revision, static_cast<std::uint64_t>(kv.mod_revision()));
          const auto id = kv.key().substr(members_prefix.size());
          if (event.type() == mvccpb::Event::DELETE) {
            next.erase(id);
          } else if (auto member = parse_member(kv.value())) {
            next[member->node_id] = *member;
          }
        }
        apply_view(lock, std::move(next), next_revision);
        const bool stop_now = stopping;
        lock.unlock();
        if (stop_now) break;
      }
      context.TryCancel();
      status = stream->Finish();
      lock.lock();
      watch_context = nullptr;
      if (stopping) break;
      client.endpoint_failed(status);
      pause_until(lock, Clock::now() + milliseconds(100));
    }
  }

  // ---- claim worker ----

  void claim(std::unique_lock<std::mutex>& lock, const Uuid& channel, Done& done) {
    to_delete.erase(channel);  // a claim about to be deleted is taken over instead
    if (auto reason = not_ready_locked(Clock::now())) {
      const auto verdict = unavailable(*reason, revision);
      lock.unlock();
      done(verdict);
      lock.lock();
      return;
    }
    const auto current = lease;
    lock.unlock();
    const auto key = claim_key(channel);
    etcdserverpb::TxnRequest request;
    auto* compare = request.add_compare();
    compare->set_key(key);
    compare->set_target(etcdserverpb::Compare::CREATE);
    compare->set_result(etcdserverpb::Compare::EQUAL);
    compare->set_create_revision(0);
    auto* put = request.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(self_id());
    put->set_lease(current);
    request.add_failure()->mutable_request_range()->set_key(key);
    etcdserverpb::TxnResponse response;
    const auto status = client.txn(request, response, kCallTimeout, client.endpoint_count());
    lock.lock();
    Verdict verdict;
    Relinquishes calls;
    if (!status.ok()) {
      verdict = unavailable("etcd unreachable: cannot claim the channel", revision);
    } else if (lease != current || !registered || fenced) {
      verdict = unavailable(std::string(kFencedReason), revision);
    } else {
      std::string holder = self_id();
      bool earlier_lease = false;
      if (!response.succeeded()) {
        const auto& ranged = response.responses(0).response_range();
        holder = ranged.kvs_size() > 0 ? ranged.kvs(0).value() : std::string{};
        // Our id on another lease: an earlier process under this node id (killed and
        // restarted), or this one before it was fenced. That holder may still be serving until
        // its own fence, so the claim is not ours until that lease expires and the key goes.
        earlier_lease = ranged.kvs_size() > 0 && ranged.kvs(0).lease() != current;
      }
      if (earlier_lease && holder == self_id()) {
        ++claims_lost;
        verdict = unavailable("the channel is still held under an earlier lease of relay " +
                                  holder + "; retry once it expires",
                              revision);
      } else if (holder == self_id()) {
        if (response.succeeded()) ++claims_won;
        held.insert(channel);
        verdict.revision = revision;
        calls = rebalance_locked();  // the view may have moved on while etcd answered
      } else {
        ++claims_lost;
        if (holder.empty()) {
          verdict = unavailable("the channel's claim changed hands; retry", revision);
        } else if (const auto it = members.find(holder); it != members.end()) {
          verdict = redirect(it->second, revision);
        } else {
          verdict = unavailable("the channel is held by relay " + holder + "; retry", revision);
        }
      }
    }
    lock.unlock();
    done(verdict);
    call_relinquish(calls);
    lock.lock();
  }

  /// Removes the claims of emptied channels, guarded on being ours; false on an etcd failure.
  bool delete_claims(std::unique_lock<std::mutex>& lock) {
    while (!to_delete.empty() && !stopping) {
      const auto channel = *to_delete.begin();
      const auto current_lease = lease;
      lock.unlock();
      const auto key = claim_key(channel);
      etcdserverpb::TxnRequest request;
      // Ours means on our lease: a claim of an earlier process under the same node id goes
      // with that process's lease, never by our hand.
      auto* compare = request.add_compare();
      compare->set_key(key);
      compare->set_target(etcdserverpb::Compare::LEASE);
      compare->set_result(etcdserverpb::Compare::EQUAL);
      compare->set_lease(current_lease);
      request.add_success()->mutable_request_delete_range()->set_key(key);
      etcdserverpb::TxnResponse response;
      const auto status = client.txn(request, response, kCallTimeout, client.endpoint_count());
      lock.lock();
      if (!status.ok()) return false;
      to_delete.erase(channel);
    }
    return true;
  }

  void work() {
    std::unique_lock lock(mutex);
    bool deletes_failed = false;
    while (!stopping) {
      if (claims.empty()) {
        const auto ready = [&] {
          return stopping || !claims.empty() || (!to_delete.empty() && !deletes_failed);
        };
        if (deletes_failed) {
          wake.wait_for(lock, milliseconds(200), ready);
          deletes_failed = false;
        } else {
          wake.wait(lock, ready);
        }
        if (stopping) break;
      }
      if (!claims.empty()) {
        auto [channel, done] = std::move(claims.front());
        claims.pop_front();
        claim(lock, channel, done);
        continue;
      }
      deletes_failed = !delete_claims(lock);
    }
    // Every resolve is answered exactly once, stopping or not.
    auto left_over = std::move(claims);
    claims.clear();
    lock.unlock();
    for (auto& [channel, done] : left_over) done(unavailable("relay stopping", 0));
  }
};

EtcdDirectory::EtcdDirectory(EtcdDirectoryConfig config) {
  if (!valid_node_id(config.self.node_id)) {
    throw std::invalid_argument("node id \"" + config.self.node_id +
                                "\" must be 1 to 128 letters, digits, '.', '_' or '-'");
  }
  // The member value is space-separated: an address is one word with a port.
  const auto usable = [](const std::string& address) {
    return address.find_first_of(" \t\r\n") == std::string::npos &&
           address.rfind(':') != std::string::npos && address.rfind(':') + 1 < address.size();
  };
  if (!usable(config.self.native)) {
    throw std::invalid_argument("advertised native address \"" + config.self.native +
                                "\" is not HOST:PORT");
  }
  if (!config.self.grpc.empty() && !usable(config.self.grpc)) {
    throw std::invalid_argument("advertised gRPC address \"" + config.self.grpc +
                                "\" is not HOST:PORT");
  }
  if (config.lease_ttl < std::chrono::seconds(1)) {
    throw std::invalid_argument("the cluster lease TTL must be at least 1s");
  }
  while (config.prefix.ends_with('/')) config.prefix.pop_back();
  if (config.prefix.empty()) throw std::invalid_argument("the cluster prefix must not be empty");
  state_ = std::make_unique<State>(std::move(config));
}

EtcdDirectory::~EtcdDirectory() { stop(); }

void EtcdDirectory::on_relinquish(Relinquish relinquish) {
  std::lock_guard lock(state_->mutex);
  state_->relinquish = std::move(relinquish);
}

void EtcdDirectory::start() {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  if (s.started || s.stopping) return;
  s.started = true;
  s.keeper = std::thread([&s] { s.keep_lease(); });
  s.watcher = std::thread([&s] { s.watch_members(); });
  s.worker = std::thread([&s] { s.work(); });
}

void EtcdDirectory::resolve(const Uuid& channel, Done done) {
  auto& s = *state_;
  std::unique_lock lock(s.mutex);
  const auto revision = s.revision;
  if (auto reason = s.not_ready_locked(Clock::now())) {
    lock.unlock();
    done(unavailable(*reason, revision));
    return;
  }
  if (s.held.contains(channel)) {
    lock.unlock();
    Verdict serve;
    serve.revision = revision;
    done(serve);
    return;
  }
  if (const auto it = s.releasing.find(channel); it != s.releasing.end()) {
    // Its peers here are being moved: a new peer would meet nobody at either relay until the
    // claim is gone, so it comes back shortly.
    auto verdict =
        unavailable("the channel is moving to relay " + it->second + "; retry", revision);
    lock.unlock();
    done(verdict);
    return;
  }
  const auto owner = owner_of(channel, s.member_ids(s.leaving));
  if (owner.empty()) {
    lock.unlock();
    done(unavailable("no other relay in the cluster", revision));
    return;
  }
  if (owner != s.self_id()) {
    auto verdict = redirect(s.members.at(owner), revision);
    lock.unlock();
    done(verdict);
    return;
  }
  s.claims.emplace_back(channel, std::move(done));
  s.wake.notify_all();
}

Verdict EtcdDirectory::locate(const Uuid& channel) {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  const auto revision = s.revision;
  if (auto reason = s.not_ready_locked(Clock::now())) return unavailable(*reason, revision);
  Verdict serve;
  serve.revision = revision;
  if (s.held.contains(channel)) return serve;
  if (const auto it = s.releasing.find(channel); it != s.releasing.end()) {
    return unavailable("the channel is moving to relay " + it->second + "; retry", revision);
  }
  const auto owner = owner_of(channel, s.member_ids(s.leaving));
  if (owner.empty()) return unavailable("no other relay in the cluster", revision);
  // The placement owner that has not claimed the channel has no peer on it: a stream finds
  // nobody here, as on a relay alone.
  if (owner == s.self_id()) return serve;
  return redirect(s.members.at(owner), revision);
}

bool EtcdDirectory::admit(const Uuid& channel) {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  return s.held.contains(channel) && !s.not_ready_locked(Clock::now());
}

void EtcdDirectory::channel_emptied(const Uuid& channel) {
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  if (s.held.erase(channel) + s.releasing.erase(channel) == 0) return;
  s.to_delete.insert(channel);
  if (s.leaving) ++s.keeper_kicks;
  s.wake.notify_all();
}

void EtcdDirectory::leave(std::chrono::steady_clock::time_point deadline) {
  auto& s = *state_;
  Relinquishes calls;
  {
    std::lock_guard lock(s.mutex);
    if (s.leaving || !s.started) return;
    s.leaving = true;
    s.leave_deadline = deadline;
    spdlog::info("cluster leaving node={} held={}", s.self_id(), s.held.size());
    calls = s.rebalance_locked();
    ++s.keeper_kicks;
    s.wake.notify_all();
  }
  s.call_relinquish(calls);
}

void EtcdDirectory::stop() {
  auto& s = *state_;
  std::int64_t revoke = 0;
  {
    std::lock_guard lock(s.mutex);
    if (s.stopping) return;
    s.stopping = true;
    if (s.registered && !s.left) revoke = s.lease;
    if (s.watch_context != nullptr) s.watch_context->TryCancel();
    s.wake.notify_all();
  }
  // The others see this relay go at once rather than after the TTL.
  if (revoke != 0) (void)s.client.lease_revoke(revoke, milliseconds(500));
  s.client.cancel_all();
  for (auto* thread : {&s.keeper, &s.watcher, &s.worker}) {
    if (thread->joinable()) thread->join();
  }
}

std::optional<std::string> EtcdDirectory::not_ready_reason() const {
  std::lock_guard lock(state_->mutex);
  if (!state_->started) return "cluster directory not started";
  return state_->not_ready_locked(Clock::now());
}

ClusterStatus EtcdDirectory::status() const {
  const auto& s = *state_;
  std::lock_guard lock(s.mutex);
  ClusterStatus out;
  out.node_id = s.self_id();
  out.has_view = s.has_view;
  out.fenced = s.fenced || s.expiring_locked(Clock::now());
  out.leaving = s.leaving;
  out.lease = s.registered ? s.lease : 0;
  out.revision = s.revision;
  for (const auto& [id, address] : s.members) out.members.push_back(address);
  out.channels_held = s.held.size();
  out.channels_releasing = s.releasing.size();
  out.claims_won = s.claims_won;
  out.claims_lost = s.claims_lost;
  out.relinquished = s.relinquished;
  out.lease_grants = s.lease_grants;
  out.renewal_last_us = s.renewal_last_us;
  out.renewal_max_us = s.renewal_max_us;
  out.etcd_endpoint = s.client.current_endpoint();
  out.etcd_authentications = s.client.authentications();
  return out;
}

void EtcdDirectory::write_metrics(core::MetricsWriter& out) const {
  const auto st = status();
  const auto i64 = [](std::uint64_t value) { return static_cast<std::int64_t>(value); };
  out.family("switchboard_cluster_members", "gauge", "Relays in this relay's membership view.");
  out.sample("switchboard_cluster_members", "", i64(st.members.size()));
  out.family("switchboard_cluster_view_revision", "gauge",
             "etcd revision of the newest membership change this relay has seen.");
  out.sample("switchboard_cluster_view_revision", "", i64(st.revision));
  out.family("switchboard_cluster_channels_held", "gauge",
             "Channels this relay holds a claim on and serves.");
  out.sample("switchboard_cluster_channels_held", "", i64(st.channels_held));
  out.family("switchboard_cluster_channels_releasing", "gauge",
             "Channels relinquished whose peers have not all left yet.");
  out.sample("switchboard_cluster_channels_releasing", "", i64(st.channels_releasing));
  out.family("switchboard_cluster_claims_total", "counter",
             "Channel claims this relay tried in etcd, by result.");
  out.sample("switchboard_cluster_claims_total", "result=\"won\"", i64(st.claims_won));
  out.sample("switchboard_cluster_claims_total", "result=\"lost\"", i64(st.claims_lost));
  out.family("switchboard_cluster_relinquished_total", "counter",
             "Channels given up (placement moved, drain, fence).");
  out.sample("switchboard_cluster_relinquished_total", "", i64(st.relinquished));
  out.family("switchboard_cluster_lease_grants_total", "counter",
             "Leases granted to this relay (1, then one per re-registration).");
  out.sample("switchboard_cluster_lease_grants_total", "", i64(st.lease_grants));
  out.family("switchboard_cluster_lease_renewal_microseconds", "gauge",
             "Round trip of lease renewals: the last one and the longest.");
  out.sample("switchboard_cluster_lease_renewal_microseconds", "which=\"last\"",
             st.renewal_last_us);
  out.sample("switchboard_cluster_lease_renewal_microseconds", "which=\"max\"", st.renewal_max_us);
  out.family("switchboard_cluster_fenced", "gauge",
             "1 while the relay cannot trust its lease and serves no channel, else 0.");
  out.sample("switchboard_cluster_fenced", "", st.fenced ? 1 : 0);
  out.family("switchboard_cluster_etcd_authentications_total", "counter",
             "Tokens etcd issued to this relay (with an etcd user; 0 without).");
  out.sample("switchboard_cluster_etcd_authentications_total", "", i64(st.etcd_authentications));
}

std::string EtcdDirectory::json() const {
  const auto st = status();
  const auto reason = not_ready_reason();
  std::string out = "{\"node_id\":";
  append_json_string(out, st.node_id);
  out += fmt::format(",\"ready\":{},\"reason\":", reason ? "false" : "true");
  append_json_string(out, reason.value_or(""));
  out += fmt::format(",\"fenced\":{},\"leaving\":{},\"lease\":\"{:x}\",\"revision\":{},\"etcd\":",
                     st.fenced ? "true" : "false", st.leaving ? "true" : "false", st.lease,
                     st.revision);
  append_json_string(out, st.etcd_endpoint);
  out += ",\"members\":[";
  for (std::size_t i = 0; i < st.members.size(); ++i) {
    if (i > 0) out += ',';
    out += "{\"node_id\":";
    append_json_string(out, st.members[i].node_id);
    out += ",\"native\":";
    append_json_string(out, st.members[i].native);
    out += ",\"grpc\":";
    append_json_string(out, st.members[i].grpc);
    out += '}';
  }
  out += fmt::format(
      "],\"channels_held\":{},\"channels_releasing\":{},\"claims_won\":{},\"claims_lost\":{},"
      "\"relinquished\":{},\"lease_grants\":{},\"renewal_last_us\":{},\"renewal_max_us\":{}}}\n",
      st.channels_held, st.channels_releasing, st.claims_won, st.claims_lost, st.relinquished,
      st.lease_grants, st.renewal_last_us, st.renewal_max_us);
  return out;
}

}  // namespace switchboard::cluster
