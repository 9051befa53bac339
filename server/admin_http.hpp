// The HTTP admin endpoint: a small Boost.Beast server for metrics, health, introspection and the
// operator page.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace switchboard::core {

/// What the endpoint serves; each handler is called on an I/O thread per request.
struct AdminHandlers {
  std::function<std::string()> metrics;
  std::function<bool()> draining;
  /// Why the relay is not ready for peers though it is not draining (a cluster relay without a
  /// membership view, or fenced); empty or answering nothing: ready.
  std::function<std::optional<std::string>()> not_ready;
  /// The cluster view; when empty, /cluster answers 404.
  std::function<std::string()> cluster;
  /// Introspection; when empty, /channels answers 404.
  std::function<std::string()> channels;
  std::function<std::optional<std::string>(std::string_view id)> channel;
  /// Serve the operator page (server/admin_page/) under /ui/; when false, /ui/ answers 404.
  bool page = false;
};

class AdminServer {
public:
  /// Binds `endpoint` (port 0 picks one); throws when it cannot be bound.
  AdminServer(boost::asio::io_context& io, const boost::asio::ip::tcp::endpoint& endpoint,
              AdminHandlers handlers);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  boost::asio::ip::tcp::endpoint local_endpoint() const;
  /// Starts accepting on the io_context's threads.
  void start();
  /// Closes the listener and every open admin connection. Safe from any thread.
  void stop();

private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace switchboard::core
