// etcd v3 calls with deadlines and endpoint failover.
#include "cluster/etcd_client.hpp"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <stdexcept>

namespace switchboard::cluster {
namespace {

bool endpoint_unreachable(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

}  // namespace

EtcdEndpoints parse_etcd_endpoints(const std::string& urls) {
  EtcdEndpoints endpoints;
  bool plain = false;
  for (std::size_t at = 0; at <= urls.size();) {
    const auto comma = std::min(urls.find(',', at), urls.size());
    std::string url = urls.substr(at, comma - at);
    at = comma + 1;
    if (url.empty()) continue;
    const std::string given = url;
    if (url.starts_with("https://")) {
      url = url.substr(8);
      endpoints.tls = true;
    } else {
      if (url.starts_with("http://")) url = url.substr(7);
      plain = true;
    }
    while (!url.empty() && url.back() == '/') url.pop_back();
    if (url.empty() || url.find("://") != std::string::npos || url.find(':') == std::string::npos) {
      throw std::invalid_argument("etcd endpoint \"" + given +
                                  "\" is not http://HOST:PORT or https://HOST:PORT");
    }
    endpoints.hosts.push_back(url);
  }
  if (endpoints.hosts.empty()) throw std::invalid_argument("no etcd endpoint given");
  if (plain && endpoints.tls) {
    // One set of credentials serves every endpoint, and a cluster's etcd speaks one scheme.
    throw std::invalid_argument("etcd endpoints mix http and https");
  }
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

EtcdClient::EtcdClient(const EtcdEndpoints& endpoints, EtcdSecurity security)
    : endpoints_(endpoints.hosts),
      user_(std::move(security.user)),
      password_(std::move(security.password)),
      password_file_(std::move(security.password_file)) {
  if (security.cert_file.empty() != security.key_file.empty()) {
    throw std::invalid_argument(
        "an etcd client certificate needs its key, and a key its certificate");
  }
  if (!endpoints.tls && !(security.ca_file.empty() && security.cert_file.empty())) {
    throw std::invalid_argument(
        "etcd CA or client certificate given, but the endpoints are http://");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (endpoints.tls && security.ca_file.empty() && security.cert_file.empty()) {
    credentials = grpc::SslCredentials({});  // the system's roots, no client certificate
  } else if (endpoints.tls) {
    // gRPC reads the files again every refresh_seconds, so that a renewed certificate or a
    // new root reaches the next handshake.
    namespace tls = grpc::experimental;
    tls::TlsChannelCredentialsOptions options;
    options.set_certificate_provider(std::make_shared<tls::FileWatcherCertificateProvider>(
        security.key_file, security.cert_file, security.ca_file,
        std::max(1U, security.refresh_seconds)));
    if (!security.ca_file.empty()) options.watch_root_certs();
    if (!security.cert_file.empty()) options.watch_identity_key_cert_pairs();
    // etcd's certificate must name the endpoint's host: checked at the handshake here, and for
    // each call by gRPC's call-host check, which is on by default.
    options.set_certificate_verifier(std::make_shared<tls::HostNameCertificateVerifier>());
    credentials = tls::TlsCredentials(options);
  }
  grpc::ChannelArguments arguments;
  // A restarted etcd is found again within a second, not after gRPC's default backoff of up
  // to two minutes. The minimum is also the time a connection attempt may take.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  for (const auto& endpoint : endpoints_) {
    channels_.push_back(grpc::CreateCustomChannel(endpoint, credentials, arguments));
  }
}

std::string EtcdClient::current_endpoint() const {
  return endpoints_[current_.load() % endpoints_.size()];
}

std::shared_ptr<grpc::Channel> EtcdClient::channel() const {
  return channels_[current_.load() % channels_.size()];
}

void EtcdClient::endpoint_failed(const grpc::Status& status) {
  std::string token;
  {
    std::lock_guard lock(token_mutex_);
    token = watch_token_;
  }
  failed(status, token);
}

void EtcdClient::failed(const grpc::Status& status, const std::string& token) {
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED && !token.empty()) {
    // Only the token that was refused: one another thread got since then is still good.
    std::lock_guard lock(token_mutex_);
    if (token_ == token) token_.clear();
  }
  if (!endpoint_unreachable(status) || channels_.size() < 2) return;
  const auto from = current_.fetch_add(1) % channels_.size();
  spdlog::debug("etcd endpoint {} failed ({}); next {}", endpoints_[from], status.error_message(),
                current_endpoint());
}

template <typename Call>
grpc::Status EtcdClient::unary(Duration timeout, int attempts, Call&& call) {
  grpc::Status status;
  bool token_renewed = false;
  for (int attempt = 0; attempt < std::max(1, attempts); ++attempt) {
    grpc::ClientContext context;
    std::string token;
    status = authorize(context, timeout, token);
    if (status.ok()) {
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
    }
    failed(status, token);
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED && !token.empty() &&
        !token_renewed) {
      // The token expired or etcd forgot it (a restart, authentication turned off and on):
      // one more try, with a new one.
      token_renewed = true;
      --attempt;
      continue;
    }
    if (!endpoint_unreachable(status)) return status;
  }
  return status;
}

grpc::Status EtcdClient::authorize(grpc::ClientContext& context, Duration timeout,
                                   std::string& token) {
  if (user_.empty()) return grpc::Status::OK;
  {
    std::lock_guard lock(token_mutex_);
    token = token_;
  }
  if (token.empty()) {
    // One thread asks while the others wait for its answer: etcd would issue a token to each.
    std::lock_guard asking_lock(authenticate_mutex_);
    {
      std::lock_guard lock(token_mutex_);
      token = token_;
    }
    if (token.empty()) {
      auto status = authenticate(timeout, token);
      if (!status.ok()) return status;
    }
  }
  context.AddMetadata("token", token);
  return grpc::Status::OK;
}

void EtcdClient::reread_password() {
  if (password_file_.empty()) return;
  std::ifstream file(password_file_);
  std::string line;
  std::getline(file, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (!file || line.empty()) {
    // Said once until the file is readable again: every call waiting for a token comes here.
    if (!password_file_unreadable_) {
      spdlog::warn("cluster: cannot read a password from {}; logging in to etcd with the last one",
                   password_file_);
    }
    password_file_unreadable_ = true;
    return;
  }
  password_file_unreadable_ = false;
  password_ = std::move(line);
}

grpc::Status EtcdClient::authenticate(Duration timeout, std::string& token) {
  const auto now = std::chrono::steady_clock::now();
  reread_password();
  if (!last_refusal_.ok() && password_ == refused_password_ &&
      now < refused_at_ + std::chrono::seconds(1)) {
    // A wrong password stays wrong: at most one try a second, which costs etcd a password
    // hash each. A new one in the file is tried at once.
    return last_refusal_;
  }
  grpc::ClientContext asking;
  asking.set_deadline(std::chrono::system_clock::now() + timeout);
  asking.set_wait_for_ready(true);
  {
    std::lock_guard lock(contexts_mutex_);
    if (cancelled_) return {grpc::StatusCode::CANCELLED, "client stopped"};
    contexts_.push_back(&asking);
  }
  etcdserverpb::AuthenticateRequest request;
  request.set_name(user_);
  request.set_password(password_);
  etcdserverpb::AuthenticateResponse response;
  const auto status =
      etcdserverpb::Auth::NewStub(channel())->Authenticate(&asking, request, &response);
  {
    std::lock_guard lock(contexts_mutex_);
    std::erase(contexts_, &asking);
  }
  if (!status.ok()) {
    grpc::Status refusal(status.error_code(),
                         "etcd authentication as " + user_ + " failed: " + status.error_message());
    if (!endpoint_unreachable(status)) {
      // etcd answered (INVALID_ARGUMENT for a wrong user or password): remembered for a while.
      last_refusal_ = refusal;
      refused_password_ = password_;
      refused_at_ = now;
    }
    return refusal;
  }
  last_refusal_ = grpc::Status::OK;
  token = response.token();
  ++authentications_;
  std::lock_guard lock(token_mutex_);
  token_ = token;
  return grpc::Status::OK;
}

std::string EtcdClient::explain(const grpc::Status& status) {
  if (!endpoint_unreachable(status)) return status.error_message();
  // A call that waits for the connection ends at its deadline without saying why the
  // connection fails; one that does not wait fails with the connection's last error (refused,
  // a TLS handshake that failed, a name that does not resolve).
  grpc::ClientContext probe;
  probe.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  etcdserverpb::RangeRequest request;
  request.set_key(std::string(1, '\0'));
  request.set_limit(1);
  etcdserverpb::RangeResponse response;
  const auto probed = etcdserverpb::KV::NewStub(channel())->Range(&probe, request, &response);
  if (probed.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return status.error_message() + "; connection: " + probed.error_message();
  }
  return status.error_message();
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
EtcdClient::watch(grpc::ClientContext& context, grpc::Status& failure) {
  std::string token;
  failure = authorize(context, std::chrono::seconds(1), token);
  {
    std::lock_guard lock(token_mutex_);
    watch_token_ = token;
  }
  if (!failure.ok()) return nullptr;
  context.set_wait_for_ready(true);
  return etcdserverpb::Watch::NewStub(channel())->Watch(&context);
}

}  // namespace switchboard::cluster
