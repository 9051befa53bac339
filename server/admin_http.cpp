// The admin endpoint's HTTP server; the only translation unit that instantiates Boost.Beast.
#include "server/admin_http.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <mutex>
#include <unordered_map>

#include "server/admin_page.hpp"

namespace switchboard::core {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
// An admin client gets this long to send each request; idle keep-alive connections are closed.
constexpr auto kRequestTimeout = std::chrono::seconds(10);
constexpr std::uint32_t kMaxHeaderBytes = 8 * 1024;
constexpr std::uint64_t kMaxBodyBytes = 1024;
// Scrapers and probes need a handful of connections; more are refused to bound memory.
constexpr std::size_t kMaxConnections = 64;

using Response = http::response<http::string_body>;

Response make_response(http::status status, std::string body, std::string_view content_type,
                       unsigned version, bool keep_alive) {
  Response response{status, version};
  response.set(http::field::server, "switchboard-admin");
  response.set(http::field::content_type, content_type);
  response.set(http::field::cache_control, "no-store");
  response.keep_alive(keep_alive);
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

constexpr std::string_view kPagePrefix = "/ui/";
// The page loads its own script and style and polls this endpoint; nothing else, from nowhere
// else (no inline script, no remote origin, no framing).
constexpr std::string_view kPagePolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

}  // namespace

struct AdminServer::Impl : std::enable_shared_from_this<AdminServer::Impl> {
  Impl(asio::io_context& io_context, AdminHandlers h)
      : io(io_context), acceptor(asio::make_strand(io_context)), handlers(std::move(h)) {}

  Response route(const http::request<http::string_body>& request) const {
    const unsigned version = request.version();
    const bool keep_alive = request.keep_alive();
    std::string_view target(request.target().data(), request.target().size());
    if (const auto query = target.find('?'); query != std::string_view::npos) {
      target = target.substr(0, query);
    }
    constexpr std::string_view kText = "text/plain; charset=utf-8";
    constexpr std::string_view kJson = "application/json";
    const bool page = target == "/ui" || target.starts_with(kPagePrefix);
    const bool known = target == "/metrics" || target == "/healthz" || target == "/channels" ||
                       target.starts_with("/channels/") || page ||
                       target == "/cluster";
    if (!known)
      return make_response(http::status::not_found, "not found\n", kText, version, keep_alive);
    if (request.method() != http::verb::get && request.method() != http::verb::head) {
      auto response = make_response(http::status::method_not_allowed, "method not allowed\n", kText,
                                    version, keep_alive);
      response.set(http::field::allow, "GET, HEAD");
      return response;
    }
    if (target == "/metrics") {
      return make_response(http::status::ok, handlers.metrics(),
                           "text/plain; version=0.0.4; charset=utf-8", version, keep_alive);
    }
    if (target == "/healthz") {
      if (handlers.draining()) {
        return make_response(http::status::service_unavailable, "draining\n", kText, version,
                             keep_alive);
      }
      if (auto reason = handlers.not_ready ? handlers.not_ready() : std::nullopt) {
        return make_response(http::status::service_unavailable, "not ready: " + *reason + "\n",
                             kText, version, keep_alive);
      }
      return make_response(http::status::ok, "ok\n", kText, version, keep_alive);
    }
    if (target == "/cluster") {
      if (!handlers.cluster) {
        return make_response(http::status::not_found,
                             "no cluster view (a cluster relay with admin_introspection = true "
                             "serves it)\n",
                             kText, version, keep_alive);
      }
      return make_response(http::status::ok, handlers.cluster(), kJson, version, keep_alive);
    }
    if (page) return page_response(target, version, keep_alive);
    if (!handlers.channels) {
      return make_response(http::status::not_found,
                           "introspection is off (admin_introspection = true enables it)\n", kText,
                           version, keep_alive);
    }
    if (target == "/channels") {
      return make_response(http::status::ok, handlers.channels(), kJson, version, keep_alive);
    }
    if (auto body = handlers.channel(target.substr(std::string_view("/channels/").size()))) {
      return make_response(http::status::ok, std::move(*body), kJson, version, keep_alive);
    }
    return make_response(http::status::not_found, "{\"error\":\"no such channel\"}\n", kJson,
                         version, keep_alive);
  }

