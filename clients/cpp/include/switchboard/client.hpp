// Public async API of the native Switchboard client: a connection (one peer on one channel), the
// streams it carries, and groups of connections that share TCP connections to the relay.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "switchboard/wire/buffer.hpp"
#include "switchboard/wire/frame.hpp"
#include "switchboard/wire/status.hpp"
#include "switchboard/wire/uuid.hpp"

namespace switchboard::client {

/// How a stream, a connection attempt or a broadcast ended. A plain value: copy it freely.
struct Outcome {
  Status status = Status::ok;   ///< OK, or why it failed
  std::uint32_t app_code = 0;   ///< responder-defined, with Status::application
  std::string message;          ///< human-readable detail; empty for a plain OK
  std::uint32_t delivered = 0;  ///< broadcast summary: receivers that got the whole message
  std::uint32_t dropped = 0;    ///< broadcast summary: receivers dropped
  /// Set (with Status::peer_gone and a message starting "connection lost") when this client's
  /// own connection to the relay broke while the stream was in flight. The stream was not
  /// retried: whether its counterpart saw part or all of it is unknown.
  bool connection_lost = false;
  /// Set (with Status::peer_gone and the message "cannot connect to HOST:PORT: <reason>", or
  /// "cannot resolve HOST: <reason>") when a connect attempt could not reach the relay at all:
  /// the name did not resolve, or no TCP connection could be made. A relay that was reached and
  /// then refused or closed leaves it false.
  bool unreachable = false;

