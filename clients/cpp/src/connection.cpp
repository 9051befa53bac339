// Client connection: handshake, read and write loops, frame dispatch, keepalive.
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <mutex>

#include "connection_private.hpp"

namespace switchboard::client {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using detail::ConnectionImpl;
using detail::Joined;
using detail::Link;
using detail::StreamImpl;
namespace {
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
// A link that sent nothing for this long is idle: what is queued on it goes out at once.
constexpr auto kIdleLink = std::chrono::microseconds(50);

// A seed for a connection's retry jitter, drawn from one generator per thread: std::random_device
// costs a CPU feature probe each time it is made (a trap to the hypervisor on a virtual machine),
// too much for every connection of a program that opens thousands.
std::minstd_rand::result_type jitter_seed() {
  thread_local std::mt19937 seeds(std::random_device{}());
  return static_cast<std::minstd_rand::result_type>(seeds());
}
}  // namespace

namespace detail {
std::shared_ptr<wire::BlockPool> shared_read_blocks(std::size_t block_size) {
  // The pool keeps as many free blocks as the process's connections had out at once in the last
  // second or two (the blocks of slices not yet consumed): a steady flow then allocates nothing.
  // Once the flows stop, what comes back beyond that is freed; the 64-block ceiling (16 MiB of
  // 256 KiB blocks) bounds what a burst can leave behind.
  constexpr std::size_t kMinCached = 4;
  constexpr std::size_t kMaxCached = 64;
  constexpr auto kWindow = std::chrono::seconds(1);
  static std::mutex mutex;
  static boost::unordered_flat_map<std::size_t, std::shared_ptr<wire::BlockPool>> pools;
  const std::lock_guard lock(mutex);
  auto& pool = pools[block_size];
  if (!pool) pool = wire::BlockPool::create_elastic(block_size, kMinCached, kMaxCached, kWindow);
  return pool;
}
}  // namespace detail

std::string Outcome::describe() const {
  std::string text(status_name(status));
  if (status == Status::application) text += "(" + std::to_string(app_code) + ")";
  if (!message.empty()) text += ": " + message;
  return text;
}

// The public handle: every call goes to the state it owns.

Connection::Connection(asio::any_io_executor executor, ConnectOptions options)
    : p_(std::make_unique<ConnectionImpl>(*this, std::move(executor), std::move(options))) {}

Connection::~Connection() = default;

asio::awaitable<std::shared_ptr<Connection>> Connection::connect(asio::any_io_executor executor,
                                                                 ConnectOptions options,
                                                                 Outcome& outcome) {
  std::shared_ptr<Connection> connection(new Connection(std::move(executor), std::move(options)));
  auto& impl = *connection->p_;
  if (impl.options_.observe && impl.options_.accept_requests) {
    outcome = Outcome{Status::protocol_error, 0, "observe and accept_requests exclude each other"};
    impl.close();
    co_return nullptr;
  }
  Joined joined;
  outcome = co_await impl.attempt(joined);
  if (!outcome.ok()) {
    impl.close();
    co_return nullptr;
  }
  impl.adopt(joined);
  impl.start_loops();
  co_return connection;
}

const Uuid& Connection::peer_id() const noexcept { return p_->peer_id_; }
const Uuid& Connection::channel() const noexcept { return p_->options_.channel; }
std::vector<Uuid> Connection::peers() const { return p_->peers(); }
std::uint64_t Connection::membership_version() const noexcept { return p_->version_; }
std::uint32_t Connection::relay_max_frame() const noexcept { return p_->relay_max_frame_; }
ConnectionState Connection::state() const noexcept { return p_->state_; }
void Connection::on_presence(std::function<void(const PresenceChange&)> handler) {
  p_->on_presence(std::move(handler));
}
void Connection::on_request(std::function<void(std::shared_ptr<Stream>)> handler) {
  p_->on_request(std::move(handler));
}
void Connection::on_broadcast(std::function<void(std::shared_ptr<Stream>)> handler) {
  p_->on_broadcast(std::move(handler));
}
void Connection::on_closed(std::function<void(const Outcome&)> handler) {
  p_->on_closed(std::move(handler));
}
void Connection::on_connection_event(std::function<void(const ConnectionEvent&)> handler) {
  p_->on_connection_event(std::move(handler));
}
std::shared_ptr<Stream> Connection::open_request(Target target, const StreamOptions& options) {
  return p_->open_request(target, options);
}
std::shared_ptr<Stream> Connection::open_broadcast(const StreamOptions& options) {
  return p_->open_broadcast(options);
}
void Connection::on_message(std::function<void(const Message&)> handler) {
  p_->on_message(std::move(handler));
}
asio::awaitable<Outcome> Connection::publish(std::span<const std::uint8_t> bytes) {
  return p_->post_message(wire::StreamKind::broadcast, Uuid{}, bytes);
}
asio::awaitable<Outcome> Connection::send_message(const Uuid& peer,
                                                  std::span<const std::uint8_t> bytes) {
  return p_->post_message(wire::StreamKind::to_peer, peer, bytes);
}
bool Connection::try_publish(std::span<const std::uint8_t> bytes) {
  return p_->try_post_message(wire::StreamKind::broadcast, Uuid{}, bytes);
}
bool Connection::try_send_message(const Uuid& peer, std::span<const std::uint8_t> bytes) {
  return p_->try_post_message(wire::StreamKind::to_peer, peer, bytes);
}
asio::awaitable<MessageTally> Connection::flush_messages() { return p_->flush_messages(); }
MessageTally Connection::message_tally() const noexcept { return p_->tally_; }
std::uint32_t Connection::max_message_size() const noexcept { return p_->max_message_size(); }
void Connection::close() { p_->close(); }
bool Connection::closed() const noexcept { return p_->closed_; }
asio::awaitable<Outcome> Connection::wait_closed() { return p_->wait_closed(); }

// The connection's state.

ConnectionImpl::ConnectionImpl(Connection& owner, asio::any_io_executor executor,
                               ConnectOptions options)
    : owner_(owner),
      options_(std::move(options)),
      target_{options_.host, options_.port},
      executor_(std::move(executor)),
      link_(std::make_shared<Link>(executor_, options_)),
      closed_signal_(executor_, asio::steady_timer::time_point::max()),
      linked_signal_(executor_, asio::steady_timer::time_point::max()),
      backoff_timer_(executor_),
      attempt_timer_(executor_),
      random_(jitter_seed()),
      message_signal_(executor_, asio::steady_timer::time_point::max()) {}

void ConnectionImpl::on_presence(std::function<void(const PresenceChange&)> handler) {
  on_presence_ = std::move(handler);
}
void ConnectionImpl::on_request(std::function<void(std::shared_ptr<Stream>)> handler) {
  on_request_ = std::move(handler);
  auto pending = std::move(pending_requests_);
  pending_requests_.clear();
  for (auto& stream : pending) on_request_(std::move(stream));
}
void ConnectionImpl::on_broadcast(std::function<void(std::shared_ptr<Stream>)> handler) {
  on_broadcast_ = std::move(handler);
  auto pending = std::move(pending_broadcasts_);
  pending_broadcasts_.clear();
  for (auto& stream : pending) on_broadcast_(std::move(stream));
}
void ConnectionImpl::on_closed(std::function<void(const Outcome&)> handler) {
  on_closed_ = std::move(handler);
}

asio::awaitable<Outcome> ConnectionImpl::start_tls(Link& link) {
  co_return co_await detail::start_client_tls(link.socket, options_.tls, target_.host, target_.port,
                                              link.tls_context, link.tls);
}

namespace detail {

asio::awaitable<Outcome> start_client_tls(
    tcp::socket& socket, const TlsOptions& tls, const std::string& host, std::uint16_t port,
    std::optional<asio::ssl::context>& context_slot,
    std::unique_ptr<asio::ssl::stream<tcp::socket&>>& stream) {
  namespace ssl = asio::ssl;
  auto failure = [](std::string message) {
    return Outcome{Status::unauthenticated, 0, std::move(message)};
  };
  auto& context = context_slot.emplace(ssl::context::tls_client);
  context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  if (tls.ca_file.empty()) {
    context.set_default_verify_paths(ec);
  } else {
    context.load_verify_file(tls.ca_file, ec);
  }
  if (ec) co_return failure("cannot load TLS CA file \"" + tls.ca_file + "\": " + ec.message());
  if (!tls.cert_file.empty()) {
    context.use_certificate_chain_file(tls.cert_file, ec);
    if (ec) {
      co_return failure("cannot load TLS certificate \"" + tls.cert_file + "\": " + ec.message());
    }
    context.use_private_key_file(tls.key_file.empty() ? tls.cert_file : tls.key_file,
                                 ssl::context::pem, ec);
    if (ec) co_return failure("cannot load TLS key \"" + tls.key_file + "\": " + ec.message());
  }
  const std::string name = tls.server_name.empty() ? host : tls.server_name;
  context.set_verify_mode(ssl::verify_peer);
  context.set_verify_callback(ssl::host_name_verification(name));
  stream = std::make_unique<ssl::stream<tcp::socket&>>(socket, context);
  boost::system::error_code not_an_address;
  (void)asio::ip::make_address(name, not_an_address);
  if (not_an_address) SSL_set_tlsext_host_name(stream->native_handle(), name.c_str());
  auto [handshake_error] = co_await stream->async_handshake(ssl::stream_base::client, kUseTuple);
  if (handshake_error) {
    std::string reason = handshake_error.message();
    const long verify = SSL_get_verify_result(stream->native_handle());
    if (verify != X509_V_OK) {
      reason += " (" + std::string(X509_verify_cert_error_string(verify)) + ", checking \"" + name +
                "\")";
    }
    co_return failure("TLS handshake with " + host + ":" + std::to_string(port) +
                      " failed: " + reason);
  }
  co_return Outcome{};
}

}  // namespace detail

std::optional<ConnectionImpl::RelayAddress> ConnectionImpl::parse_address(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) return {};
  auto host = text.substr(0, colon);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return {};
    host = host.substr(1, host.size() - 2);
  }
  unsigned port = 0;
  for (const char c : text.substr(colon + 1)) {
    if (c < '0' || c > '9') return {};
    port = port * 10 + static_cast<unsigned>(c - '0');
    if (port > 65535) return {};
  }
  if (port == 0) return {};
  return RelayAddress{std::string(host), static_cast<std::uint16_t>(port)};
}

