// A small synchronous client of etcd's v3 gRPC API over one or more endpoints, moving to the
// next endpoint when one fails. Every call is bounded by a deadline; streams can be cancelled
// from another thread.
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

#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace switchboard::cluster {

/// "http://host:port" or "host:port", comma-separated; throws std::invalid_argument on an empty
/// list or a scheme other than http (TLS to etcd is not supported).
std::vector<std::string> parse_etcd_endpoints(const std::string& urls);

/// The first key after every key starting with `prefix`: a range [prefix, end) holds them all.
std::string prefix_range_end(const std::string& prefix);

class EtcdClient {
public:
  using Duration = std::chrono::milliseconds;

  explicit EtcdClient(const std::vector<std::string>& endpoints);

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
  std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
  watch(grpc::ClientContext& context);
  /// Called after a stream failed: the next stream or call tries the next endpoint.
  void endpoint_failed(const grpc::Status& status);

private:
  template <typename Call>
  grpc::Status unary(Duration timeout, int attempts, Call&& call);
  std::shared_ptr<grpc::Channel> channel() const;

  std::vector<std::string> endpoints_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::atomic<std::size_t> current_{0};
  std::mutex contexts_mutex_;
  std::vector<grpc::ClientContext*> contexts_;  // calls in flight, cancelled by cancel_all()
  bool cancelled_ = false;
};

}  // namespace switchboard::cluster
