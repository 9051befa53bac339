// Soak raw faults: each one opens its own loopback connection, misbehaves, and checks that the
// relay closes it in time without disturbing anyone else.
#include "soak/raw_faults.hpp"

#include <fmt/format.h>

#include <thread>

#include "soak/body.hpp"
#include "support/raw_peer.hpp"
#include "switchboard/wire/codec.hpp"

namespace switchboard::soak {
namespace {

using std::chrono::milliseconds;

std::vector<std::uint8_t> hello_bytes(const Uuid& channel) {
  wire::Hello hello;
  hello.channel = channel;
  hello.max_frame = 1 << 20;
  hello.stream_window = 1 << 20;
  std::vector<std::uint8_t> bytes;
  wire::append_hello(bytes, hello);
  return bytes;
}

void expect_closed(test::RawPeer& peer, milliseconds within, const std::string& what,
                   std::vector<std::string>& violations) {
  if (!peer.expect_closed(within)) {
    violations.push_back(
        fmt::format("relay kept a {} connection open for {} ms", what, within.count()));
  }
}

// A peer joins, opens a request to any responder with a body it never completes, sends half of
// a DATA frame and resets the connection: the responder must see the stream fail.
void aborted_request(const RawFaultContext& context, std::mt19937_64& rng) {
  test::RawPeer peer(context.port);
  peer.join(context.channels[rng() % context.channels.size()]);
  const auto sid = to_hex(rng());
  wire::Open open;
  open.kind = wire::StreamKind::to_any;
  open.deadline_ms = 15'000;
  open.metadata = {{"sid", sid}, {"sum", to_hex(rng())}, {"len", "1048576"}};
  std::vector<std::uint8_t> body(1000);
  fill_body(body, rng());
  std::vector<std::uint8_t> bytes;
  wire::append_open(bytes, 1, open, body, false);
  context.ledger->apply(fmt::format("OS {} raw 15000 raw-peer", sid), 0);
  const auto start = std::chrono::steady_clock::now();
  peer.send(bytes);
  // Let the relay route it so that a responder is really mid-stream when the RST comes.
  std::this_thread::sleep_for(milliseconds(50 + rng() % 200));
  std::vector<std::uint8_t> data;
  wire::append_data(data, 1, body, false);
  data.resize(data.size() / 2);
  peer.send(data);
  peer.abort();
  const auto elapsed =
      std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
  context.ledger->apply(
      fmt::format("ES {} {} 0 0 {} 0 0", sid, static_cast<int>(Status::cancelled), elapsed.count()),
      0);
}

}  // namespace

std::string run_raw_fault(const RawFaultContext& context, std::mt19937_64& rng,
                          std::vector<std::string>& violations) {
  const auto limit = context.handshake_timeout + milliseconds(3000);
  const auto channel = context.channels[rng() % context.channels.size()];
  switch (rng() % 5) {
    case 0: {
      test::RawPeer peer(context.port);
      std::vector<std::uint8_t> garbage(1 + rng() % 512);
      fill_body(garbage, rng());
      peer.send(garbage);
      expect_closed(peer, limit, "garbage", violations);
      return "raw_garbage";
    }
    case 1: {
      test::RawPeer peer(context.port);
      auto hello = hello_bytes(channel);
      hello.resize(1 + rng() % (hello.size() - 1));
      peer.send(hello);
      if (rng() % 2 == 0) {
        peer.abort();
        return "raw_half_hello_rst";
      }
      expect_closed(peer, limit, "half-HELLO", violations);
      return "raw_half_hello_timeout";
    }
    case 2: {
      test::RawPeer peer(context.port);
      std::vector<std::uint8_t> header(wire::kHeaderSize);
      wire::encode_header(wire::FrameHeader{wire::FrameType::hello, 0, 0, 0xFFFFFFF0U},
                          header.data());
      peer.send(header);
      expect_closed(peer, limit, "oversized-header", violations);
      return "raw_oversized_header";
    }
    case 3: {
      // Slowloris: one byte of a HELLO every 200 ms; the handshake timeout must end it.
      test::RawPeer peer(context.port);
      const auto hello = hello_bytes(channel);
      const auto deadline = std::chrono::steady_clock::now() + limit;
      bool closed = false;
      for (std::size_t i = 0; i + 1 < hello.size() && std::chrono::steady_clock::now() < deadline;
           ++i) {
        peer.send(wire::Bytes(hello.data() + i, 1));
        if (peer.expect_closed(milliseconds(200))) {
          closed = true;
          break;
        }
      }
      if (!closed) expect_closed(peer, milliseconds(1000), "slowloris", violations);
      return "raw_slowloris";
    }
    default:
      aborted_request(context, rng);
      return "raw_aborted_request";
  }
}

}  // namespace switchboard::soak