asio::awaitable<Outcome> ConnectionImpl::attempt(Joined& joined) {
  // A cluster relay that does not serve the channel names the one that does: follow a few
  // hops. A hop to a revision no newer than the last one seen means the relays' views
  // disagree for a moment: wait a little before asking again.
  constexpr int kMaxRedirects = 5;
  constexpr auto kStaleBackoff = std::chrono::milliseconds(20);
  const RelayAddress entry{options_.host, options_.port};
  std::uint64_t newest_revision = 0;
  Outcome outcome;
  for (int hop = 0;; ++hop) {
    redirected_to_.reset();
    outcome = co_await attempt_once(joined);
    if (closed_) co_return outcome;
    if (!redirected_to_) {
      // The owner a REDIRECT named is gone or frozen (unreachable, closed on us, or silent
      // past the connect timeout): start again from the relay we were given.
      const bool lost = outcome.unreachable || outcome.status == Status::peer_gone ||
                        outcome.status == Status::deadline_exceeded;
      if (lost && !(target_ == entry) && hop < kMaxRedirects) {
        target_ = entry;
        continue;
      }
      co_return outcome;
    }
    if (hop == kMaxRedirects) {
      co_return Outcome{Status::refused, 0,
                        "too many redirects (" + std::to_string(kMaxRedirects) +
                            "): the cluster's relays disagree on who serves this channel"};
    }
    auto [where, revision] = *redirected_to_;
    if (revision <= newest_revision) {
      backoff_timer_.expires_after(kStaleBackoff * (1 << hop));
      co_await backoff_timer_.async_wait(kUseTuple);
      if (closed_) co_return close_outcome_;
    }
    newest_revision = std::max(newest_revision, revision);
    target_ = std::move(where);
  }
}

