// TLS server contexts from PEM files, their reload, the bounded handshake and the TLS transport.
#include "transport/tls.hpp"

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <fstream>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

namespace switchboard::core::transport {
namespace {

namespace ssl = asio::ssl;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using TlsStream = ssl::stream<tcp::socket>;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

void require_readable(const std::string& what, const std::string& path) {
  if (path.empty()) throw std::invalid_argument("TLS is on but no " + what + " is configured");
  if (!std::ifstream(path).good()) {
    throw std::invalid_argument("TLS " + what + " \"" + path + "\" cannot be read");
  }
}

class TlsTransport final : public Transport {
public:
  TlsTransport(std::shared_ptr<TlsStream> stream, std::shared_ptr<ssl::context> context)
      : stream_(std::move(stream)), context_(std::move(context)) {
    error_code ec;
    stream_->next_layer().set_option(tcp::no_delay(true), ec);
    const auto endpoint = stream_->next_layer().remote_endpoint(ec);
    if (!ec) remote_ = endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
  }

  asio::any_io_executor get_executor() override { return stream_->get_executor(); }

  // The session closes right after this, so the peer's close_notify is never awaited: the
  // shutdown operation writes ours at once and is cancelled by close(). It keeps the stream
  // alive until it has unwound.
  void shutdown_send() noexcept override {
    if (shutdown_started_) return;
    shutdown_started_ = true;
    stream_->async_shutdown([keep = stream_, context = context_](const error_code&) {});
  }

  void close() noexcept override {
    error_code ec;
    stream_->next_layer().shutdown(tcp::socket::shutdown_both, ec);
    stream_->next_layer().close(ec);
  }

  std::string remote() const override { return remote_; }

  asio::awaitable<IoResult> read_some(asio::mutable_buffer buffer) override {
    if (has_first_byte_ && buffer.size() > 0) {
      has_first_byte_ = false;
      *static_cast<std::uint8_t*>(buffer.data()) = first_byte_;
      co_return IoResult{error_code{}, 1};
    }
    if (first_error_) co_return IoResult{std::exchange(first_error_, {}), 0};
    co_return co_await stream_->async_read_some(buffer, kUseTuple);
  }

  std::span<const std::uint8_t> read_ahead() const noexcept override {
    return has_first_byte_ ? std::span<const std::uint8_t>(&first_byte_, 1)
                           : std::span<const std::uint8_t>();
  }

  /// What the first read gave (see accept_tls): a byte, or an error for the session to see.
  void set_first_read(const error_code& ec, std::size_t n, std::uint8_t byte) noexcept {
    if (ec) {
      first_error_ = ec;
    } else if (n == 1) {
      first_byte_ = byte;
      has_first_byte_ = true;
    }
  }

  asio::awaitable<IoResult> write(std::span<const asio::const_buffer> buffers) override {
    if (buffers.size() == 1)
      co_return co_await asio::async_write(*stream_, buffers.front(), kUseTuple);
    // An SSL stream encrypts one buffer per record: gather the pieces first so a burst of small
    // frames becomes a few full records and one socket write, not one of each per piece.
    std::size_t total = 0;
    for (const auto& buffer : buffers) total += buffer.size();
    gathered_.resize(total);
    std::size_t at = 0;
    for (const auto& buffer : buffers) {
      std::memcpy(gathered_.data() + at, buffer.data(), buffer.size());
      at += buffer.size();
    }
    co_return co_await asio::async_write(*stream_, asio::buffer(gathered_), kUseTuple);
  }

private:
  std::shared_ptr<TlsStream> stream_;
  std::shared_ptr<ssl::context> context_;
  std::vector<std::uint8_t> gathered_;
  std::string remote_;
  bool shutdown_started_ = false;
  std::uint8_t first_byte_ = 0;
  bool has_first_byte_ = false;
  error_code first_error_;
};

}  // namespace

void TlsConfig::validate() const {
  if (!any()) return;
  require_readable("certificate file", cert_file);
  require_readable("key file", key_file);
  if (mutual()) require_readable("client CA file", client_ca_file);
  if (grpc_refresh_seconds == 0) {
    throw std::invalid_argument("the gRPC certificate refresh interval must be at least 1 s");
  }
}

std::string describe_tls_error(const error_code& error) {
  if (error == ssl::error::stream_truncated) return "peer closed without close_notify";
  if (error == asio::error::timed_out) return "handshake timed out";
  return error.message();
}

// Picks "h2" from the client's ALPN list; a client that offers no "h2" gets no ALPN answer.
static int select_h2(SSL*, const unsigned char** out, unsigned char* out_length,
                     const unsigned char* in, unsigned int in_length, void*) {
  static constexpr unsigned char kH2[] = {2, 'h', '2'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, out_length, kH2, sizeof(kH2), in, in_length) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

std::shared_ptr<ssl::context> make_server_tls_context(const TlsConfig& config, bool alpn_h2) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  if (alpn_h2) SSL_CTX_set_alpn_select_cb(context->native_handle(), select_h2, nullptr);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use);
  error_code ec;
  context->use_certificate_chain_file(config.cert_file, ec);
  if (ec) {
    throw std::runtime_error("cannot load TLS certificate chain \"" + config.cert_file +
                             "\": " + ec.message());
  }
  context->use_private_key_file(config.key_file, ssl::context::pem, ec);
  if (ec) {
    throw std::runtime_error("cannot load TLS private key \"" + config.key_file +
                             "\": " + ec.message());
  }
  if (SSL_CTX_check_private_key(context->native_handle()) != 1) {
    throw std::runtime_error("TLS private key \"" + config.key_file +
                             "\" does not match the certificate \"" + config.cert_file + "\"");
  }
  if (config.mutual()) {
    context->load_verify_file(config.client_ca_file, ec);
    if (ec) {
      throw std::runtime_error("cannot load TLS client CA \"" + config.client_ca_file +
                               "\": " + ec.message());
    }
    // Tell clients which CAs we accept, and refuse a handshake without a verified certificate.
    if (auto* names = SSL_load_client_CA_file(config.client_ca_file.c_str())) {
      SSL_CTX_set_client_CA_list(context->native_handle(), names);
    }
    context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    static constexpr unsigned char kSessionContext[] = "switchboard";
    SSL_CTX_set_session_id_context(context->native_handle(), kSessionContext,
                                   sizeof(kSessionContext) - 1);
  }
  return context;
}

