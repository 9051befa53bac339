// The native door's accepts, placement by channel, session tracking and stream-aware drain.
#include "native/native_door.hpp"

#include <array>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <span>
#include <vector>

#include "native/mux_connection.hpp"
#include "native/session.hpp"
#include "switchboard/wire/codec.hpp"

namespace switchboard::core::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

std::unique_ptr<transport::TlsContextHolder> make_tls(const transport::TlsConfig& config) {
  if (!config.native) return nullptr;
  return std::make_unique<transport::TlsContextHolder>(config);
}

}  // namespace

NativeDoor::NativeDoor(RelayContext& context, transport::IoContexts& io,
                       transport::Admission& admission, NativeDoorConfig config)
    : context_(context),
      io_(io),
      admission_(admission),
      config_(std::move(config)),
      listener_(io, admission, context.limits, "native", context.counters.native,
                transport::parse_endpoint(config_.listen), make_tls(config_.tls)) {}

NativeDoor::~NativeDoor() = default;

void NativeDoor::start() {
  transport::Listener::Handlers handlers;
  // The refusal is one non-blocking write of an ERROR frame, so a client that does not read
  // cannot hold up the accept loop.
  handlers.refuse = [](tcp::socket& refused, std::string_view why) {
    boost::system::error_code ignored;
    std::vector<std::uint8_t> refusal;
    wire::append_error(refusal, wire::Error{Status::resource_exhausted, std::string(why)});
    refused.non_blocking(true, ignored);
    refused.write_some(asio::buffer(refusal), ignored);
    refused.close(ignored);
  };
  // Every plaintext connection's first bytes are peeked: they tell a shared connection (MUX)
  // from a single one (HELLO), and name the channel to place it by.
  handlers.accepted = [this](tcp::socket socket, const tcp::endpoint& remote) {
    place_session(std::move(socket), remote);
  };
  // A TLS connection stays on the thread its handshake ran on (a TLS session cannot move), so
  // it is not placed by channel, and a shared one tells its client there is one shard.
  handlers.secured = [this](std::unique_ptr<transport::Transport> transport,
                            std::chrono::steady_clock::time_point accepted_at) {
    if (wire::is_mux_prefix(transport->read_ahead())) {
      start_shared(std::move(transport), accepted_at, 1);
    } else {
      start_session(std::move(transport), accepted_at);
    }
  };
  listener_.start(std::move(handlers));
}

std::uint16_t NativeDoor::placement_shards() const {
  return config_.placement == "channel" && io_.size() > 1 ? static_cast<std::uint16_t>(io_.size())
                                                          : std::uint16_t{1};
}

asio::io_context& NativeDoor::channel_context(const Uuid& channel) {
  // The rule is the protocol's (version 5 clients put each lane on its channel's shard).
  return io_.at(wire::placement_shard(channel, static_cast<std::uint32_t>(io_.size())));
}

struct NativeDoor::PendingPlacement {
  PendingPlacement(tcp::socket s, const tcp::endpoint& r, asio::io_context& io)
      : socket(std::move(s)), remote(r), deadline(io) {}
  tcp::socket socket;
  tcp::endpoint remote;
  asio::steady_timer deadline;
  std::chrono::steady_clock::time_point accepted_at = std::chrono::steady_clock::now();
  bool timed_out = false;
};

// A session hands frames to the other sessions of its channel; on one thread that is a queue
// push, across threads a wake-up each way. So a plaintext connection waits for its first bytes
// here, the channel is peeked from its HELLO (the session reads the HELLO again for real), and
// the socket moves to that channel's thread. A client that sends nothing, or something other
// than a HELLO, gets its session anyway, which reports the error.
void NativeDoor::place_session(tcp::socket socket, const tcp::endpoint& remote) {
  // A client writes its HELLO right after connecting, so it is usually here by the time the
  // connection is accepted: placed at once, without a wait (and the reactor's re-arm for it).
  boost::system::error_code peek_error;
  socket.non_blocking(true, peek_error);
  std::array<std::uint8_t, wire::kHelloChannelPrefixSize> head{};
  if (!peek_error) {
    const auto n = socket.receive(asio::buffer(head), tcp::socket::message_peek, peek_error);
    if (peek_error != asio::error::would_block) {
      place_by_hello(std::move(socket), remote, std::span(head.data(), peek_error ? 0 : n),
                     std::chrono::steady_clock::now());
      return;
    }
  }
  const auto key = next_placement_++;
  auto pending = std::make_shared<PendingPlacement>(std::move(socket), remote, io_.main());
  placements_.emplace(key, pending);
  pending->deadline.expires_at(pending->accepted_at + context_.limits.handshake_timeout);
  pending->deadline.async_wait([pending](boost::system::error_code ec) {
    if (ec) return;
    pending->timed_out = true;
    pending->socket.cancel(ec);
  });
  pending->socket.async_wait(
      tcp::socket::wait_read, [this, key, pending](boost::system::error_code ec) {
        pending->deadline.cancel();
        placements_.erase(key);
        // Closed by a drain: the relay takes no new sessions.
        if (!pending->socket.is_open() || (ec && !pending->timed_out)) return;
        std::array<std::uint8_t, wire::kHelloChannelPrefixSize> first_bytes{};
        boost::system::error_code error;
        const auto n =
            pending->socket.receive(asio::buffer(first_bytes), tcp::socket::message_peek, error);
        place_by_hello(std::move(pending->socket), pending->remote,
                       std::span(first_bytes.data(), error ? 0 : n), pending->accepted_at);
      });
}

