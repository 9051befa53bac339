// TLS for both doors: the settings, server contexts built from PEM files, and the TLS
// transport (a handshake bounded in time, then a Transport over ssl::stream).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "transport/transport.hpp"

namespace switchboard::core::transport {

/// TLS settings shared by both doors. One certificate chain and key serve both; a client CA turns
/// on mutual TLS (clients must present a certificate signed by it).
struct TlsConfig {
  std::string cert_file;       ///< PEM certificate chain, leaf first
  std::string key_file;        ///< PEM private key of the leaf
  std::string client_ca_file;  ///< PEM CA bundle for client certificates; empty: no mutual TLS
  bool native = false;         ///< TLS on the native (core) door
  bool grpc = false;           ///< TLS on the gRPC door
  /// How often the gRPC door re-reads the files (gRPC reloads them by itself; SIGHUP reloads the
  /// native door).
  unsigned grpc_refresh_seconds = 10;

  bool any() const noexcept { return native || grpc; }
  bool mutual() const noexcept { return !client_ca_file.empty(); }
  /// Throws std::invalid_argument when a door has TLS on but a file is missing or unreadable.
  void validate() const;
};

/// A server-side context from the files: TLS 1.2 or newer, the chain and key (checked to
/// match), and with a client CA, required and verified client certificates. With `alpn_h2`, the
/// context selects ALPN "h2" when the client offers it (gRPC clients require it). Throws
/// std::runtime_error naming the file and OpenSSL's reason.
std::shared_ptr<asio::ssl::context> make_server_tls_context(const TlsConfig& config,
                                                            bool alpn_h2 = false);

/// A door's current context. New connections take the current one; a reload swaps it, while
/// live connections keep theirs (each holds its shared_ptr). Thread-safe.
class TlsContextHolder {
public:
  explicit TlsContextHolder(TlsConfig config, bool alpn_h2 = false);
  std::shared_ptr<asio::ssl::context> current() const;
  /// Re-reads the files. On failure logs why, keeps the old context and returns false.
  bool reload();
  /// Reloads when a file's modification time or size changed since the last look (a failed
  /// load is not retried until the files change again). Returns whether it reloaded.
  bool reload_if_changed();

private:
  std::string fingerprint() const;

  TlsConfig config_;
  bool alpn_h2_;
  mutable std::mutex mutex_;
  std::shared_ptr<asio::ssl::context> context_;
  std::string seen_;  // the files' fingerprint at the last load or look; guarded by mutex_
};

/// Runs the server side of a TLS handshake on `socket` (on the socket's executor), closing the
/// socket if it takes longer than `timeout`, then reads the client's first byte within the same
/// `timeout` (the transport's read_ahead(); empty when the client sent nothing in time, its
/// first read then reports any error the client caused). Returns the transport, or nullptr with
/// `error` set when the handshake failed.
asio::awaitable<std::unique_ptr<Transport>> accept_tls(asio::ip::tcp::socket socket,
                                                       std::shared_ptr<asio::ssl::context> context,
                                                       std::chrono::milliseconds timeout,
                                                       boost::system::error_code& error);

/// A one-line description of a TLS error, with OpenSSL's reason when there is one.
std::string describe_tls_error(const boost::system::error_code& error);

}  // namespace switchboard::core::transport
