// switchboard ping: a relay liveness probe (HELLO handshake, then one PING/PONG, timed).
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "commands.hpp"
#include "switchboard/wire/codec.hpp"

namespace switchboard::cli {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// Enough for a WELCOME, a PRESENCE snapshot of a fresh channel and control frames.
constexpr std::uint32_t kPingMaxFrame = 64 * 1024;
constexpr std::uint32_t kPingStreamWindow = 64 * 1024;

struct PingResult {
  bool done = false;
  std::string failure;       ///< empty on success
  bool unreachable = false;  ///< the name did not resolve or TCP did not connect
  std::string stage = "resolving";
  double connect_ms = 0;
  double handshake_ms = 0;
  double round_trip_ms = 0;
  std::string redirected_to;  ///< a cluster relay that serves not the channel: where it is
};

double elapsed_ms(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
}

/// Reads from `socket` until one whole frame is at the front of `buffer`; returns it (its
/// payload views `buffer`) or an empty optional with `failure` set.
asio::awaitable<std::optional<wire::DecodeResult>> read_frame(tcp::socket& socket,
                                                              std::vector<std::uint8_t>& buffer,
                                                              std::string& failure) {
  for (;;) {
    auto decoded = wire::decode_frame(buffer, kPingMaxFrame);
    if (decoded.kind == wire::DecodeResult::Kind::frame) co_return decoded;
    if (decoded.kind == wire::DecodeResult::Kind::error) {
      failure = "the relay sent a bad frame (" +
                std::string(wire::decode_error_name(decoded.error)) + ")";
      co_return std::nullopt;
    }
    std::uint8_t chunk[4096];
    auto [error, n] =
        co_await socket.async_read_some(asio::buffer(chunk), asio::as_tuple(asio::use_awaitable));
    if (error) {
      failure = error == asio::error::eof ? "the relay closed the connection"
                                          : "read failed: " + error.message();
      co_return std::nullopt;
    }
    buffer.insert(buffer.end(), chunk, chunk + n);
  }
}

std::string describe_error_frame(wire::Bytes payload) {
  wire::Error error;
  if (wire::parse_error(payload, error) != wire::DecodeError::none) return "a malformed ERROR";
  return std::string(status_name(error.status)) + ": " + error.message;
}

asio::awaitable<void> ping_once(tcp::socket& socket, const ServerAddress& address,
                                const wire::Hello& hello, PingResult& result) {
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  auto [resolve_error, endpoints] = co_await resolver.async_resolve(
      address.host, std::to_string(address.port), asio::as_tuple(asio::use_awaitable));
  if (resolve_error) {
    result.failure = "cannot resolve " + address.host + ": " + resolve_error.message();
    result.unreachable = true;
    co_return;
  }

  result.stage = "connecting";
  const auto connect_start = Clock::now();
  auto [connect_error, endpoint] =
      co_await asio::async_connect(socket, endpoints, asio::as_tuple(asio::use_awaitable));
  if (connect_error) {
    result.failure = "cannot connect to " + address.host + ":" + std::to_string(address.port) +
                     ": " + connect_error.message();
    result.unreachable = true;
    co_return;
  }
  result.connect_ms = elapsed_ms(connect_start);
  socket.set_option(tcp::no_delay(true));

  result.stage = "waiting for WELCOME";
  const auto handshake_start = Clock::now();
  std::vector<std::uint8_t> out;
  wire::append_hello(out, hello);
  if (auto [error, n] = co_await asio::async_write(socket, asio::buffer(out),
                                                   asio::as_tuple(asio::use_awaitable));
      error) {
    result.failure = "cannot send HELLO: " + error.message();
    co_return;
  }
  std::vector<std::uint8_t> in;
  for (bool welcomed = false; !welcomed;) {
    auto frame = co_await read_frame(socket, in, result.failure);
    if (!frame) co_return;
    if (frame->header.type == wire::FrameType::error) {
      result.failure = "the relay refused the handshake: " + describe_error_frame(frame->payload);
      co_return;
    }
    if (frame->header.type == wire::FrameType::redirect) {
      // A cluster relay that does not serve the channel answers the handshake with where it
      // is: it is alive, and this is the round trip a probe of it gets.
      wire::Redirect redirect;
      if (wire::parse_redirect(frame->payload, redirect) != wire::DecodeError::none) {
        result.failure = "the relay sent a malformed REDIRECT";
        co_return;
      }
      result.handshake_ms = elapsed_ms(handshake_start);
      result.round_trip_ms = result.handshake_ms;
      result.redirected_to = redirect.address;
      result.done = true;
      co_return;
    }
    welcomed = frame->header.type == wire::FrameType::welcome;
    in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(frame->consumed));
  }
  result.handshake_ms = elapsed_ms(handshake_start);