asio::awaitable<Outcome> ConnectionImpl::attempt_once(Joined& joined) {
  // The first attempt uses the link made with the connection; each later one (a reconnect, a
  // redirect) starts from a fresh link.
  auto link = link_;
  if (link->handshake_over || link->dead || link->socket.is_open() || link->lane) {
    link = std::make_shared<Link>(executor_, options_);
    link_ = link;
  }
  // At the connect timeout the link is closed, so whatever the handshake waits on ends with an
  // error: cheaper, for every connect, than racing the handshake and the timer as two coroutines.
  attempt_timer_.expires_after(options_.connect_timeout);
  attempt_timer_.async_wait([weak = std::weak_ptr<Link>(link)](boost::system::error_code ec) {
    const auto late = weak.lock();
    if (ec || !late || late->handshake_over) return;
    late->handshake_timed_out = true;
    if (late->resolver) late->resolver->cancel();
    late->close();
  });
  Outcome outcome = co_await handshake(*link, joined);
  link->handshake_over = true;
  attempt_timer_.cancel();
  if (link->handshake_timed_out) {
    outcome = Outcome{Status::deadline_exceeded, 0, "connect timed out", 0, 0, false};
  }
  if (closed_) outcome = close_outcome_;
  if (!outcome.ok()) {
    link->dead = true;
    link->close();
  }
  co_return outcome;
}