  /// status == Status::ok.
  bool ok() const noexcept { return status == Status::ok; }
  /// "OK", or e.g. "NO_RESPONDERS: no peer on this channel can take a request".
  std::string describe() const;
};

/// Automatic reconnection after the connection to the relay is lost (end of stream, reset,
/// keepalive timeout, or the relay closing after GOAWAY). Off by default, so that existing
/// programs keep their "the connection ends once" behaviour; long-running programs (servers,
/// watchers) usually want `enabled = true`.
///
/// The client re-joins with the same channel, the same peer id (the one the relay assigned, if
/// none was given) and the same role (accept_requests). Before attempt n it waits
///   min(max_delay, initial_delay * multiplier^(n-1)) * (1 - jitter * u),  u uniform in [0, 1),
/// so delays grow exponentially, never exceed max_delay, and clients cut off together do not
/// return together. A refusal of the join is retried like a network failure: REFUSED (the relay
/// still holds our previous session until its keepalive notices the loss, or it is draining) and
/// RESOURCE_EXHAUSTED. UNAUTHENTICATED, PERMISSION_DENIED and PROTOCOL_ERROR end the connection
/// for good, as does reaching max_attempts or Connection::close().
///
/// Streams in flight when the connection is lost end with Outcome::connection_lost and are never
/// retried. A stream opened (or first written) while the client is reconnecting, or after the
/// relay sent GOAWAY, waits for the next connection, bounded by its own deadline; the deadline
/// it carries to the relay is what is left of it. Without a deadline it waits until the client
/// is connected again or closed.
struct ReconnectPolicy {
  bool enabled = false;
  std::chrono::milliseconds initial_delay{100};  ///< before the first attempt
  std::chrono::milliseconds max_delay{10'000};   ///< cap on any delay
  double multiplier = 2.0;                       ///< growth per attempt; >= 1
  double jitter = 0.5;             ///< fraction of each delay that is randomly removed; in [0, 1]
  std::uint32_t max_attempts = 0;  ///< consecutive failed attempts before giving up; 0 = never

  /// The delay before attempt `attempt` (1-based) for a random draw `u` in [0, 1).
  std::chrono::milliseconds delay_before(std::uint32_t attempt, double u) const;
};

/// Whether the connection is usable now.
enum class ConnectionState : std::uint8_t {
  connected,     ///< joined; streams flow
  reconnecting,  ///< lost; waiting for or making the next attempt (ReconnectPolicy::enabled)
  closed,        ///< ended for good: close(), a fatal error, given up, or lost without reconnect
};

/// "connected", "reconnecting" or "closed".
const char* state_name(ConnectionState state) noexcept;

/// A change of the connection, reported in order by Connection::on_connection_event.
struct ConnectionEvent {
  /// What happened.
  enum class Kind : std::uint8_t {
    disconnected,     ///< the connection was lost; in-flight streams have ended; reconnecting
    retry_scheduled,  ///< attempt `attempt` starts after `delay`
    reconnected,      ///< joined again: `peers` and `version` are the new presence snapshot
    closed,           ///< ended for good (same moment as on_closed)
  };
  Kind kind = Kind::disconnected;                      ///< what happened
  ConnectionState state = ConnectionState::connected;  ///< state after the event
  /// disconnected, closed: why; retry_scheduled: why the previous attempt (or the connection)
  /// failed, e.g. REFUSED while the relay still holds our previous session.
  Outcome reason;
  std::uint32_t attempt = 0;           ///< retry_scheduled: 1-based; reconnected: attempts used
  std::chrono::milliseconds delay{0};  ///< retry_scheduled: wait before the attempt
  /// reconnected: the presence snapshot that replaced the previous view, with its membership
  /// version. The version starts a new sequence (a restarted relay counts from scratch): compare
  /// later events with it, not with versions seen before the loss.
  std::vector<Uuid> peers;
  std::uint64_t version = 0;
  /// reconnected: the difference from the view held before the loss (who joined or left
  /// meanwhile, as far as this snapshot tells).
  std::vector<Uuid> joined;
  std::vector<Uuid> left;
};

/// "disconnected", "retry_scheduled", "reconnected" or "closed".
const char* event_name(ConnectionEvent::Kind kind) noexcept;

/// TLS towards the relay's native door (see docs/TLS.md). The relay's certificate is always
/// verified: against `ca_file`, or the system's CAs when it is empty, and for `server_name`.
struct TlsOptions {
  bool enabled = false;     ///< off: plain TCP
  std::string ca_file;      ///< PEM CA bundle that signed the relay's certificate
  std::string cert_file;    ///< PEM client certificate chain, for a relay requiring mutual TLS
  std::string key_file;     ///< PEM private key of `cert_file`
  std::string server_name;  ///< name (or IP) checked in the relay's certificate; empty: the host
};

/// A group of Connections that share TCP connections to the relay (protocol versions 4 and 5),
/// made by share_connections(). Each Connection given the group (ConnectOptions::sharing) is
/// still one membership of one channel and speaks the usual protocol, but over a lane of a
/// connection it shares with others of the group: a program with many memberships keeps a few
/// TCP connections instead of one each, and the bytes its connections write in one turn of the
/// event loop leave in one system call.
///
/// The group keeps, per relay address (host:port, as given or as a REDIRECT named it), one
/// shared connection for each of the relay's I/O threads that its Connections' channels are
/// placed on (the relay tells its thread count in its first answer; each Connection's lane then
/// rides the shared connection of its channel's thread, docs/PROTOCOL.md section 18.1), opens
/// another when one carries as many lanes as the relay allows or has failed, and closes a shared
/// connection when its last lane is closed. A relay that does not offer shared connections (an
/// older one: it refuses them with PROTOCOL_ERROR) is remembered, and connections to it each use a
/// TCP connection of their own, as without a group. Over TLS, the shared connection is a TLS
/// connection made with the Connection's TlsOptions; Connections share one only when their
/// TlsOptions are the same (another client certificate is another identity), and a TLS failure
/// is reported to each of them as a connection of its own would report it (UNAUTHENTICATED).
///
/// Everything a Connection does is unchanged: connect() reports an unreachable relay the same
/// way (PEER_GONE, Outcome::unreachable), a refusal of the join the same way, and a shared
/// connection that ends (closed, reset, or ended by the relay with ERROR) is, for each of its
/// Connections, a lost connection: PEER_GONE, then a reconnect when enabled, on a new lane.
///
/// Ownership: shared; every Connection given it holds it, and each shared connection lives as
/// long as one of its lanes does.
/// Thread-safety: none. Every Connection given the group must run on the executor the group was
/// made with (one thread; a strand with a multi-threaded context).
class ConnectionSharing;

/// A new, empty group of Connections that share TCP connections, for Connections running on
/// `executor` (see ConnectionSharing). Never fails: connections are made when Connections ask.
std::shared_ptr<ConnectionSharing> share_connections(boost::asio::any_io_executor executor);

/// Options for Connection::connect (and BlockingClient), copied into the connection.
struct ConnectOptions {
  std::string host = "127.0.0.1";  ///< relay's native door: a name (resolved at each connect) or a
                                   ///< literal address (connected to as is)
  std::uint16_t port = 7400;       ///< its port
  Uuid channel;                    ///< required
  Uuid peer_id;                    ///< nil: the relay assigns one
  bool accept_requests = false;    ///< this peer serves requests (a Respond peer)
  /// Observe the channel instead of joining it (protocol version 2, HELLO flag OBSERVE): the
  /// connection receives the presence snapshot and every JOINED and LEFT like a peer, but it is
  /// no member: it appears in nobody's presence, does not count toward the relay's max peers
  /// per channel (it does count as a connection), and never receives requests or broadcasts.
  /// Its streams are refused (PERMISSION_DENIED). peer_id() is then an id the relay gave the
  /// connection, known to nobody else. Excludes accept_requests (connect fails with
  /// PROTOCOL_ERROR when both are set). A relay that requires tokens wants the `presence`
  /// permission.
  bool observe = false;
  /// A signed token (JWT) for a relay that requires one (see docs/SECURITY.md), sent once in the
  /// handshake; ignored by an open relay. A refused token fails the connect with UNAUTHENTICATED
  /// or PERMISSION_DENIED; when it expires the relay ends the connection with UNAUTHENTICATED.
  std::string token;
  std::uint32_t max_frame = 256 * 1024;               ///< largest frame payload we accept
  std::uint32_t stream_window = 1024 * 1024;          ///< credit we grant per stream we receive
  std::chrono::milliseconds connect_timeout{10'000};  ///< also bounds each reconnect attempt
  ReconnectPolicy reconnect;                          ///< off by default
  TlsOptions tls;  ///< a TLS failure makes connect() fail with UNAUTHENTICATED and OpenSSL's reason
  /// The group whose shared TCP connections carry this connection (see ConnectionSharing);
  /// nullptr: a TCP connection of its own (the default).
  std::shared_ptr<ConnectionSharing> sharing;
};

/// A presence change on the channel.
struct PresenceChange {
  bool joined = false;        ///< false: left
  Uuid peer;                  ///< who joined or left
  std::uint64_t version = 0;  ///< membership version after the change
};

/// Who a request goes to: a peer id, or any peer that accepts requests (nil id).
struct Target {
  Uuid peer;  ///< nil: any peer that accepts requests, chosen by the relay
  /// Any peer that accepts requests and has room; NO_RESPONDERS when there is none.
  static Target any() { return {}; }
  /// The peer `id`; NO_RESPONDERS when it is absent, does not accept requests or has no room.
  static Target to(const Uuid& id) { return {id}; }
};

/// Options of one outgoing stream, copied into it by Connection::open_request / open_broadcast.
struct StreamOptions {
  std::chrono::milliseconds deadline{0};      ///< whole-stream limit; 0 = none
  std::chrono::milliseconds idle_timeout{0};  ///< 0 = the relay's default
  wire::Metadata metadata;                    ///< sent with the OPEN; see Stream::metadata()
};

/// A whole message from another peer (see Connection::publish and send_message). A plain value;
/// `body` shares the connection's read buffer (keeping it does not hold back later reads).
struct Message {
  Uuid sender;            ///< the peer that sent it
  bool broadcast = true;  ///< true: published to the channel; false: sent to this peer alone
  wire::Slice body;       ///< the whole message
};

/// What became of the messages this connection sent, and of those meant for it that the relay
/// dropped; cumulative over the connection's life, reconnects included. A plain value.
struct MessageTally {
  std::uint64_t sent = 0;       ///< messages handed to the relay
  std::uint64_t settled = 0;    ///< of those, ended at the relay (each counted once)
  std::uint64_t delivered = 0;  ///< receivers the relay wrote one of our messages to
  std::uint64_t dropped = 0;    ///< receivers a message did not reach (absent, gone, too slow)
  std::uint64_t refused = 0;    ///< messages our token does not allow (sent to nobody)
  std::uint64_t unknown = 0;    ///< in flight when a network connection was lost: fate unknown
  std::uint64_t lost = 0;       ///< messages for us the relay dropped because we read too slowly
  std::uint64_t discarded = 0;  ///< messages for us that arrived with no on_message handler
  /// Every message sent has ended, one way or the other.
  bool all_settled() const noexcept { return settled + unknown == sent; }
};

class Connection;

namespace detail {
class ConnectionImpl;
class StreamImpl;
}  // namespace detail

/// One stream: an outgoing request or broadcast, or an incoming request or broadcast.
///
/// Ownership: shared. Streams are made by the library only (Connection::open_request,
/// open_broadcast, or the on_request / on_broadcast handlers); the connection keeps a stream
/// until it ends, and a stream keeps its connection alive. The state lives in the library,
/// allocated together with the stream (one allocation per stream, nothing extra to follow per
/// frame).
/// Thread-safety: none; use a stream only from its connection's executor.
/// Errors: reported as Outcome values, never exceptions. A stream lives on one network
/// connection: when that is lost, the stream ends with Outcome::connection_lost and is not
/// carried over to the next one.
class Stream : public std::enable_shared_from_this<Stream> {
public:
  /// Which way the stream goes and what it carries.
  enum class Kind : std::uint8_t {
    outgoing_request,    ///< from Connection::open_request: we send a request, read a response
    outgoing_broadcast,  ///< from Connection::open_broadcast: we send, nothing comes back
    incoming_request,    ///< handed to on_request: we read a request and write the response
    incoming_broadcast   ///< handed to on_broadcast: we read, nothing goes back
  };

  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  /// The other party: the target (outgoing) or the sender (incoming; nil for "any" until known).
  const Uuid& peer() const noexcept;
  /// Fixed when the stream is made.
  Kind kind() const noexcept;
  /// Metadata of an incoming stream (empty for an outgoing one).
  const wire::Metadata& metadata() const noexcept;
  /// Remaining deadline when an incoming stream arrived (0 = none).
  std::chrono::milliseconds deadline() const noexcept;