TlsContextHolder::TlsContextHolder(TlsConfig config, bool alpn_h2)
    : config_(std::move(config)),
      alpn_h2_(alpn_h2),
      context_(make_server_tls_context(config_, alpn_h2_)),
      seen_(fingerprint()) {}

std::string TlsContextHolder::fingerprint() const {
  std::string text;
  for (const auto* path : {&config_.cert_file, &config_.key_file, &config_.client_ca_file}) {
    struct stat status {};
    if (path->empty() || ::stat(path->c_str(), &status) != 0) {
      text += "-;";
      continue;
    }
    text += std::to_string(status.st_mtim.tv_sec) + "." + std::to_string(status.st_mtim.tv_nsec) +
            ":" + std::to_string(status.st_size) + ";";
  }
  return text;
}

bool TlsContextHolder::reload_if_changed() {
  auto now = fingerprint();
  {
    std::lock_guard lock(mutex_);
    if (now == seen_) return false;
    seen_ = std::move(now);
  }
  return reload();
}

std::shared_ptr<ssl::context> TlsContextHolder::current() const {
  std::lock_guard lock(mutex_);
  return context_;
}

bool TlsContextHolder::reload() {
  std::shared_ptr<ssl::context> fresh;
  try {
    fresh = make_server_tls_context(config_, alpn_h2_);
  } catch (const std::exception& e) {
    spdlog::error("tls reload failed, keeping the previous certificates error=\"{}\"", e.what());
    return false;
  }
  {
    std::lock_guard lock(mutex_);
    context_.swap(fresh);
  }
  spdlog::info("tls reloaded cert={}", config_.cert_file);
  return true;
}

asio::awaitable<std::unique_ptr<Transport>> accept_tls(tcp::socket socket,
                                                       std::shared_ptr<ssl::context> context,
                                                       std::chrono::milliseconds timeout,
                                                       error_code& error) {
  auto stream = std::make_shared<TlsStream>(std::move(socket), *context);
  // Past the handshake, the deadline only stops the wait for the first byte: the session then
  // runs out the same deadline and tells the client so, as over plaintext.
  auto handshaken = std::make_shared<bool>(false);
  asio::steady_timer timer(stream->get_executor(), timeout);
  timer.async_wait([weak = std::weak_ptr<TlsStream>(stream), handshaken](const error_code& ec) {
    if (ec) return;
    if (auto expired = weak.lock()) {
      error_code ignored;
      if (*handshaken) {
        expired->next_layer().cancel(ignored);
      } else {
        expired->next_layer().close(ignored);
      }
    }
  });
  auto [ec] = co_await stream->async_handshake(ssl::stream_base::server,
                                               asio::as_tuple(asio::use_awaitable));
  if (ec || timer.expiry() <= std::chrono::steady_clock::now()) {
    timer.cancel();
    error = ec ? ec : error_code(asio::error::timed_out);
    error_code ignored;
    stream->next_layer().close(ignored);
    co_return nullptr;
  }
  *handshaken = true;
  // The first byte tells a shared connection (MUX) from a connection of its own (HELLO). A TLS
  // record cannot be peeked, so it is read here and handed to the session as read_ahead().
  std::uint8_t first = 0;
  auto [read_error, n] = co_await stream->async_read_some(asio::buffer(&first, 1), kUseTuple);
  const bool timed_out = timer.cancel() == 0;
  error = {};
  auto transport = std::make_unique<TlsTransport>(std::move(stream), std::move(context));
  if (!timed_out) transport->set_first_read(read_error, n, first);
  co_return transport;
}

}  // namespace switchboard::core::transport