void ConnectionImpl::adopt(const Joined& joined) {
  // Unchanged by a reconnect; not rewritten, as BlockingClient reads it from other threads.
  if (peer_id_ != joined.peer_id) peer_id_ = joined.peer_id;
  relay_max_frame_ = joined.max_frame;
  relay_window_ = joined.stream_window;
  keepalive_ms_ = joined.keepalive_ms;
  message_credit_ = joined.message_window;
  message_window_ = joined.message_window;
  peers_ = joined.peers;
  version_ = joined.version;
  state_ = ConnectionState::connected;
}

void ConnectionImpl::start_loops() {
  // Each coroutine holds the connection's handle, which owns this state, until it ends.
  auto link = link_;
  auto self = shared_from_this();
  asio::co_spawn(
      executor_, [self, this, link] { return read_loop(link); }, asio::detached);
  asio::co_spawn(
      executor_, [self, this, link] { return write_loop(link); }, asio::detached);
  asio::co_spawn(
      executor_, [self, this, link] { return keepalive(link); }, asio::detached);
}

asio::awaitable<Outcome> ConnectionImpl::connect_socket(Link& link) {
  boost::system::error_code connect_error;
  // A literal address is connected to at once: the resolver would hand the lookup to its own
  // thread and back, which costs more than the connect itself.
  boost::system::error_code not_literal;
  const auto literal = asio::ip::make_address(target_.host, not_literal);
  if (!not_literal) {
    std::tie(connect_error) = co_await link.socket.async_connect(
        tcp::endpoint(literal, target_.port), asio::as_tuple(asio::use_awaitable));
  } else {
    auto& resolver = link.resolver.emplace(executor_);
    auto [resolve_error, endpoints] =
        co_await resolver.async_resolve(target_.host, std::to_string(target_.port), kUseTuple);
    link.resolver.reset();
    if (resolve_error) {
      Outcome failure{Status::peer_gone, 0,
                      "cannot resolve " + target_.host + ": " + resolve_error.message()};
      failure.unreachable = true;
      co_return failure;
    }
    std::tie(connect_error, std::ignore) =
        co_await asio::async_connect(link.socket, endpoints, kUseTuple);
  }
  if (connect_error) {
    Outcome failure{Status::peer_gone, 0,
                    "cannot connect to " + target_.host + ":" + std::to_string(target_.port) +
                        ": " + connect_error.message()};
    failure.unreachable = true;
    co_return failure;
  }
  boost::system::error_code ignored;
  link.socket.set_option(tcp::no_delay(true), ignored);
  if (options_.tls.enabled) co_return co_await start_tls(link);
  co_return Outcome{};
}