  /// Sends `bytes` (any size: split into frames), waiting for flow-control credit as needed.
  /// `last` ends our direction with it (OK), so a small message travels as one frame. `bytes`
  /// must stay valid until the awaitable completes: they are copied frame by frame as credit
  /// allows. Returns a failed Outcome when the stream was reset or had ended, or the connection
  /// was lost or closed.
  boost::asio::awaitable<Outcome> write(std::span<const std::uint8_t> bytes, bool last = false);
  /// Sends `bytes` now, without waiting, when they fit in one frame, in the stream's credit and
  /// under the connection's outbound high-water mark; `last` ends our direction with them.
  /// Returns false, having sent nothing, when any of that does not hold (use write() to wait)
  /// or when our direction has ended. Meant for many small messages sent from handlers.
  bool try_write(std::span<const std::uint8_t> bytes, bool last = false);
  /// Ends our direction with OK (same as a final empty write with last = true); fails as
  /// write() does.
  boost::asio::awaitable<Outcome> finish();
  /// Ends our direction with an error status (responders: passed to the sender unchanged).
  /// Fails (PROTOCOL_ERROR) when our direction has already ended, or with the reason the stream
  /// or connection ended.
  boost::asio::awaitable<Outcome> fail(Status status, std::uint32_t app_code, std::string message);