  Response page_response(std::string_view target, unsigned version, bool keep_alive) const {
    constexpr std::string_view kText = "text/plain; charset=utf-8";
    if (!handlers.page) {
      return make_response(http::status::not_found,
                           "the operator page is off (admin_introspection = true enables it)\n",
                           kText, version, keep_alive);
    }
    if (target == "/ui") {
      // Relative links in the page resolve against /ui/, so the bare path moves there.
      auto response =
          make_response(http::status::moved_permanently, "see /ui/\n", kText, version, keep_alive);
      response.set(http::field::location, kPagePrefix);
      return response;
    }
    const auto file = find_admin_page_file(target.substr(kPagePrefix.size()));
    if (!file) {
      return make_response(http::status::not_found, "not found\n", kText, version, keep_alive);
    }
    auto response = make_response(http::status::ok, std::string(file->bytes), file->content_type,
                                  version, keep_alive);
    response.set("Content-Security-Policy", kPagePolicy);
    response.set("X-Content-Type-Options", "nosniff");
    response.set("Referrer-Policy", "no-referrer");
    return response;
  }

  asio::awaitable<void> serve(std::shared_ptr<beast::tcp_stream> stream, std::uint64_t id) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(kMaxHeaderBytes);
      parser.body_limit(kMaxBodyBytes);
      stream->expires_after(kRequestTimeout);
      auto [ec, n] = co_await http::async_read(*stream, buffer, parser, kUseTuple);
      if (ec) {
        if (ec == http::error::header_limit || ec == http::error::body_limit) {
          auto response = make_response(http::status::payload_too_large, "request too large\n",
                                        "text/plain; charset=utf-8", 11, false);
          co_await http::async_write(*stream, response, kUseTuple);
        } else if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
                   ec != asio::error::operation_aborted && ec != asio::error::eof &&
                   ec != asio::error::connection_reset) {
          auto response = make_response(http::status::bad_request, "bad request\n",
                                        "text/plain; charset=utf-8", 11, false);
          co_await http::async_write(*stream, response, kUseTuple);
        }
        break;
      }
      const auto& request = parser.get();
      auto response = route(request);
      if (request.method() == http::verb::head) {
        const auto length = response.body().size();
        response.body().clear();
        response.content_length(length);
      }
      auto [write_ec, written] = co_await http::async_write(*stream, response, kUseTuple);
      if (write_ec || !response.keep_alive()) break;
    }
    beast::error_code ignored;
    stream->socket().shutdown(tcp::socket::shutdown_send, ignored);
    std::lock_guard lock(mutex);
    connections.erase(id);
  }

  asio::awaitable<void> accept_loop() {
    while (acceptor.is_open()) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), kUseTuple);
      if (ec) {
        if (!acceptor.is_open() || ec == asio::error::operation_aborted) co_return;
        spdlog::warn("admin accept failed error=\"{}\"", ec.message());
        continue;
      }
      auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
      std::uint64_t id = 0;
      {
        std::lock_guard lock(mutex);
        if (stopped || connections.size() >= kMaxConnections) {
          beast::error_code ignored;
          stream->socket().close(ignored);
          continue;
        }
        id = next_id++;
        connections.emplace(id, stream);
      }
      auto executor = stream->get_executor();
      asio::co_spawn(
          executor, [self = shared_from_this(), stream, id] { return self->serve(stream, id); },
          [](std::exception_ptr error) {
            if (!error) return;
            try {
              std::rethrow_exception(error);
            } catch (const std::exception& e) {
              spdlog::warn("admin connection failed error=\"{}\"", e.what());
            }
          });
    }
  }

  asio::io_context& io;
  tcp::acceptor acceptor;
  AdminHandlers handlers;
  std::mutex mutex;
  bool stopped = false;
  std::uint64_t next_id = 1;
  std::unordered_map<std::uint64_t, std::weak_ptr<beast::tcp_stream>> connections;
};

AdminServer::AdminServer(asio::io_context& io, const tcp::endpoint& endpoint,
                         AdminHandlers handlers)
    : impl_(std::make_shared<Impl>(io, std::move(handlers))) {
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen(asio::socket_base::max_listen_connections);
}

AdminServer::~AdminServer() { stop(); }

tcp::endpoint AdminServer::local_endpoint() const { return impl_->acceptor.local_endpoint(); }

void AdminServer::start() {
  // The listener lives on its own strand so stop() never races the accept loop.
  asio::co_spawn(
      impl_->acceptor.get_executor(), [impl = impl_] { return impl->accept_loop(); },
      [](std::exception_ptr error) {
        if (!error) return;
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          spdlog::error("admin endpoint failed error=\"{}\"", e.what());
        }
      });
}

void AdminServer::stop() {
  asio::post(impl_->acceptor.get_executor(), [impl = impl_] {
    std::vector<std::shared_ptr<beast::tcp_stream>> open;
    {
      std::lock_guard lock(impl->mutex);
      if (impl->stopped) return;
      impl->stopped = true;
      for (auto& [id, weak] : impl->connections) {
        if (auto stream = weak.lock()) open.push_back(std::move(stream));
      }
    }
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    for (auto& stream : open) {
      asio::post(stream->get_executor(), [stream] {
        beast::error_code ignore;
        stream->socket().close(ignore);
      });
    }
  });
}

}  // namespace switchboard::core