asio::awaitable<Outcome> ConnectionImpl::handshake(Link& link, Joined& joined) {
  if (options_.sharing) {
    // A lane of a shared connection takes the place of a connect; where the relay does not
    // share, the connection is this Connection's own, as without sharing.
    link.lane = std::make_shared<detail::Lane>(executor_);
    Outcome failure;
    const auto attached =
        co_await options_.sharing->attach(*link.lane, target_.host, target_.port, options_.tls,
                                          options_.channel, options_.connect_timeout, failure);
    if (attached == ConnectionSharing::Attached::failed) co_return failure;
    if (attached == ConnectionSharing::Attached::not_shared) link.lane.reset();
  }
  if (!link.lane) {
    if (auto failure = co_await connect_socket(link); !failure.ok()) co_return failure;
  }

  wire::Hello hello;
  hello.channel = options_.channel;
  // A reconnect keeps the identity the relay gave us the first time.
  hello.peer_id = peer_id_.is_nil() ? options_.peer_id : peer_id_;
  hello.hello_flags = options_.observe           ? wire::flags::kObserve
                      : options_.accept_requests ? wire::flags::kAcceptRequests
                                                 : 0;
  hello.max_frame = options_.max_frame;
  hello.stream_window = options_.stream_window;
  hello.token = options_.token;
  std::vector<std::uint8_t> bytes;
  bytes.reserve(64 + hello.token.size());  // the whole frame: one allocation
  wire::append_hello(bytes, hello);
  if (auto [ec, n] = co_await link.write_all(asio::buffer(bytes)); ec) {
    co_return Outcome{Status::peer_gone, 0, "handshake write failed: " + ec.message()};
  }

  bool welcomed = false;
  wire::Frame frame;
  for (;;) {
    auto space = link.reader.prepare();
    auto [ec, n] = co_await link.read_some(asio::buffer(space.data(), space.size()));
    if (ec) {
      // Over TLS the relay's refusal of our certificate arrives here, as an alert.
      if (link.tls && ec != asio::error::eof && ec.category() == asio::error::get_ssl_category()) {
        co_return Outcome{Status::unauthenticated, 0,
                          "relay ended the TLS session during handshake: " + ec.message()};
      }
      co_return Outcome{Status::peer_gone, 0, "relay closed during handshake"};
    }
    link.reader.commit(n);
    for (;;) {
      const auto decoded = link.reader.next(frame);
      if (decoded.kind == wire::DecodeResult::Kind::need_more) break;
      if (decoded.kind == wire::DecodeResult::Kind::error) {
        co_return Outcome{
            Status::protocol_error, 0,
            "bad frame from relay: " + std::string(wire::decode_error_name(decoded.error))};
      }
      const auto type = frame.header.type;
      if (type == wire::FrameType::error) {
        wire::Error error;
        if (wire::parse_error(frame.payload, error) != wire::DecodeError::none) {
          co_return Outcome{Status::protocol_error, 0, "malformed ERROR from relay"};
        }
        co_return Outcome{error.status, 0, error.message};
      }
      if (!welcomed && type == wire::FrameType::redirect) {
        wire::Redirect redirect;
        if (wire::parse_redirect(frame.payload, redirect) != wire::DecodeError::none) {
          co_return Outcome{Status::protocol_error, 0, "malformed REDIRECT from relay"};
        }
        auto where = parse_address(redirect.address);
        if (!where) {
          co_return Outcome{Status::protocol_error, 0,
                            "REDIRECT to a malformed address \"" + redirect.address + "\""};
        }
        redirected_to_.emplace(std::move(*where), redirect.revision);
        co_return Outcome{Status::refused, 0, "redirected to " + redirect.address};
      }
      if (!welcomed && type == wire::FrameType::welcome) {
        wire::Welcome welcome;
        if (wire::parse_welcome(frame.payload, welcome) != wire::DecodeError::none) {
          co_return Outcome{Status::protocol_error, 0, "malformed WELCOME from relay"};
        }
        if (welcome.version != hello.version) {
          co_return Outcome{Status::protocol_error, 0,
                            "relay answered in protocol version " +
                                std::to_string(welcome.version) + " to a version " +
                                std::to_string(hello.version) + " HELLO"};
        }
        if (!hello.peer_id.is_nil() && welcome.peer_id != hello.peer_id) {
          co_return Outcome{Status::protocol_error, 0, "relay assigned a different peer id"};
        }
        welcomed = true;
        joined.peer_id = welcome.peer_id;
        joined.max_frame = welcome.max_frame;
        joined.stream_window = welcome.stream_window;
        joined.keepalive_ms = welcome.keepalive_ms;
        joined.message_window = welcome.message_window;
        continue;
      }
      if (welcomed && type == wire::FrameType::presence) {
        wire::Presence presence;
        if (wire::parse_presence(frame.payload, presence) != wire::DecodeError::none ||
            presence.event != wire::PresenceEvent::snapshot) {
          co_return Outcome{Status::protocol_error, 0, "malformed presence snapshot"};
        }
        joined.peers.insert(joined.peers.end(), presence.peers.begin(), presence.peers.end());
        joined.version = presence.version;
        if ((frame.header.flags & wire::flags::kMore) == 0) {
          // Frames already read past the snapshot are dispatched by the read loop.
          co_return Outcome{};
        }
        continue;
      }
      co_return Outcome{
          Status::protocol_error, 0,
          "unexpected " + std::string(wire::frame_type_name(type)) + " during handshake"};
    }
  }
}

asio::awaitable<void> ConnectionImpl::read_loop(std::shared_ptr<Link> link) {
  auto self = shared_from_this();
  wire::Frame frame;
  Outcome reason{Status::peer_gone, 0, "relay closed the connection"};
  // Frames that arrived with the handshake's last read are still in the reader.
  for (;;) {
    bool broken = false;
    for (;;) {
      const auto decoded = link->reader.next(frame);
      if (decoded.kind == wire::DecodeResult::Kind::need_more) break;
      if (decoded.kind == wire::DecodeResult::Kind::error) {
        reason =
            Outcome{Status::protocol_error, 0,
                    "bad frame from relay: " + std::string(wire::decode_error_name(decoded.error))};
        broken = true;
        break;
      }
      dispatch(frame);
      if (link->dead) co_return;
    }
    if (broken) break;
    auto space = link->reader.prepare();
    auto [ec, n] = co_await link->read_some(asio::buffer(space.data(), space.size()));
    if (link->dead) co_return;
    if (ec) {
      // A lane's error is its shared connection's end, which the lane can tell.
      if (ec != asio::error::eof) {
        reason.message = link->lane ? link->lane->failure_text() : ec.message();
      }
      break;
    }
    link->reader.commit(n);
    link->keepalive.on_read(std::chrono::steady_clock::now());
  }
  link_lost(link, reason);
}