  /// Waits for the next chunk of the other side's bytes. An empty chunk means the other side's
  /// direction has ended; then result() tells how (OK, an error END, or a reset). The chunk
  /// shares the connection's read buffer; keeping it does not hold back later reads.
  boost::asio::awaitable<wire::Slice> read();
  /// The next chunk if one has arrived, an empty chunk if the other side's direction has ended,
  /// or nothing when read() would wait. Grants credit as read() does. A broadcast or request that
  /// arrived in one frame can be consumed whole in the handler that receives it.
  std::optional<wire::Slice> try_read();
  /// The final outcome: the response's end status (requests), the delivery summary
  /// (broadcasts), or the reset reason. Waits until the stream has ended.
  boost::asio::awaitable<Outcome> result();
  /// Calls `handler` once with the final outcome (what result() returns) when the stream ends:
  /// from the connection's executor, inside the handling of the frame that ended it, or at once
  /// if it has already ended. The handler may use the connection (open and write streams) but
  /// must not block. One handler per stream: a second call replaces the first. The stream keeps
  /// the handler until then, so a handler that owns the stream keeps it alive until it ends.
  void on_end(std::function<void(const Outcome&)> handler);
  /// Aborts both directions; the other side learns `status` at once. No effect once ended.
  void reset(Status status = Status::cancelled, std::string message = "cancelled");

