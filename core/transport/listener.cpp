// The accept loop, the admission checks shared by the doors, and TLS handshakes cancelled when
// the door closes.
#include "transport/listener.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <stdexcept>

namespace switchboard::core::transport {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

}  // namespace

void log_task_failure(std::exception_ptr error) {
  if (!error) return;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    spdlog::error("server task failed error=\"{}\"", e.what());
  }
}

tcp::endpoint parse_endpoint(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) {
    throw std::invalid_argument("address \"" + text + "\" is not HOST:PORT");
  }
  std::string host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(port_text, &used);
    if (used != port_text.size()) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    throw std::invalid_argument("port \"" + port_text + "\" is not a number");
  }
  if (port > 65535) throw std::invalid_argument("port " + port_text + " is out of range");
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) throw std::invalid_argument("host \"" + host + "\" is not an IP address");
  return tcp::endpoint(address, static_cast<unsigned short>(port));
}

Admission::Admission(const Limits& limits)
    : limits_(limits),
      throttle_(limits.connect_rate_per_address, limits.connect_burst_per_address) {}

Admission::Verdict Admission::check(const tcp::endpoint& remote) {
  if (!throttle_.admit(remote.address())) {
    log_throttled();
    return Verdict::throttled;
  }
  if (open_ && open_() >= static_cast<std::int64_t>(limits_.max_connections)) {
    log_refusal();
    return Verdict::at_limit;
  }
  return Verdict::admitted;
}

// One line per refused connection would let a flood fill the log: at most one a second, with
// the number refused since the last line.
void Admission::log_refusal() {
  ++refusals_since_log_;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_refusal_log_ < std::chrono::seconds(1)) return;
  spdlog::warn("connection refused reason=connection_limit max_connections={} refused={}",
               limits_.max_connections, refusals_since_log_);
  last_refusal_log_ = now;
  refusals_since_log_ = 0;
}

void Admission::log_throttled() {
  ++throttled_since_log_;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_throttle_log_ < std::chrono::seconds(1)) return;
  spdlog::warn(
      "connection refused reason=connect_rate connect_rate_per_address={} "
      "connect_burst_per_address={} refused={}",
      limits_.connect_rate_per_address, limits_.connect_burst_per_address, throttled_since_log_);
  last_throttle_log_ = now;
  throttled_since_log_ = 0;
}

Listener::Listener(IoContexts& io, Admission& admission, const Limits& limits,
                   std::string_view door, DoorCounters& counters, const tcp::endpoint& endpoint,
                   std::unique_ptr<TlsContextHolder> tls)
    : io_(io),
      admission_(admission),
      limits_(limits),
      door_(door),
      counters_(counters),
      acceptor_(io.main()),
      tls_(std::move(tls)) {
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(tcp::acceptor::reuse_address(true));
  acceptor_.bind(endpoint);
  acceptor_.listen(asio::socket_base::max_listen_connections);
  bound_ = acceptor_.local_endpoint();
}

void Listener::start(Handlers handlers) {
  handlers_ = std::move(handlers);
  asio::co_spawn(
      acceptor_.get_executor(),
      [this]() -> asio::awaitable<void> {
        asio::steady_timer backoff(acceptor_.get_executor());
        tcp::endpoint remote;  // filled by accept() itself: no getpeername per connection
        while (acceptor_.is_open()) {
          auto [ec, socket] = co_await acceptor_.async_accept(remote, kUseTuple);
          if (ec) {
            if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
            // Out of descriptors or similar: back off instead of spinning.
            spdlog::warn("accept failed error=\"{}\"", ec.message());
            backoff.expires_after(std::chrono::milliseconds(100));
            co_await backoff.async_wait(kUseTuple);
            continue;
          }
          switch (admission_.check(remote)) {
            case Admission::Verdict::throttled:
              counters_.connections_throttled.fetch_add(1, std::memory_order_relaxed);
              handlers_.refuse(socket, "too many connections from your address");
              continue;
            case Admission::Verdict::at_limit:
              counters_.connections_refused.fetch_add(1, std::memory_order_relaxed);
              handlers_.refuse(socket, "relay is at its connection limit");
              continue;
            case Admission::Verdict::admitted:
              break;
          }
          if (limits_.socket_send_buffer > 0) {
            // Best effort: a refusal leaves the kernel's own size, as with no setting.
            boost::system::error_code ignored;
            socket.set_option(
                asio::socket_base::send_buffer_size(static_cast<int>(limits_.socket_send_buffer)),
                ignored);
          }
          if (tls_) {
            handshake(move_to(std::move(socket), io_.next(), remote.protocol()), remote);
          } else {
            handlers_.accepted(std::move(socket), remote);
          }
        }
      },
      log_task_failure);
}

// The handshake runs on the connection's own context, so a slow or silent client holds up no
// one; the handshake timeout bounds it, and a door closing meanwhile drops the connection.
void Listener::handshake(tcp::socket socket, const tcp::endpoint& remote_endpoint) {
  auto executor = socket.get_executor();
  auto cancel = std::make_shared<asio::cancellation_signal>();
  std::uint64_t key = 0;
  {
    std::lock_guard lock(handshakes_mutex_);
    key = next_handshake_++;
    handshakes_.emplace(key, PendingHandshake{executor, cancel});
  }
  asio::co_spawn(
      executor,
      [this, key, socket = std::move(socket), remote_endpoint,
       accepted_at = std::chrono::steady_clock::now()]() mutable -> asio::awaitable<void> {
        boost::system::error_code ec;
        auto transport =
            co_await accept_tls(std::move(socket), tls_->current(), limits_.handshake_timeout, ec);
        {
          std::lock_guard lock(handshakes_mutex_);
          handshakes_.erase(key);
        }
        if (!transport) {
          counters_.tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
          spdlog::debug("tls handshake failed door={} remote={}:{} error=\"{}\"", door_,
                        remote_endpoint.address().to_string(), remote_endpoint.port(),
                        describe_tls_error(ec));
          co_return;
        }
        if (closed_.load()) {
          transport->close();
          co_return;
        }
        handlers_.secured(std::move(transport), accepted_at);
      },
      asio::bind_cancellation_slot(cancel->slot(), log_task_failure));
}

void Listener::close() {
  closed_.store(true);
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  cancel_handshakes();
}

void Listener::cancel_handshakes() {
  std::lock_guard lock(handshakes_mutex_);
  for (const auto& [key, pending] : handshakes_) {
    // Emitted on the handshake's strand, and only while it is still waiting (it leaves the map
    // on that strand when its handshake ends).
    asio::post(pending.executor, [this, key = key] {
      std::lock_guard inner(handshakes_mutex_);
      if (auto it = handshakes_.find(key); it != handshakes_.end()) {
        it->second.cancel->emit(asio::cancellation_type::terminal);
      }
    });
  }
}

}  // namespace switchboard::core::transport
