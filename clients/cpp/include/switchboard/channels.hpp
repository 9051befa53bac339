// Public API of the native client for one program taking part in many channels: one object, one
// I/O thread, a membership per channel made and reconnected by the object, carried by a few
// shared TCP connections (or, to a relay that does not share them, one paced connection each).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "switchboard/client.hpp"

namespace switchboard::client {

/// Settings shared by every channel of a Channels object, copied into it.
struct ChannelsOptions {
  std::string host = "127.0.0.1";  ///< relay's native door; resolved once, on the first join
  std::uint16_t port = 7400;       ///< its port
  TlsOptions tls;                  ///< as ConnectOptions::tls, for every connection
  std::string token;               ///< default token; JoinOptions::token overrides it
  /// The channels of this object share TCP connections (protocol versions 4 and 5, see
  /// ConnectionSharing) instead of one each: a few connections carry every membership, and
  /// joins are not paced, as a lane is no TCP connect. Needs a relay that offers shared
  /// connections; with one that does not (it refuses them, which the object learns on its
  /// first join) each channel connects on its own, paced as below. Over TLS as well: the
  /// shared connections are then TLS connections, one handshake each instead of one per
  /// channel.
  bool share_connections = true;
  /// Connects per second across all channels, and how many may start at once before that rate
  /// applies, when the channels do not share connections. Each channel is then one connection
  /// from this host's address, so joining 1,000 channels at once would meet the relay's
  /// per-address throttle (`connect_rate_per_address`, 200/s, and `connect_burst_per_address`,
  /// 400, by default), which refuses the excess with RESOURCE_EXHAUSTED. The defaults stay under
  /// the relay's defaults with room for other programs on the same host; a refusal is retried
  /// anyway (see join_timeout). 0: unpaced.
  double connect_rate = 150;
  std::uint32_t connect_burst = 300;
  /// Bound on one channel's first join from its first attempt (the wait for a paced connect
  /// slot not included), retries of RESOURCE_EXHAUSTED and REFUSED included.
  std::chrono::milliseconds join_timeout{60'000};
  std::chrono::milliseconds connect_timeout{10'000};  ///< each connect attempt
  /// Reconnection of each channel's connection after it is lost; on by default here, since a
  /// member of many channels is a long-running program. See ReconnectPolicy.
  ReconnectPolicy reconnect = [] {
    ReconnectPolicy policy;
    policy.enabled = true;
    return policy;
  }();
  std::uint32_t max_frame = 256 * 1024;       ///< as ConnectOptions::max_frame
  std::uint32_t stream_window = 1024 * 1024;  ///< as ConnectOptions::stream_window
};

/// How this object takes part in one channel.
struct JoinOptions {
  Uuid peer_id;                  ///< nil: the relay assigns one
  bool accept_requests = false;  ///< serve requests on this channel
  bool observe = false;          ///< watch presence without joining (ConnectOptions::observe)
  std::string token;             ///< empty: ChannelsOptions::token
};

/// A whole response: the end status and the bytes before it.
struct Response {
  Outcome outcome;
  std::vector<std::uint8_t> body;
};

class Channels;

/// This object's membership of one channel: a handle made by Channels::join.
///
/// Ownership: shared between the caller and the Channels object until leave() or
/// Channels::close(); the handle may be kept after that (calls then report a closed channel),
/// but not used once its Channels object is being destroyed.
/// Thread-safety: calls not marked otherwise may be made from any thread, including the I/O
/// thread; they never wait for the network. Handlers run on the I/O thread, in the order events
/// arrive, and must not block: a slow handler delays every channel of the object.
/// Errors: Outcome values, never exceptions on the network's account.
class Channel : public std::enable_shared_from_this<Channel> {
public:
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  /// The channel id.
  const Uuid& id() const noexcept;
  /// The I/O thread's executor, shared by every channel of the object.
  boost::asio::any_io_executor executor() const;

  /// Becomes ready with the first join's outcome: OK, or why the channel could not be joined
  /// within ChannelsOptions::join_timeout (the channel is then closed), or CANCELLED by leave().
  std::shared_future<Outcome> joined() const;
  /// Waits for joined(); must not be called on the I/O thread (throws std::logic_error).
  Outcome wait_joined() const;
  /// connected, reconnecting or closed; `reconnecting` also before the first join completes.
  ConnectionState state() const;
  /// The peer id of this membership (nil until joined), kept across reconnects.
  Uuid peer_id() const;
  /// Other peers on the channel: a copy of the connection's view, kept exact by presence events
  /// and replaced by each reconnect's snapshot.
  std::vector<Uuid> peers() const;
  /// Membership version of that view.
  std::uint64_t membership_version() const;

  /// Handlers, set at any time (also before the join completes) and kept across reconnects;
  /// each replaces the previous one. See Connection::on_request / on_broadcast / on_presence.
  void on_request(std::function<void(std::shared_ptr<Stream>)> handler);
  void on_broadcast(std::function<void(std::shared_ptr<Stream>)> handler);
  void on_presence(std::function<void(const PresenceChange&)> handler);
  /// Serves every request with `handler`: it receives the whole request body on the I/O thread
  /// and returns the whole response body, sent with OK. Needs JoinOptions::accept_requests.
  void serve(std::function<std::vector<std::uint8_t>(const std::vector<std::uint8_t>&)> handler);

  /// Sends a request with `body` and collects the whole response. Any thread. Fails with
  /// PEER_GONE "not joined" before the join completes and after leave().
  std::future<Response> request(Target target, std::vector<std::uint8_t> body,
                                StreamOptions options = {});
  /// The same from a coroutine, which must run on executor(); `body` must outlive it.
  boost::asio::awaitable<Response> async_request(Target target, std::span<const std::uint8_t> body,
                                                 StreamOptions options = {});
  /// Broadcasts `body` to every other peer of the channel; the future holds the summary.
  std::future<Outcome> broadcast(std::vector<std::uint8_t> body, StreamOptions options = {});

  /// The connection for everything else (streams written piece by piece). Only on the I/O
  /// thread; nullptr until joined and after leave(). The object keeps owning it: do not
  /// close() it, call leave().
  std::shared_ptr<Connection> connection() const;

  /// Leaves the channel: closes its connection (or abandons the join in progress) and drops it
  /// from the Channels object. Any thread; never waits. Leaving twice does nothing.
  void leave();

private:
  friend class Channels;
  struct Core;
  struct Shared;
  Channel(std::shared_ptr<Shared> shared, Uuid id, JoinOptions options);
  boost::asio::awaitable<void> run_join();
  void attach(std::shared_ptr<Connection> connection);
  void finish_join(Outcome outcome);

  std::unique_ptr<Core> p_;
};

/// One program's membership of many channels. It owns one I/O thread (started by the
/// constructor) on which every connection, timer and handler of every channel runs, and it
/// resolves the relay's name once; a channel costs its membership's connection state and a lane
/// of a shared TCP (or TLS) connection (ChannelsOptions::share_connections), and nothing else.
/// Without sharing (switched off, or a relay that does not offer it) each channel has a
/// connection of its own, and joins are paced (ChannelsOptions::connect_rate) so that a thousand
/// of them pass the relay's per-address throttle. Each channel reconnects by itself (ChannelsOptions::reconnect).
///
/// Ownership: the object owns its I/O thread, every channel's connection and the TCP
/// connections they share; Channel handles are shared. Destruction leaves every channel (waiting
/// up to two seconds for the connections to close) and stops the thread.
/// Thread-safety: every call may be made from any thread, except that the destructor must not
/// run on the I/O thread nor concurrently with calls on this object or its channels.
/// Errors: join() never fails at once; a channel that cannot be joined reports it through
/// Channel::joined(). Nothing throws on the network's account.
class Channels {
public:
  explicit Channels(ChannelsOptions options);
  ~Channels();
  Channels(const Channels&) = delete;
  Channels& operator=(const Channels&) = delete;

  /// Starts joining `channel` (in the background, paced) and returns its handle at once. A
  /// channel this object already takes part in returns the existing handle, `options` ignored.
  std::shared_ptr<Channel> join(const Uuid& channel, JoinOptions options = {});
  /// The handle of a channel this object takes part in, or nullptr.
  std::shared_ptr<Channel> find(const Uuid& channel) const;
  /// Channels taken part in (joined or joining).
  std::size_t size() const;
  /// Waits until every channel joined so far has its joined() outcome or `timeout` passes;
  /// returns how many joined successfully. Not on the I/O thread (throws std::logic_error).
  std::size_t wait_all_joined(std::chrono::milliseconds timeout);
  /// Leaves every channel; later join() calls start over. Never waits.
  void close();
  /// The I/O thread's executor.
  boost::asio::any_io_executor executor() const;

private:
  std::shared_ptr<Channel::Shared> shared_;
};

}  // namespace switchboard::client