asio::awaitable<void> ConnectionImpl::write_loop(std::shared_ptr<Link> link) {
  auto self = shared_from_this();
  while (!link->dead) {
    if (link->outbuf.empty()) {
      link->wake.expires_at(asio::steady_timer::time_point::max());
      link->writer_parked = true;
      co_await link->wake.async_wait(kUseTuple);
      link->writer_parked = false;
      continue;
    }
    link->writing.clear();
    link->writing.swap(link->outbuf);
    boost::system::error_code ec;
    link->last_send = std::chrono::steady_clock::now();
    const std::size_t sent = link->try_send(asio::buffer(link->writing), ec);
    if (!ec && sent < link->writing.size()) {
      auto [write_error, n] = co_await link->write_all(asio::buffer(link->writing) + sent);
      if (link->dead) co_return;
      ec = write_error;
    }
    if (ec) {
      link_lost(link,
                Outcome{Status::peer_gone, 0,
                        link->lane ? link->lane->failure_text() : "write failed: " + ec.message()});
      co_return;
    }
    // Writers blocked on a full buffer may continue. (The size of this write does not tell
    // whether any waits: a direct send in queue_bytes may have shrunk the buffer they saw.)
    for (auto& [id, stream] : streams_) stream->notify_writers();
    // A stream's first write may wait too, before the stream has an id.
    for (auto& weak : unopened_) {
      if (auto stream = weak.lock()) stream->notify_writers();
    }
  }
}

asio::awaitable<void> ConnectionImpl::keepalive(std::shared_ptr<Link> link) {
  auto self = shared_from_this();
  if (keepalive_ms_ == 0) co_return;
  const auto interval = std::chrono::milliseconds(keepalive_ms_);
  // The relay is judged only on a PING it had two intervals to answer.
  const wire::KeepaliveTiming timing{interval, 2 * interval};
  auto& timer = link->keepalive_timer;
  // Ticks come every half interval: one more than an interval apart means this process was not
  // running, and the relay's answer may be unread yet.
  wire::StallDetector ticks(std::chrono::steady_clock::now());
  while (!link->dead) {
    timer.expires_after(interval / 2);
    co_await timer.async_wait(kUseTuple);
    if (link->dead) co_return;
    const auto now = std::chrono::steady_clock::now();
    const bool stalled = ticks.on_tick(now, interval);
    switch (link->keepalive.judge(now, timing, stalled)) {
      case wire::KeepaliveVerdict::wait:
        break;
      case wire::KeepaliveVerdict::send_ping:
        link->keepalive.on_ping_sent(now);
        wire::append_ping(link->outbuf, 1, false);
        queue_bytes();
        break;
      case wire::KeepaliveVerdict::dead:
        link_lost(link, Outcome{Status::peer_gone, 0, "relay stopped answering (keepalive)"});
        co_return;
    }
  }
}

void ConnectionImpl::queue_bytes() {
  // A cancel takes the reactor's lock and queues a completion: only for a parked writer.
  auto& link = *link_;
  if (!link.writer_parked) return;
  // A lane hands its bytes over at once: the shared connection's writer gathers every lane's
  // bytes of this turn of the event loop into one send.
  bool send_now = link.lane != nullptr;
  if (!send_now) {
    const auto now = std::chrono::steady_clock::now();
    send_now = now - link.last_send > kIdleLink;
    if (send_now) link.last_send = now;
  }
  if (send_now) {
    boost::system::error_code ec;
    const std::size_t sent = link.try_send(asio::buffer(link.outbuf), ec);
    if (!ec && sent == link.outbuf.size()) {
      link.outbuf.clear();
      return;
    }
    // Not all of it (or a failure the writer will meet): the writer takes over the rest.
    link.outbuf.erase(link.outbuf.begin(), link.outbuf.begin() + static_cast<std::ptrdiff_t>(sent));
  }
  link.writer_parked = false;
  link.wake.cancel();
}

std::shared_ptr<StreamImpl> ConnectionImpl::make_stream(Stream::Kind kind, std::uint32_t id) {
  return std::make_shared<StreamImpl>(shared_from_this(), *this, kind, id);
}

std::shared_ptr<StreamImpl> ConnectionImpl::find(std::uint32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second;
}

void ConnectionImpl::grant(StreamImpl& stream, std::uint32_t consumed) {
  if (stream.recv_done_ || stream.terminal_ || closed_) return;
  stream.grant_pending_ += consumed;
  if (wire::credit_due(stream.grant_pending_, options_.stream_window)) {
    wire::append_window(outbuf(), stream.id_, stream.grant_pending_);
    stream.recv_allowed_ += stream.grant_pending_;
    stream.grant_pending_ = 0;
    queue_bytes();
  }
}