void NativeDoor::place_by_hello(tcp::socket socket, const tcp::endpoint& remote,
                                std::span<const std::uint8_t> head,
                                std::chrono::steady_clock::time_point accepted_at) {
  asio::io_context* target = nullptr;
  if (config_.placement == "channel" && io_.size() > 1) {
    if (auto channel = wire::hello_channel_hint(head)) target = &channel_context(*channel);
  }
  if (target == nullptr) target = &io_.next();
  auto transport = transport::make_tcp_transport(
      transport::move_to(std::move(socket), *target, remote.protocol()), remote);
  if (wire::is_mux_prefix(head)) {
    start_shared(std::move(transport), accepted_at, placement_shards());
  } else {
    start_session(std::move(transport), accepted_at);
  }
}

void NativeDoor::start_shared(std::unique_ptr<transport::Transport> transport,
                              std::chrono::steady_clock::time_point accepted_at,
                              std::uint16_t shards) {
  const auto id = next_connection_id_.fetch_add(1);
  auto shared = std::make_shared<MuxConnection>(
      std::move(transport), context_,
      [this](std::unique_ptr<transport::Transport> lane) {
        start_session(std::move(lane), std::chrono::steady_clock::now());
      },
      [this] { return admission_.at_connection_limit(); }, accepted_at, shards);
  {
    std::lock_guard lock(sessions_mutex_);
    if (shared_.size() > 1024 && shared_.size() % 1024 == 0) {
      std::erase_if(shared_, [](const auto& entry) { return entry.second.expired(); });
    }
    shared_.emplace(id, shared);
  }
  shared->start();
}

void NativeDoor::start_session(std::unique_ptr<transport::Transport> transport,
                               std::chrono::steady_clock::time_point accepted_at) {
  const auto id = next_connection_id_.fetch_add(1);
  auto session = std::make_shared<Session>(std::move(transport), context_, id, accepted_at);
  track(session, id);
  session->start();
}

void NativeDoor::track(const std::shared_ptr<Session>& session, std::uint64_t id) {
  std::lock_guard lock(sessions_mutex_);
  if (sessions_.size() > 1024 && sessions_.size() % 1024 == 0) {
    std::erase_if(sessions_, [](const auto& entry) { return entry.second.expired(); });
  }
  sessions_.emplace(id, session);
}

void NativeDoor::drain() {
  listener_.close();
  boost::system::error_code ignored;
  for (auto& [key, pending] : placements_) pending->socket.close(ignored);
  std::vector<std::shared_ptr<Session>> live;
  std::vector<std::shared_ptr<MuxConnection>> live_shared;
  {
    std::lock_guard lock(sessions_mutex_);
    for (auto& [id, weak] : sessions_) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
    for (auto& [id, weak] : shared_) {
      if (auto shared = weak.lock()) live_shared.push_back(std::move(shared));
    }
  }
  for (auto& shared : live_shared) shared->drain();
  for (auto& session : live) session->drain();
}

DrainProgress NativeDoor::drain_progress() const {
  const auto& counters = context_.counters.native;
  return DrainProgress{counters.connections_open.load(), counters.streams_open.load()};
}

void NativeDoor::terminate() {
  std::lock_guard lock(sessions_mutex_);
  for (auto& [id, weak] : sessions_) {
    if (auto session = weak.lock()) session->terminate("relay shut down");
  }
  for (auto& [id, weak] : shared_) {
    if (auto shared = weak.lock()) shared->terminate();
  }
}

// Sessions end on the I/O threads (terminate() reaches them there): nothing here waits.
void NativeDoor::stop(std::chrono::system_clock::time_point /*deadline*/) {}

std::int64_t NativeDoor::open_connections() const {
  return context_.counters.native.connections_open.load(std::memory_order_relaxed) +
         static_cast<std::int64_t>(placements_.size());
}

bool NativeDoor::reload_tls() {
  auto* tls = listener_.tls();
  return tls != nullptr && tls->reload();
}

DoorDescription NativeDoor::describe() const {
  const auto& counters = context_.counters.native;
  DoorDescription description;
  description.name = "native";
  description.endpoint = listener_.endpoint();
  description.tls = listener_.tls() != nullptr;
  description.counters = &counters;
  description.open_key = "sessions";
  description.total_key = "native_connections";
  description.bytes_in = counters.bytes_in.load();
  description.bytes_out = counters.bytes_out.load();
  return description;
}

// Every native metric comes from the door's DoorCounters.
void NativeDoor::write_metrics(MetricsWriter& /*out*/) const {}

}  // namespace switchboard::core::net
