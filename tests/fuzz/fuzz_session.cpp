// libFuzzer target for the native door: one or two sessions on one registry, driven over
// in-memory pipes on one io_context (no sockets, no threads). The input is cut into client ->
// relay byte chunks; after each chunk the io_context runs until idle. Whatever the clients send,
// the relay must only write well-formed frames within the client's max frame, end every session
// once its client has gone, and leave nothing behind (ASan/LSan catch leaks and cycles).
//
// Input: one flags byte, then chunks of [selector u8][length u8][bytes].
//   flags bit 0: client A starts with a valid HELLO (channel C, peer A, accepts requests)
//   flags bit 1: client B exists
//   flags bit 2: client B starts with a valid HELLO (channel C, peer B, accepts requests)
//   selector bit 0: the chunk goes to B (when it exists), else to A
#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz_check.hpp"
#include "native/session.hpp"
#include "relay/relay_context.hpp"
#include "seed_frames.hpp"
#include "switchboard/wire/codec.hpp"
#include "transport/transport.hpp"

namespace {

using namespace switchboard;
using namespace switchboard::core;
using namespace switchboard::core::net;
using namespace switchboard::core::transport;
using Buffer = std::vector<std::uint8_t>;

/// Peer ids of the two clients (seeds target them in OPEN frames).
Uuid client_id(int which) { return seeds::fixed_uuid(which == 0 ? 0xA0 : 0xB0); }

Buffer valid_hello(int which) {
  auto hello = seeds::hello(true);
  hello.peer_id = client_id(which);
  Buffer out;
  wire::append_hello(out, hello);
  return out;
}

/// The client end of one pipe: what it sent (to learn the max frame it announced) and every
/// byte the relay wrote to it.
class Client {
public:
  Client(asio::io_context& io, RelayContext& context, std::uint64_t id) {
    auto [relay_end, client_end] = make_memory_pipe(asio::make_strand(io));
    end_ = std::move(client_end);
    session_ = std::make_shared<Session>(std::move(relay_end), context, id);
    session_->start();
    session_.reset();  // the session keeps itself alive while it runs
    read();
  }

  void write(Buffer bytes) {
    sent_.insert(sent_.end(), bytes.begin(), bytes.end());
    // Spawned writes start in order on the pipe's strand, so chunks arrive in order.
    asio::co_spawn(
        end_->get_executor(),
        [this, owned = std::move(bytes)]() -> asio::awaitable<void> {
          const asio::const_buffer buffer(owned.data(), owned.size());
          co_await end_->write(std::span<const asio::const_buffer>(&buffer, 1));
        },
        asio::detached);
  }

  void shutdown_send() { end_->shutdown_send(); }
  void close() { end_->close(); }
  bool eof() const { return eof_; }

  /// The relay must respect the max frame of an accepted HELLO; before that (or when the HELLO
  /// is refused) it sends nothing larger than the protocol's minimum.
  std::uint32_t announced_max_frame() const {
    const auto first = wire::decode_frame(sent_, UINT32_MAX);
    wire::Hello hello;
    if (first.kind == wire::DecodeResult::Kind::frame &&
        first.header.type == wire::FrameType::hello &&
        wire::parse_hello(first.payload, hello) == wire::DecodeError::none) {
      return hello.max_frame;
    }
    return wire::kMinMaxFrame;
  }

  /// Every byte the relay wrote decodes into whole, well-formed frames a client may receive.
  void check_received() const {
    const std::uint32_t max_frame = announced_max_frame();
    wire::Bytes rest = received_;
    bool welcomed = false;
    while (!rest.empty()) {
      const auto result = wire::decode_frame(rest, max_frame);
      SWITCHBOARD_FUZZ_CHECK(result.kind == wire::DecodeResult::Kind::frame);
      check_frame(result.header, result.payload, welcomed);
      rest = rest.subspan(result.consumed);
    }
  }

private:
  void read() {
    asio::co_spawn(
        end_->get_executor(),
        [this]() -> asio::awaitable<void> {
          for (;;) {
            auto [ec, n] = co_await end_->read_some(asio::buffer(chunk_));
            if (ec) {
              eof_ = true;
              co_return;
            }
            received_.insert(received_.end(), chunk_.begin(),
                             chunk_.begin() + static_cast<long>(n));
          }
        },
        asio::detached);
  }