void ConnectionImpl::dispatch(const wire::Frame& frame) {
  using wire::FrameType;
  const auto& h = frame.header;
  switch (h.type) {
    case FrameType::presence: {
      // Parsed into this thread's frame, whose list keeps its room: a storm's presence costs
      // no allocation per change (the subject and version are copied out before any handler).
      thread_local wire::Presence presence;
      if (wire::parse_presence(frame.payload, presence) != wire::DecodeError::none) return;
      if (presence.event == wire::PresenceEvent::snapshot) return;
      const Uuid& subject = presence.peers.front();
      const bool joined = presence.event == wire::PresenceEvent::joined;
      if (joined) {
        peers_.push_back(subject);
      } else {
        std::erase(peers_, subject);
      }
      version_ = presence.version;
      if (on_presence_) on_presence_(PresenceChange{joined, subject, presence.version});
      return;
    }
    case FrameType::ping: {
      std::uint64_t opaque = 0;
      if (wire::parse_ping(frame.payload, opaque) != wire::DecodeError::none) return;
      if ((h.flags & wire::flags::kAck) == 0) {
        wire::append_ping(outbuf(), opaque, true);
        queue_bytes();
      }
      return;
    }
    case FrameType::go_away:
      // With reconnect enabled, new streams now wait for the next connection.
      link_->going_away = true;
      return;
    case FrameType::redirect: {
      // The channel moves to another relay: as GOAWAY, and the next connection goes there.
      wire::Redirect redirect;
      if (wire::parse_redirect(frame.payload, redirect) != wire::DecodeError::none) return;
      link_->going_away = true;
      if (auto where = parse_address(redirect.address)) target_ = std::move(*where);
      return;
    }
    case FrameType::error: {
      wire::Error error;
      (void)wire::parse_error(frame.payload, error);
      link_lost(link_, Outcome{error.status, 0, error.message});
      return;
    }
    case FrameType::open: {
      wire::Open open;
      wire::Bytes body;
      if (wire::parse_open(frame.payload, open, body) != wire::DecodeError::none) return;
      const bool broadcast = open.kind == wire::StreamKind::broadcast;
      auto stream = make_stream(
          broadcast ? Stream::Kind::incoming_broadcast : Stream::Kind::incoming_request, h.stream);
      stream->peer_ = open.peer;
      stream->metadata_ = std::move(open.metadata);
      stream->deadline_ = std::chrono::milliseconds(open.deadline_ms);
      stream->send_credit_ = relay_window_;
      stream->send_done_ = broadcast;
      stream->recv_allowed_ = options_.stream_window;
      streams_.emplace(h.stream, stream);
      stream->recv_allowed_ -= static_cast<std::int64_t>(body.size());
      stream->push(link_->reader.share(body), (h.flags & wire::flags::kFin) != 0);
      auto& handler = broadcast ? on_broadcast_ : on_request_;
      // Held back briefly: a handler set right after connect() must not miss what came first.
      constexpr std::size_t kMaxPendingBroadcasts = 64;
      if (handler) {
        handler(stream);
      } else if (!broadcast && options_.accept_requests) {
        pending_requests_.push_back(std::move(stream));
      } else if (broadcast && pending_broadcasts_.size() < kMaxPendingBroadcasts) {
        pending_broadcasts_.push_back(std::move(stream));
      } else if (broadcast) {
        // Nobody listens: drain it so the sender is not held back.
        asio::co_spawn(
            executor_,
            [stream]() -> asio::awaitable<void> {
              while ((co_await stream->read()).size > 0) {
              }
            },
            asio::detached);
      } else {
        stream->reset(Status::refused, "this peer does not serve requests");
      }
      return;
    }
    case FrameType::data: {
      auto stream = find(h.stream);
      if (!stream) return;
      stream->recv_allowed_ -= static_cast<std::int64_t>(frame.payload.size());
      stream->push(link_->reader.share(frame.payload), (h.flags & wire::flags::kFin) != 0);
      return;
    }
    case FrameType::end: {
      auto stream = find(h.stream);
      if (!stream) return;
      wire::End end;
      if (wire::parse_end(frame.payload, end) != wire::DecodeError::none) return;
      stream->finish_inbound(
          Outcome{end.status, end.app_code, std::move(end.message), end.delivered, end.dropped});
      return;
    }
    case FrameType::reset: {
      auto stream = find(h.stream);
      if (!stream) return;
      wire::Reset reset;
      if (wire::parse_reset(frame.payload, reset) != wire::DecodeError::none) return;
      stream->terminate(Outcome{reset.status, reset.app_code, std::move(reset.message), 0, 0});
      return;
    }
    case FrameType::window: {
      auto stream = find(h.stream);
      std::uint32_t increment = 0;
      if (!stream || wire::parse_window(frame.payload, increment) != wire::DecodeError::none) {
        return;
      }
      stream->send_credit_ += increment;
      stream->notify_writers();
      return;
    }
    case FrameType::message:
      receive_message(frame);
      return;
    case FrameType::message_report:
      receive_message_report(frame);
      return;
    case FrameType::hello:
    case FrameType::welcome:
      // Handshake frames: the relay sends WELCOME once, before the read loop starts, and never
      // HELLO. A late one changes nothing.
      return;
  }
  // Not reached: the frame reader rejects unknown types (a protocol error that ends the link)
  // before a frame is dispatched. Should one get here, it is ignored like a late WELCOME.
}

