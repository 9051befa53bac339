// etcd v3 calls with deadlines and endpoint failover.
#include "cluster/etcd_client.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>

namespace switchboard::cluster {
namespace {

bool endpoint_unreachable(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

}  // namespace

std::vector<std::string> parse_etcd_endpoints(const std::string& urls) {
  std::vector<std::string> endpoints;
  for (std::size_t at = 0; at <= urls.size();) {
    const auto comma = std::min(urls.find(',', at), urls.size());
    std::string url = urls.substr(at, comma - at);
    at = comma + 1;
    if (url.empty()) continue;
    if (url.starts_with("https://")) {
      throw std::invalid_argument("etcd endpoint " + url + ": TLS to etcd is not supported");
    }
    if (url.starts_with("http://")) url = url.substr(7);
    while (!url.empty() && url.back() == '/') url.pop_back();
    if (url.empty() || url.find("://") != std::string::npos || url.find(':') == std::string::npos) {
      throw std::invalid_argument("etcd endpoint \"" + url + "\" is not http://HOST:PORT");
    }
    endpoints.push_back(url);
  }
  if (endpoints.empty()) throw std::invalid_argument("no etcd endpoint given");
  return endpoints;
}

std::string prefix_range_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

EtcdClient::EtcdClient(const std::vector<std::string>& endpoints) : endpoints_(endpoints) {
  grpc::ChannelArguments arguments;
  // A restarted etcd is found again within a second, not after gRPC's default backoff of up
  // to two minutes. The minimum is also the time a connection attempt may take.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  for (const auto& endpoint : endpoints_) {
    channels_.push_back(
        grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), arguments));
  }
}

std::string EtcdClient::current_endpoint() const {
  return endpoints_[current_.load() % endpoints_.size()];
}

std::shared_ptr<grpc::Channel> EtcdClient::channel() const {
  return channels_[current_.load() % channels_.size()];
}

void EtcdClient::endpoint_failed(const grpc::Status& status) {
  if (!endpoint_unreachable(status) || channels_.size() < 2) return;
  const auto from = current_.fetch_add(1) % channels_.size();
  spdlog::debug("etcd endpoint {} failed ({}); next {}", endpoints_[from], status.error_message(),
                current_endpoint());
}

template <typename Call>
grpc::Status EtcdClient::unary(Duration timeout, int attempts, Call&& call) {
  grpc::Status status;
  for (int attempt = 0; attempt < std::max(1, attempts); ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    // A call waits (until its deadline) for the connection rather than failing at once while
    // the channel reconnects: with the synchronous API only threads inside a call drive the
    // connection, so a call that fails fast leaves a reconnect to gRPC's five-second backup
    // poller.
    context.set_wait_for_ready(true);
    {
      std::lock_guard lock(contexts_mutex_);
      if (cancelled_) return {grpc::StatusCode::CANCELLED, "client stopped"};
      contexts_.push_back(&context);
    }
    status = call(context, channel());
    {
      std::lock_guard lock(contexts_mutex_);
      std::erase(contexts_, &context);
    }
    if (status.ok()) return status;
    endpoint_failed(status);
    if (!endpoint_unreachable(status)) return status;
  }
  return status;
}

void EtcdClient::cancel_all() {
  std::lock_guard lock(contexts_mutex_);
  cancelled_ = true;
  for (auto* context : contexts_) context->TryCancel();
}

grpc::Status EtcdClient::lease_grant(std::int64_t ttl_seconds,
                                     etcdserverpb::LeaseGrantResponse& response, Duration timeout,
                                     int attempts) {
  return unary(timeout, attempts, [&](grpc::ClientContext& context, auto channel) {
    etcdserverpb::LeaseGrantRequest request;
    request.set_ttl(ttl_seconds);
    return etcdserverpb::Lease::NewStub(channel)->LeaseGrant(&context, request, &response);
  });
}

grpc::Status EtcdClient::lease_revoke(std::int64_t lease, Duration timeout) {
  return unary(timeout, 1, [&](grpc::ClientContext& context, auto channel) {
    etcdserverpb::LeaseRevokeRequest request;
    request.set_id(lease);
    etcdserverpb::LeaseRevokeResponse response;
    return etcdserverpb::Lease::NewStub(channel)->LeaseRevoke(&context, request, &response);
  });
}

grpc::Status EtcdClient::put(const std::string& key, const std::string& value, std::int64_t lease,
                             Duration timeout, int attempts) {
  return unary(timeout, attempts, [&](grpc::ClientContext& context, auto channel) {
    etcdserverpb::PutRequest request;
    request.set_key(key);
    request.set_value(value);
    request.set_lease(lease);
    etcdserverpb::PutResponse response;
    return etcdserverpb::KV::NewStub(channel)->Put(&context, request, &response);
  });
}

grpc::Status EtcdClient::range(const std::string& key, const std::string& range_end,
                               etcdserverpb::RangeResponse& response, Duration timeout) {
  return unary(timeout, 1, [&](grpc::ClientContext& context, auto channel) {
    etcdserverpb::RangeRequest request;
    request.set_key(key);
    request.set_range_end(range_end);
    return etcdserverpb::KV::NewStub(channel)->Range(&context, request, &response);
  });
}

grpc::Status EtcdClient::txn(const etcdserverpb::TxnRequest& request,
                             etcdserverpb::TxnResponse& response, Duration timeout, int attempts) {
  return unary(timeout, attempts, [&](grpc::ClientContext& context, auto channel) {
    return etcdserverpb::KV::NewStub(channel)->Txn(&context, request, &response);
  });
}

grpc::Status EtcdClient::keep_alive_once(std::int64_t lease,
                                         etcdserverpb::LeaseKeepAliveResponse& response,
                                         Duration timeout) {
  return unary(timeout, 1, [&](grpc::ClientContext& context, auto channel) {
    auto stream = etcdserverpb::Lease::NewStub(channel)->LeaseKeepAlive(&context);
    etcdserverpb::LeaseKeepAliveRequest request;
    request.set_id(lease);
    if (!stream->Write(request) || !stream->Read(&response)) {
      context.TryCancel();
      auto status = stream->Finish();
      return status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "keepalive stream closed")
                         : status;
    }
    stream->WritesDone();
    context.TryCancel();  // the one answer is in; the stream's end carries nothing
    (void)stream->Finish();
    return grpc::Status::OK;
  });
}

std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
EtcdClient::watch(grpc::ClientContext& context) {
  context.set_wait_for_ready(true);
  return etcdserverpb::Watch::NewStub(channel())->Watch(&context);
}

}  // namespace switchboard::cluster