  static void check_frame(const wire::FrameHeader& header, wire::Bytes payload, bool& welcomed) {
    using wire::DecodeError;
    using wire::FrameType;
    switch (header.type) {
      case FrameType::hello:
        SWITCHBOARD_FUZZ_CHECK(false && "the relay sent a HELLO");
        return;
      case FrameType::welcome: {
        SWITCHBOARD_FUZZ_CHECK(!welcomed);
        welcomed = true;
        wire::Welcome welcome;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_welcome(payload, welcome) == DecodeError::none);
        return;
      }
      case FrameType::presence: {
        SWITCHBOARD_FUZZ_CHECK(welcomed);
        wire::Presence presence;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_presence(payload, presence) == DecodeError::none);
        return;
      }
      case FrameType::ping: {
        std::uint64_t opaque = 0;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_ping(payload, opaque) == DecodeError::none);
        return;
      }
      case FrameType::go_away: {
        wire::GoAway go_away;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_go_away(payload, go_away) == DecodeError::none);
        return;
      }
      case FrameType::error: {
        wire::Error error;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_error(payload, error) == DecodeError::none);
        SWITCHBOARD_FUZZ_CHECK(error.status != Status::ok);
        return;
      }
      case FrameType::redirect:
        SWITCHBOARD_FUZZ_CHECK(false && "a relay alone sent a REDIRECT");
        return;
      case FrameType::message: {
        SWITCHBOARD_FUZZ_CHECK(welcomed);
        wire::MessageHead head;
        wire::Bytes body;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_message(payload, head, body) == DecodeError::none);
        return;
      }
      case FrameType::message_report: {
        SWITCHBOARD_FUZZ_CHECK(welcomed);
        wire::MessageReport report;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_message_report(payload, report) == DecodeError::none);
        return;
      }
      case FrameType::open: {
        SWITCHBOARD_FUZZ_CHECK(welcomed);
        // Streams the relay opens use even ids (client streams are odd).
        SWITCHBOARD_FUZZ_CHECK(header.stream % 2 == 0);
        wire::Open open;
        wire::Bytes body;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_open(payload, open, body) == DecodeError::none);
        SWITCHBOARD_FUZZ_CHECK(wire::open_prefix_size(open) <= wire::kMaxOpenPrefix);
        return;
      }
      case FrameType::data:
        SWITCHBOARD_FUZZ_CHECK(welcomed);
        return;
      case FrameType::end: {
        SWITCHBOARD_FUZZ_CHECK(welcomed);
        wire::End end;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_end(payload, end) == DecodeError::none);
        return;
      }
      case FrameType::reset: {
        SWITCHBOARD_FUZZ_CHECK(welcomed);
        wire::Reset reset;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_reset(payload, reset) == DecodeError::none);
        return;
      }
      case FrameType::window: {
        SWITCHBOARD_FUZZ_CHECK(welcomed);
        std::uint32_t increment = 0;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_window(payload, increment) == DecodeError::none);
        return;
      }
    }
    SWITCHBOARD_FUZZ_CHECK(false && "the relay sent a frame of an unknown type");
  }

  std::unique_ptr<Transport> end_;
  std::shared_ptr<Session> session_;
  std::array<std::uint8_t, 4096> chunk_{};
  Buffer sent_;
  Buffer received_;
  bool eof_ = false;
};

void settle(asio::io_context& io) {
  // Bounded: a session that keeps posting work forever is a bug too.
  for (int round = 0; round < 1000; ++round) {
    io.restart();
    if (io.poll() == 0) return;
  }
  SWITCHBOARD_FUZZ_CHECK(false && "the relay never went idle");
}

Limits fuzz_limits() {
  Limits limits;
  // Small windows and frames so flow control and splitting are reached with short inputs.
  limits.max_frame = 4096;
  limits.stream_window = 8192;
  limits.max_streams_per_connection = 8;
  limits.read_block_size = 4096;
  limits.max_connection_buffer = 1 << 20;
  return limits;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Refused handshakes and protocol errors are the normal case here; logging each is noise.
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t flags = data[0];
  const bool two_clients = (flags & 2) != 0;
  {
    asio::io_context io;
    RelayContext context(fuzz_limits());
    std::vector<std::unique_ptr<Client>> clients;
    clients.push_back(std::make_unique<Client>(io, context, 1));
    if (two_clients) clients.push_back(std::make_unique<Client>(io, context, 2));
    if (flags & 1) clients[0]->write(valid_hello(0));
    if (two_clients && (flags & 4)) clients[1]->write(valid_hello(1));
    settle(io);

    std::size_t pos = 1;
    while (pos + 2 <= size) {
      const std::uint8_t selector = data[pos];
      const std::size_t length = std::min<std::size_t>(data[pos + 1], size - pos - 2);
      pos += 2;
      Client& client = *clients[two_clients ? (selector & 1) : 0];
      client.write(Buffer(data + pos, data + pos + length));
      pos += length;
      settle(io);
    }

    // The clients hang up: first politely (eof), then for good.
    for (auto& client : clients) client->shutdown_send();
    settle(io);
    for (auto& client : clients) client->close();
    settle(io);

    for (const auto& client : clients) {
      client->check_received();
      SWITCHBOARD_FUZZ_CHECK(client->eof());
    }
    // Every session ended and left the registry.
    SWITCHBOARD_FUZZ_CHECK(context.counters.native.connections_open.load() == 0);
    const auto stats = context.registry.stats();
    SWITCHBOARD_FUZZ_CHECK(stats.channels == 0 && stats.peers == 0);
  }
  return 0;
}