std::shared_ptr<StreamImpl> ConnectionImpl::open_request(Target target,
                                                         const StreamOptions& options) {
  // The id is taken when OPEN is sent, so ids go out in increasing order whatever the order in
  // which streams are first written.
  auto stream = make_stream(Stream::Kind::outgoing_request, 0);
  stream->peer_ = target.peer;
  stream->open_.kind = target.peer.is_nil() ? wire::StreamKind::to_any : wire::StreamKind::to_peer;
  stream->open_.peer = target.peer;
  stream->open_.deadline_ms = static_cast<std::uint32_t>(options.deadline.count());
  stream->open_.idle_ms = static_cast<std::uint32_t>(options.idle_timeout.count());
  stream->open_.metadata = options.metadata;
  stream->open_sent_ = false;
  stream->opened_at_ = std::chrono::steady_clock::now();
  stream->send_credit_ = relay_window_;
  stream->recv_allowed_ = options_.stream_window;
  if (closed_ || (link_->going_away && !options_.reconnect.enabled)) {
    stream->terminate(Outcome{closed_ ? Status::peer_gone : Status::refused, 0,
                              closed_ ? "connection closed" : "relay is draining (GOAWAY)"});
    return stream;
  }
  // Forget entries that have been opened or have ended, so the list stays as short as the
  // number of streams opened but not yet written.
  if (unopened_.size() >= 64) {
    std::erase_if(unopened_, [](const std::weak_ptr<StreamImpl>& weak) {
      const auto pending = weak.lock();
      return !pending || pending->open_sent_ || pending->terminal_;
    });
  }
  unopened_.push_back(stream);
  return stream;
}

std::shared_ptr<StreamImpl> ConnectionImpl::open_broadcast(const StreamOptions& options) {
  auto stream = open_request(Target{}, options);
  stream->kind_ = Stream::Kind::outgoing_broadcast;
  stream->open_.kind = wire::StreamKind::broadcast;
  stream->recv_done_ = true;
  return stream;
}

void ConnectionImpl::fail_all(const Outcome& outcome) {
  if (closed_) return;
  closed_ = true;
  state_ = ConnectionState::closed;
  close_outcome_ = outcome;
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, stream] : streams) stream->terminate(outcome);
  auto unopened = std::move(unopened_);
  unopened_.clear();
  for (auto& weak : unopened) {
    if (auto stream = weak.lock()) stream->terminate(outcome);
  }
  auto& link = *link_;
  link.dead = true;
  link.close();
  link.wake.cancel();
  link.keepalive_timer.cancel();
  backoff_timer_.cancel();
  attempt_timer_.cancel();
  linked_signal_.cancel();
  closed_signal_.cancel();
  ConnectionEvent event;
  event.kind = ConnectionEvent::Kind::closed;
  event.state = ConnectionState::closed;
  event.reason = outcome;
  emit(event);
  if (on_closed_) {
    auto handler = std::move(on_closed_);
    handler(outcome);
  }
  // Callbacks may hold the connection; release them so it can be freed.
  on_presence_ = nullptr;
  on_request_ = nullptr;
  on_broadcast_ = nullptr;
  on_message_ = nullptr;
  on_event_ = nullptr;
  pending_requests_.clear();
  pending_broadcasts_.clear();
  pending_messages_.clear();
  messages_link_lost();
}

void ConnectionImpl::close() { fail_all(Outcome{Status::cancelled, 0, "connection closed"}); }

asio::awaitable<Outcome> ConnectionImpl::wait_closed() {
  auto self = shared_from_this();
  // The signal never expires; cancel() wakes every waiter at once.
  while (!closed_) co_await closed_signal_.async_wait(kUseTuple);
  co_return close_outcome_;
}

}  // namespace switchboard::client
