// The gRPC door's side of the relay process: its listener, its TLS (terminated here, ALPN h2,
// files watched for changes) and the hand-over of each connection to the gateway.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/steady_timer.hpp>
#include <stdexcept>

#include "server/server.hpp"
#if SWITCHBOARD_WITH_GRPC
#include "grpc_gateway/gateway.hpp"
#endif

namespace switchboard::core {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

void Server::open_grpc_door() {
#if SWITCHBOARD_WITH_GRPC
  if (config_.grpc_listen.empty()) return;
  const auto endpoint = parse_endpoint(config_.grpc_listen);
  try {
    grpc_acceptor_.open(endpoint.protocol());
    grpc_acceptor_.set_option(tcp::acceptor::reuse_address(true));
    grpc_acceptor_.bind(endpoint);
    grpc_acceptor_.listen(asio::socket_base::max_listen_connections);
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot listen for gRPC on " + config_.grpc_listen + ": " +
                             e.code().message());
  }
  grpc_bound_ = grpc_acceptor_.local_endpoint();
  if (config_.tls.grpc) grpc_tls_ = std::make_unique<net::TlsContextHolder>(config_.tls, true);
  std::vector<asio::any_io_executor> executors{io_.get_executor()};
  for (auto& worker : workers_) executors.emplace_back(worker->get_executor());
  gateway_ = std::make_unique<gateway::Gateway>(*context_, std::move(executors));
#endif
}

void Server::adopt_grpc(std::unique_ptr<net::Transport> transport) {
#if SWITCHBOARD_WITH_GRPC
  if (gateway_ && !shutting_down_.load()) {
    gateway_->adopt(std::move(transport));
    return;
  }
#endif
  transport->close();
}

void Server::watch_grpc_tls() {
  if (!grpc_tls_) return;
  if (!grpc_tls_watch_) grpc_tls_watch_ = std::make_unique<asio::steady_timer>(io_);
  grpc_tls_watch_->expires_after(std::chrono::seconds(config_.tls.grpc_refresh_seconds));
  grpc_tls_watch_->async_wait([this](const boost::system::error_code& ec) {
    if (ec || shutting_down_.load()) return;
    grpc_tls_->reload_if_changed();
    watch_grpc_tls();
  });
}

std::string Server::grpc_address() const {
  if (!grpc_acceptor_.is_open() && grpc_bound_.port() == 0) return {};
  const auto host = grpc_bound_.address();
  if (host.is_v6()) return fmt::format("[{}]:{}", host.to_string(), grpc_bound_.port());
  return fmt::format("{}:{}", host.to_string(), grpc_bound_.port());
}

int Server::grpc_port() const { return grpc_bound_.port(); }

}  // namespace switchboard::core
