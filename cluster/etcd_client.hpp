// A small synchronous client of etcd's v3 gRPC API over one or more endpoints, moving to the
// next endpoint when one fails. Every call is bounded by a deadline; streams can be cancelled
// from another thread. It owns its gRPC channels and, with a user, etcd's current token.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cluster/etcd_security.hpp"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace switchboard::cluster {

/// etcd endpoints as the client dials them: host:port each, and whether over TLS.
struct EtcdEndpoints {
  std::vector<std::string> hosts;
  bool tls = false;
};

/// "http://host:port", "https://host:port" or "host:port" (http), comma-separated; throws
/// std::invalid_argument on an empty list, another scheme, or http and https mixed.
EtcdEndpoints parse_etcd_endpoints(const std::string& urls);

/// The first key after every key starting with `prefix`: a range [prefix, end) holds them all.
std::string prefix_range_end(const std::string& prefix);

class EtcdClient {
public:
  using Duration = std::chrono::milliseconds;

  /// Throws std::invalid_argument when `security` does not fit `endpoints` (a certificate
  /// over http, a certificate without its key).
  explicit EtcdClient(const EtcdEndpoints& endpoints, EtcdSecurity security = {});

  /// The endpoint calls go to now, as host:port.
  std::string current_endpoint() const;

  /// Unary calls on the current endpoint; on a failure that says the endpoint is unreachable,
  /// the next call goes to the next endpoint. `attempts` endpoints are tried in turn.
  grpc::Status lease_grant(std::int64_t ttl_seconds, etcdserverpb::LeaseGrantResponse& response,
                           Duration timeout, int attempts = 1);
  grpc::Status lease_revoke(std::int64_t lease, Duration timeout);
  grpc::Status put(const std::string& key, const std::string& value, std::int64_t lease,
                   Duration timeout, int attempts = 1);
  grpc::Status range(const std::string& key, const std::string& range_end,
                     etcdserverpb::RangeResponse& response, Duration timeout);
  grpc::Status txn(const etcdserverpb::TxnRequest& request, etcdserverpb::TxnResponse& response,
                   Duration timeout, int attempts = 1);
  /// One renewal over a short LeaseKeepAlive stream: the response's TTL is <= 0 when the lease
  /// is gone.
  grpc::Status keep_alive_once(std::int64_t lease, etcdserverpb::LeaseKeepAliveResponse& response,
                               Duration timeout);

  /// Number of endpoints.
  int endpoint_count() const { return static_cast<int>(channels_.size()); }
  /// Cancels every stream and call in flight (they fail with CANCELLED); for shutdown.
  void cancel_all();

  /// A Watch stream on the current endpoint; the caller owns `context` and cancels through it.
  /// With a user, the stream carries a token; an empty result means none could be had (the
  /// reason is in `failure`).
  std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
  watch(grpc::ClientContext& context, grpc::Status& failure);
  /// Called after a stream failed: the next stream or call tries the next endpoint, and one
  /// refused for its token asks etcd for a new one.
  void endpoint_failed(const grpc::Status& status);

  /// `status`'s message, and for an unreachable endpoint the connection's last error too (a
  /// refused connection, a failed TLS handshake), which a call that waited does not give.
  /// Makes a short call of its own: for logs, not for every failure.
  std::string explain(const grpc::Status& status);

  /// Tokens etcd has issued to this client (0 without a user).
  std::uint64_t authentications() const { return authentications_.load(); }

private:
  template <typename Call>
  grpc::Status unary(Duration timeout, int attempts, Call&& call);
  std::shared_ptr<grpc::Channel> channel() const;
  /// Puts the current token on `context` (and in `token`), asking etcd for one first when
  /// there is none. Without a user, does nothing.
  grpc::Status authorize(grpc::ClientContext& context, Duration timeout, std::string& token);
  grpc::Status authenticate(Duration timeout, std::string& token);
  /// Takes the password from password_file_ when it is set and its first line is not empty;
  /// otherwise keeps the one in use. Under authenticate_mutex_.
  void reread_password();
  /// A failed call: `token` (the one it carried) is dropped when etcd refused it, and an
  /// unreachable endpoint passes the turn to the next.
  void failed(const grpc::Status& status, const std::string& token);

  std::vector<std::string> endpoints_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::atomic<std::size_t> current_{0};
  std::mutex contexts_mutex_;
  std::vector<grpc::ClientContext*> contexts_;  // calls in flight, cancelled by cancel_all()
  bool cancelled_ = false;
  std::string user_;
  std::string password_;                   // authenticate_mutex_ (after construction)
  std::string password_file_;              // read again at each login; empty: password_ is fixed
  bool password_file_unreadable_ = false;  // at the last login (authenticate_mutex_)
  std::mutex authenticate_mutex_;          // held while one thread asks etcd for a token
  grpc::Status last_refusal_;     // etcd's last refusal of the password (authenticate_mutex_)
  std::string refused_password_;  // the password it refused (authenticate_mutex_)
  std::chrono::steady_clock::time_point refused_at_;
  std::mutex token_mutex_;   // taken alone, never with contexts_mutex_
  std::string token_;        // etcd's token for user_; empty until the first call
  std::string watch_token_;  // the one the last watch stream carried
  std::atomic<std::uint64_t> authentications_{0};
};

}  // namespace switchboard::cluster
