// Public blocking API of the native Switchboard client: the async client driven by its own I/O
// thread, for programs that prefer plain calls and threads to coroutines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "switchboard/client.hpp"

namespace switchboard::client {

/// Thrown by BlockingClient's constructor when the connection or handshake fails.
class ConnectError : public std::runtime_error {
public:
  /// what() reads "switchboard connect failed: " followed by outcome.describe().
  explicit ConnectError(Outcome outcome)
      : std::runtime_error("switchboard connect failed: " + outcome.describe()),
        outcome_(std::move(outcome)) {}
  /// Why the connect failed, as Connection::connect reported it.
  const Outcome& outcome() const noexcept { return outcome_; }

private:
  Outcome outcome_;
};

class BlockingClient;

/// A stream used through blocking calls: a handle to a Stream on the client's I/O thread.
/// Ownership: a movable, copyable value. Copies share the stream (not the bytes read() has
/// taken from it but not yet returned: read through one copy only), and any copy keeps the
/// client's I/O thread (not its connection) alive. It stays usable after its client is
/// destroyed: calls then report the closed connection.
/// Thread-safety: each call waits on the client's I/O thread, so it must not be made from that
/// thread (i.e. not from a presence callback). One thread may read while another writes (full
/// duplex); two concurrent readers or two concurrent writers are not allowed.
/// Errors: reported as Outcome values, as Stream reports them. Calls on an empty handle (the
/// default-constructed one) are not allowed. The calls that wait for a result (write, finish,
/// fail, read_chunk, read, result) throw std::logic_error when made on the I/O thread.
class BlockingStream {
public:
  /// An empty handle, false in a condition; assign a stream from BlockingClient to use it.
  BlockingStream() = default;

  /// See Stream::peer().
  const Uuid& peer() const;
  /// See Stream::metadata().
  const wire::Metadata& metadata() const;
  /// See Stream::deadline().
  std::chrono::milliseconds deadline() const;

  /// Sends bytes (split into frames, paced by credit); `last` ends our direction with OK.
  Outcome write(std::span<const std::uint8_t> bytes, bool last = false);
  /// Ends our direction with OK; see Stream::finish().
  Outcome finish();
  /// Ends our direction with an error status; see Stream::fail().
  Outcome fail(Status status, std::uint32_t app_code, std::string message);
  /// Next chunk of the other side's bytes; empty at the end (then see result()).
  wire::Slice read_chunk();
  /// Copies up to out.size() bytes; 0 at the end.
  std::size_t read(std::span<std::uint8_t> out);
  /// Waits for the stream's final outcome (response status, broadcast summary, reset reason).
  Outcome result();
  /// Aborts both directions; see Stream::reset().
  void reset(Status status = Status::cancelled, std::string message = "cancelled");

  /// True unless the handle is empty.
  explicit operator bool() const noexcept { return stream_ != nullptr; }

private:
  friend class BlockingClient;
  BlockingStream(std::shared_ptr<Stream> stream, std::shared_ptr<void> client)
      : client_(std::move(client)), stream_(std::move(stream)) {}

  // Declared first so that it is destroyed last: the stream's timers belong to the client's
  // io_context, which must outlive them.
  std::shared_ptr<void> client_;  // keeps the client's I/O thread alive while the stream is used
  std::shared_ptr<Stream> stream_;
  wire::Slice pending_;
};

/// A connection with its own I/O thread. Thread-safe: any thread may open streams; handlers for
/// requests and broadcasts run on worker threads, one per stream at a time (a thread is kept a
/// few seconds after its handler returns, for the next one). With
/// ConnectOptions::reconnect enabled it survives lost connections (see ReconnectPolicy): the
/// handlers set with serve(), on_broadcast() and on_presence() stay in place, in-flight streams
/// end with Outcome::connection_lost, and new streams wait for the next connection within
/// their deadline.
///
/// Ownership: the client owns its connection, I/O thread and handler threads; streams handed
/// out keep the I/O thread alive until they go. Errors: the constructor throws ConnectError;
/// afterwards, failures are Outcome values. No call may be made on the I/O thread (from a
/// presence or connection-event handler): it would wait for itself (wait_closed() detects it
/// and throws std::logic_error).
class BlockingClient {
public:
  /// Connects and joins; throws ConnectError with the relay's reason on failure.
  explicit BlockingClient(ConnectOptions options);
  /// Closes the connection and waits for handler threads to return.
  ~BlockingClient();
  BlockingClient(const BlockingClient&) = delete;
  BlockingClient& operator=(const BlockingClient&) = delete;

  /// See Connection::peer_id(); does not wait for the I/O thread.
  Uuid peer_id() const;
  /// See Connection::peers().
  std::vector<Uuid> peers();
  /// See Connection::membership_version().
  std::uint64_t membership_version();

  /// Opens a request; see Connection::open_request().
  BlockingStream request(Target target, const StreamOptions& options = {});
  /// Opens a broadcast; see Connection::open_broadcast().
  BlockingStream broadcast(const StreamOptions& options = {});
  /// Sends a whole request body and collects the whole response.
  Outcome send(Target target, std::span<const std::uint8_t> body,
               std::vector<std::uint8_t>& response, const StreamOptions& options = {});

  /// Serves incoming requests (needs accept_requests): `handler` runs on its own thread per
  /// request; it reads the request and writes the response. When it returns without ending
  /// the response, the response is finished with OK.
  void serve(std::function<void(BlockingStream&)> handler);
  /// Receives broadcasts: `handler` runs on a worker thread, one broadcast at a time.
  void on_broadcast(std::function<void(BlockingStream&)> handler);
  /// Presence changes, on the I/O thread: the handler must not block or call this client.
  void on_presence(std::function<void(const PresenceChange&)> handler);

  /// Connection changes (disconnected, retry_scheduled, reconnected, closed), in order, on the
  /// I/O thread: the handler must not block or make blocking calls on this client.
  void on_connection_event(std::function<void(const ConnectionEvent&)> handler);
  /// See Connection::state().
  ConnectionState state();

  /// Blocks until the connection ends for good (relay shut down or network lost without
  /// reconnect, reconnect given up or refused for good, close()).
  Outcome wait_closed();
  /// Closes the connection; also stops reconnecting. Any thread.
  void close();

private:
  friend class BlockingStream;
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace switchboard::client