  /// True once the stream has fully ended (both directions or reset).
  bool ended() const noexcept;

private:
  friend class detail::StreamImpl;  // the only kind of stream there is
  Stream() = default;
  ~Stream() = default;
};

/// A connection to a relay: one peer on one channel. Create with connect(); keep the
/// shared_ptr while in use (streams and pending coroutines keep it alive too).
///
/// Thread-safety: none; every call and every coroutine awaiting it must run on the executor
/// given to connect() (use a strand with a multi-threaded context). Handlers run on that
/// executor too; they may call this connection but must not block.
/// Errors: connect() reports a failed join as an Outcome; afterwards, failures end streams with
/// an Outcome and the connection with on_closed / wait_closed. No call throws on the network's
/// account.
///
/// With ConnectOptions::reconnect enabled the object outlives lost network connections: it
/// re-joins by itself (see ReconnectPolicy), keeps its handlers, peer id and role, and replaces
/// its presence view with each new snapshot. Only close(), a fatal refusal or max_attempts
/// end it; then on_closed runs once and wait_closed() returns.
class Connection : public std::enable_shared_from_this<Connection> {
public:
  /// Connects, performs the handshake and receives the presence snapshot. On failure returns
  /// nullptr and fills `outcome` (e.g. REFUSED for a duplicate peer id, PEER_GONE when the relay
  /// cannot be reached). This first connection is not retried, whatever the policy: a wrong
  /// address or credentials show at once. `outcome` must outlive the awaitable.
  static boost::asio::awaitable<std::shared_ptr<Connection>> connect(
      boost::asio::any_io_executor executor, ConnectOptions options, Outcome& outcome);

  /// Sends nothing and runs no handler. The connection's own coroutines, its streams and
  /// handlers that capture it hold it too, so dropping the caller's last reference does not
  /// end it: close() does.
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// The peer id this connection joined with (the relay's choice when none was given); the
  /// same after a reconnect. Unlike the other calls, safe to read from any thread once
  /// connect() has returned.
  const Uuid& peer_id() const noexcept;
  /// ConnectOptions::channel.
  const Uuid& channel() const noexcept;
  /// Other peers on the channel, kept exact by presence events; after a reconnect, the new
  /// snapshot (the view held during the loss is the last one before it).
  std::vector<Uuid> peers() const;
  /// Membership version of that view; a reconnect starts a new sequence (see ConnectionEvent).
  std::uint64_t membership_version() const noexcept;
  /// Largest frame the relay accepts (bodies are split to fit).
  std::uint32_t relay_max_frame() const noexcept;
  /// Whether the connection is usable now.
  ConnectionState state() const noexcept;

