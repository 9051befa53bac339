// libFuzzer target for shared connections (protocol versions 4 and 5): one MuxConnection whose
// lanes get real Sessions on one registry, driven over an in-memory pipe on one io_context.
// Whatever the client sends, the relay must write only well-formed MUX, LANE and ERROR frames
// (nothing on a lane after its FIN, nothing after an ERROR), whole inner frames on every lane it
// ended, and leave no session, lane or channel behind once the client has gone (ASan/LSan: no
// leak).
//
// Input: one flags byte, then chunks of [length u8][bytes] written to the shared connection.
//   flags bit 0: the client starts with a valid MUX
//   flags bit 1: then opens lane 1 with a valid HELLO (channel C, accepts requests)
//   flags bit 2: then opens lane 2 with a valid HELLO (channel C)
#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "fuzz_check.hpp"
#include "native/mux_connection.hpp"
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

Buffer lane_bytes(std::uint32_t lane, const Buffer& bytes) {
  Buffer out(wire::kHeaderSize);
  wire::encode_lane_header(lane, static_cast<std::uint32_t>(bytes.size()), false, out.data());
  out.insert(out.end(), bytes.begin(), bytes.end());
  return out;
}

Buffer valid_hello(bool accept_requests) {
  Buffer out;
  wire::append_hello(out, seeds::hello(accept_requests));
  return out;
}

class SharedClient {
public:
  SharedClient(asio::io_context& io, RelayContext& context) {
    auto [relay_end, client_end] = make_memory_pipe(asio::make_strand(io));
    end_ = std::move(client_end);
    auto executor = relay_end->get_executor();
    auto shared = std::make_shared<MuxConnection>(
        std::move(relay_end), context,
        [&context, this](std::unique_ptr<Transport> lane) {
          std::make_shared<Session>(std::move(lane), context, ++sessions_)->start();
        },
        [] { return false; }, std::chrono::steady_clock::now(), 2);
    shared->start();
    read();
  }

  void write(Buffer bytes) {
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

  void check_received() const {
    wire::Bytes rest = received_;
    bool welcomed = false;
    bool failed = false;
    std::map<std::uint32_t, Buffer> lanes;
    std::map<std::uint32_t, bool> ended;
    while (rest.size() >= wire::kHeaderSize) {
      SWITCHBOARD_FUZZ_CHECK(!failed);  // nothing after the connection's ERROR
      const auto header = wire::read_header(rest.data());
      SWITCHBOARD_FUZZ_CHECK(rest.size() >= wire::kHeaderSize + header.length);
      const auto payload = rest.subspan(wire::kHeaderSize, header.length);
      const auto type = static_cast<std::uint8_t>(header.type);
      if (type == wire::kMuxFrameType) {
        SWITCHBOARD_FUZZ_CHECK(!welcomed);
        wire::MuxWelcome welcome;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_mux_welcome(payload, welcome) ==
                               wire::DecodeError::none);
        welcomed = true;
      } else if (type == wire::kLaneFrameType) {
        SWITCHBOARD_FUZZ_CHECK(welcomed);
        SWITCHBOARD_FUZZ_CHECK(header.stream != 0 && header.length <= wire::kMaxLaneChunk);
        SWITCHBOARD_FUZZ_CHECK(!ended[header.stream]);
        auto& bytes = lanes[header.stream];
        bytes.insert(bytes.end(), payload.begin(), payload.end());
        if ((header.flags & wire::kLaneFin) != 0) ended[header.stream] = true;
      } else {
        SWITCHBOARD_FUZZ_CHECK(type == static_cast<std::uint8_t>(wire::FrameType::error));
        SWITCHBOARD_FUZZ_CHECK(header.stream == 0);
        wire::Error error;
        SWITCHBOARD_FUZZ_CHECK(wire::parse_error(payload, error) == wire::DecodeError::none);
        failed = true;
      }
      rest = rest.subspan(wire::kHeaderSize + header.length);
    }
    SWITCHBOARD_FUZZ_CHECK(rest.empty());
    // A lane the relay ended carries whole frames only.
    for (const auto& [lane, bytes] : lanes) {
      if (!ended[lane]) continue;
      wire::Bytes frames = bytes;
      while (!frames.empty()) {
        const auto decoded = wire::decode_frame(frames, UINT32_MAX);
        SWITCHBOARD_FUZZ_CHECK(decoded.kind == wire::DecodeResult::Kind::frame);
        frames = frames.subspan(decoded.consumed);
      }
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

  std::unique_ptr<Transport> end_;
  std::array<std::uint8_t, 4096> chunk_{};
  Buffer received_;
  bool eof_ = false;
  std::uint64_t sessions_ = 0;
};

void settle(asio::io_context& io) {
  for (int round = 0; round < 1000; ++round) {
    io.restart();
    if (io.poll() == 0) return;
  }
  SWITCHBOARD_FUZZ_CHECK(false && "the relay never went idle");
}

Limits fuzz_limits() {
  Limits limits;
  limits.max_frame = 4096;
  limits.stream_window = 8192;
  limits.max_streams_per_connection = 8;
  limits.read_block_size = 4096;
  limits.max_connection_buffer = 1 << 20;
  limits.max_lanes_per_connection = 4;
  return limits;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t flags = data[0];
  {
    asio::io_context io;
    RelayContext context(fuzz_limits());
    SharedClient client(io, context);
    if (flags & 1) {
      Buffer mux;
      wire::append_mux_hello(mux, wire::MuxHello{wire::kMuxVersion, seeds::channel()});
      client.write(std::move(mux));
      if (flags & 2) client.write(lane_bytes(1, valid_hello(true)));
      if (flags & 4) client.write(lane_bytes(2, valid_hello(false)));
    }
    settle(io);

    std::size_t pos = 1;
    while (pos + 1 <= size) {
      const std::size_t length = std::min<std::size_t>(data[pos], size - pos - 1);
      pos += 1;
      client.write(Buffer(data + pos, data + pos + length));
      pos += length;
      settle(io);
    }

    client.shutdown_send();
    settle(io);
    client.close();
    settle(io);

    client.check_received();
    SWITCHBOARD_FUZZ_CHECK(client.eof());
    SWITCHBOARD_FUZZ_CHECK(context.counters.native.connections_open.load() == 0);
    const auto stats = context.registry.stats();
    SWITCHBOARD_FUZZ_CHECK(stats.channels == 0 && stats.peers == 0);
  }
  return 0;
}