  result.stage = "waiting for PONG";
  const std::uint64_t opaque = std::random_device{}() * 0x9e3779b97f4a7c15ULL + 1;
  out.clear();
  wire::append_ping(out, opaque, false);
  const auto ping_start = Clock::now();
  if (auto [error, n] = co_await asio::async_write(socket, asio::buffer(out),
                                                   asio::as_tuple(asio::use_awaitable));
      error) {
    result.failure = "cannot send PING: " + error.message();
    co_return;
  }
  for (;;) {
    auto frame = co_await read_frame(socket, in, result.failure);
    if (!frame) co_return;
    const auto& header = frame->header;
    if (header.type == wire::FrameType::error) {
      result.failure = "the relay closed the connection: " + describe_error_frame(frame->payload);
      co_return;
    }
    if (header.type == wire::FrameType::go_away) {
      result.failure = "the relay is draining (GOAWAY)";
      co_return;
    }
    std::uint64_t echoed = 0;
    if (header.type == wire::FrameType::ping && (header.flags & wire::flags::kAck) != 0 &&
        wire::parse_ping(frame->payload, echoed) == wire::DecodeError::none && echoed == opaque) {
      result.round_trip_ms = elapsed_ms(ping_start);
      result.done = true;
      co_return;
    }
    in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(frame->consumed));
  }
}

}  // namespace

int run_ping(const GlobalOptions& global, const PingOptions& options) {
  const auto address = parse_server(global.server);
  if (!address) {
    report(check_server(global.server));
    return kExitUsage;
  }
  wire::Hello hello;
  hello.channel = options.channel.empty() ? Uuid::random()
                                          : parse_uuid(options.channel, false).value_or(Uuid{});
  if (!global.peer_id.empty()) hello.peer_id = parse_uuid(global.peer_id, true).value_or(Uuid{});
  hello.max_frame = kPingMaxFrame;
  hello.stream_window = kPingStreamWindow;
  hello.token = global.token;

  asio::io_context io;
  tcp::socket socket(io);
  PingResult result;
  asio::co_spawn(io, ping_once(socket, *address, hello, result), asio::detached);
  // Whatever is still pending when the time is up is abandoned with the io_context.
  io.run_for(std::chrono::milliseconds(options.timeout_ms));

  if (!result.done) {
    if (result.failure.empty()) {
      result.failure =
          "no answer within " + std::to_string(options.timeout_ms) + " ms (" + result.stage + ")";
    }
    if (result.unreachable) {
      report(result.failure);
      return kExitUnreachable;
    }
    report("ping " + global.server + " failed: " + result.failure);
    return kExitConnection;
  }
  if (!result.redirected_to.empty()) {
    std::printf("redirect from %s: time=%.3f ms (connect %.3f ms; the channel is served at %s)\n",
                global.server.c_str(), result.round_trip_ms, result.connect_ms,
                result.redirected_to.c_str());
    std::fflush(stdout);
    return kExitOk;
  }
  std::printf("pong from %s: time=%.3f ms (connect %.3f ms, handshake %.3f ms)\n",
              global.server.c_str(), result.round_trip_ms, result.connect_ms, result.handshake_ms);
  std::fflush(stdout);
  return kExitOk;
}

}  // namespace switchboard::cli