  /// Called for each presence change, in version order. Replaces any previous handler.
  void on_presence(std::function<void(const PresenceChange&)> handler);
  /// Called for each incoming request (only with accept_requests). The handler typically
  /// co_spawns a coroutine that reads the request and writes the response. Requests that
  /// arrived before the handler was set are handed to it at once.
  void on_request(std::function<void(std::shared_ptr<Stream>)> handler);
  /// Called for each incoming broadcast. Up to 64 broadcasts that arrive before a handler is
  /// set wait for it; past that, without a handler, broadcasts are read and discarded.
  void on_broadcast(std::function<void(std::shared_ptr<Stream>)> handler);
  /// Called for each whole message sent to this peer or published to the channel, in the order
  /// each sender sent them (no order between senders, nor with streams). Up to 64 messages that
  /// arrive before a handler is set wait for it; past that, without a handler, they are
  /// discarded (counted in MessageTally::discarded).
  void on_message(std::function<void(const Message&)> handler);
  /// Called once when the connection ends for good, with the reason (not for a loss that is
  /// followed by a reconnect).
  void on_closed(std::function<void(const Outcome&)> handler);
  /// Called for each change of state (disconnected, retry_scheduled, reconnected, closed), in
  /// order. Presence changes missed during a loss are not replayed through on_presence: the
  /// reconnected event carries the new snapshot and its difference from the old view.
  void on_connection_event(std::function<void(const ConnectionEvent&)> handler);

  /// Opens a request. Nothing is sent until the first write, so a one-write request is one
  /// frame. Fails (the stream ends at once) after GOAWAY or when the connection is closed; with
  /// reconnect enabled, a stream first written while reconnecting or after GOAWAY waits for the
  /// next connection instead (bounded by its deadline). Never returns nullptr.
  std::shared_ptr<Stream> open_request(Target target, const StreamOptions& options = {});
  /// Opens a broadcast to every other peer of the channel; fails as open_request() does.
  std::shared_ptr<Stream> open_broadcast(const StreamOptions& options = {});

  // ---- Whole messages: one call, one frame, no stream and no answer. ----
  //
  // A message is at most max_message_size() bytes and travels as one frame; the relay writes
  // it to each receiver whole, in the order its sender sent it. Nothing comes back per message:
  // the relay reports, in batches, how many of ours it wrote or dropped (message_tally(),
  // flush_messages()). Flow control is per connection: the relay grants a window of message
  // bytes (the relay's message_window) and gives it back as receivers are written, so a sender
  // goes at its slowest receiver's pace, and a receiver that takes nothing for the relay's
  // slow-consumer timeout has its waiting messages dropped (MessageTally::dropped for the
  // sender, MessageTally::lost for it). Peers whose client reads streams only (older clients,
  // gRPC peers) receive a message as a broadcast stream carrying the whole body.

  /// Publishes `bytes` to every other peer of the channel. Waits only while the message window
  /// is used up. Fails with RESOURCE_EXHAUSTED when `bytes` exceed max_message_size(), and with
  /// PEER_GONE when not connected (closed, or between connections while reconnecting).
  boost::asio::awaitable<Outcome> publish(std::span<const std::uint8_t> bytes);
  /// Sends `bytes` to `peer` alone; fails as publish() does (an absent peer is reported as
  /// dropped, not as a failure).
  boost::asio::awaitable<Outcome> send_message(const Uuid& peer,
                                               std::span<const std::uint8_t> bytes);
  /// publish() without waiting: false, having sent nothing, when it would wait or fail.
  bool try_publish(std::span<const std::uint8_t> bytes);
  /// send_message() without waiting: false, having sent nothing, when it would wait or fail.
  bool try_send_message(const Uuid& peer, std::span<const std::uint8_t> bytes);
  /// Waits until every message sent so far has ended (MessageTally::all_settled), or the
  /// connection has closed; returns the tally then.
  boost::asio::awaitable<MessageTally> flush_messages();
  /// The tally now.
  MessageTally message_tally() const noexcept;
  /// The largest message body the relay takes: its max frame less MESSAGE's 20-byte head, and
  /// no more than its message window.
  std::uint32_t max_message_size() const noexcept;

  /// Closes now, also while reconnecting (the pending attempt is abandoned): every open stream
  /// ends with CANCELLED locally; the relay tells counterparts. Never waits for the network.
  /// Closing a closed connection does nothing.
  void close();
  /// True once the connection has ended for good (state() == ConnectionState::closed).
  bool closed() const noexcept;
  /// Waits until the connection has ended for good; returns why.
  boost::asio::awaitable<Outcome> wait_closed();

private:
  Connection(boost::asio::any_io_executor executor, ConnectOptions options);

  std::unique_ptr<detail::ConnectionImpl> p_;
};

}  // namespace switchboard::client
