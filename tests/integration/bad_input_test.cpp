// Bad input from a raw socket: each gets a clear error, and other peers are never disturbed.
#include <gtest/gtest.h>

#include "support/clients.hpp"
#include "support/raw_peer.hpp"
#include "support/relay.hpp"

namespace switchboard {
namespace {

using client::BlockingClient;
using test::options_for;
using test::RawPeer;
using namespace std::chrono_literals;

class BadInput : public ::testing::Test {
protected:
  void SetUp() override {
    responder_ = std::make_unique<BlockingClient>(options_for(relay_.port(), channel_, true));
    responder_->serve(test::echo);
    bystander_ = std::make_unique<BlockingClient>(options_for(relay_.port(), channel_));
  }

  // The error frame a misbehaving connection receives before it is closed.
  static wire::Error expect_error_and_close(RawPeer& raw) {
    auto frame = raw.expect_type(wire::FrameType::error);
    wire::Error error;
    if (!frame) {
      ADD_FAILURE() << "no ERROR frame";
      return error;
    }
    EXPECT_EQ(wire::parse_error(frame->bytes(), error), wire::DecodeError::none);
    EXPECT_TRUE(raw.expect_closed());
    return error;
  }

  static wire::Reset expect_reset(RawPeer& raw, std::uint32_t stream) {
    auto frame = raw.expect_type(wire::FrameType::reset);
    wire::Reset reset;
    if (!frame) {
      ADD_FAILURE() << "no RESET frame";
      return reset;
    }
    EXPECT_EQ(frame->header.stream, stream);
    EXPECT_EQ(wire::parse_reset(frame->bytes(), reset), wire::DecodeError::none);
    return reset;
  }

  // Other peers are untouched: a request still round-trips and nobody left the channel.
  void expect_others_unaffected() {
    std::vector<std::uint8_t> response;
    const auto outcome =
        bystander_->send(client::Target::any(), test::as_bytes("still fine"), response);
    EXPECT_TRUE(outcome.ok()) << outcome.describe();
    EXPECT_EQ(std::string(response.begin(), response.end()), "still fine");
    const auto peers = bystander_->peers();
    EXPECT_NE(std::find(peers.begin(), peers.end(), responder_->peer_id()), peers.end());
  }

  static std::vector<std::uint8_t> hello_bytes(const Uuid& channel) {
    wire::Hello hello;
    hello.channel = channel;
    hello.max_frame = 65536;
    hello.stream_window = 65536;
    std::vector<std::uint8_t> bytes;
    wire::append_hello(bytes, hello);
    return bytes;
  }

  test::InProcessRelay relay_{test::fast_limits()};
  Uuid channel_ = Uuid::random();
  std::unique_ptr<BlockingClient> responder_;
  std::unique_ptr<BlockingClient> bystander_;
};

TEST_F(BadInput, GarbageInsteadOfHello) {
  RawPeer raw(relay_.port());
  raw.send(test::as_bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  const auto error = expect_error_and_close(raw);
  EXPECT_EQ(error.status, Status::protocol_error);
  EXPECT_FALSE(error.message.empty());
  expect_others_unaffected();
}

TEST_F(BadInput, WrongVersionNamesTheSupportedOne) {
  RawPeer raw(relay_.port());
  auto bytes = hello_bytes(channel_);
  bytes[wire::kHeaderSize + 4] = 0;
  bytes[wire::kHeaderSize + 5] = 9;  // version 9
  raw.send(bytes);
  const auto error = expect_error_and_close(raw);
  EXPECT_EQ(error.status, Status::protocol_error);
  EXPECT_NE(error.message.find("version 9"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("speaks versions 1, 2 and 3"), std::string::npos) << error.message;
  expect_others_unaffected();
}

TEST_F(BadInput, WrongMagic) {
  RawPeer raw(relay_.port());
  auto bytes = hello_bytes(channel_);
  bytes[wire::kHeaderSize] = 'X';
  raw.send(bytes);
  EXPECT_EQ(expect_error_and_close(raw).status, Status::protocol_error);
  expect_others_unaffected();
}

TEST_F(BadInput, FrameBeforeHello) {
  RawPeer raw(relay_.port());
  std::vector<std::uint8_t> bytes;
  wire::append_data(bytes, 1, test::as_bytes("x"), false);
  raw.send(bytes);
  const auto error = expect_error_and_close(raw);
  EXPECT_NE(error.message.find("expected HELLO"), std::string::npos) << error.message;
  expect_others_unaffected();
}

TEST_F(BadInput, OversizedLengthIsRejectedFromTheHeaderAlone) {
  RawPeer raw(relay_.port());
  raw.join(channel_);
  std::uint8_t header[wire::kHeaderSize];
  wire::encode_header({wire::FrameType::data, 0, 1, 512U * 1024 * 1024}, header);
  raw.send({header, sizeof header});  // no payload follows: the relay must not wait for it
  const auto error = expect_error_and_close(raw);
  EXPECT_EQ(error.status, Status::protocol_error);
  EXPECT_NE(error.message.find("too large"), std::string::npos) << error.message;
  expect_others_unaffected();
}

TEST_F(BadInput, UnknownFrameType) {
  RawPeer raw(relay_.port());
  raw.join(channel_);
  std::uint8_t header[wire::kHeaderSize];
  wire::encode_header({static_cast<wire::FrameType>(0x7F), 0, 0, 0}, header);
  raw.send({header, sizeof header});
  EXPECT_NE(expect_error_and_close(raw).message.find("unknown frame type"), std::string::npos);
  expect_others_unaffected();
}

TEST_F(BadInput, TruncatedFrameThenCloseLeavesNoTrace) {
  {
    RawPeer raw(relay_.port());
    raw.join(channel_);
    std::vector<std::uint8_t> bytes;
    wire::Open open;
    open.kind = wire::StreamKind::to_any;
    wire::append_open(bytes, 1, open, test::as_bytes("cut short"), true);
    bytes.resize(bytes.size() - 4);
    raw.send(bytes);
  }
  ASSERT_TRUE(test::eventually([&] { return bystander_->peers().size() == 1; }));
  expect_others_unaffected();
}

TEST_F(BadInput, MalformedOpenFailsOnlyThatStream) {
  RawPeer raw(relay_.port());
  raw.join(channel_);
  std::vector<std::uint8_t> bytes;
  std::uint8_t header[wire::kHeaderSize];
  wire::encode_header({wire::FrameType::open, 0, 1, 3}, header);
  bytes.assign(header, header + sizeof header);
  bytes.insert(bytes.end(), {9, 9, 9});  // 3 bytes: far too short for an OPEN
  raw.send(bytes);
  EXPECT_EQ(expect_reset(raw, 1).status, Status::protocol_error);
  // The connection is still usable: a valid request on stream 3 is answered.
  bytes.clear();
  wire::Open open;
  open.kind = wire::StreamKind::to_any;
  wire::append_open(bytes, 3, open, test::as_bytes("ok?"), true);
  raw.send(bytes);
  auto data = raw.expect_type(wire::FrameType::data);
  ASSERT_TRUE(data);
  EXPECT_EQ(data->header.stream, 3u);
  expect_others_unaffected();
}

TEST_F(BadInput, DataForUnknownStreamIsAStreamError) {
  RawPeer raw(relay_.port());
  raw.join(channel_);
  std::vector<std::uint8_t> bytes;
  wire::append_data(bytes, 41, test::as_bytes("who?"), false);
  raw.send(bytes);
  const auto reset = expect_reset(raw, 41);
  EXPECT_EQ(reset.status, Status::protocol_error);
  EXPECT_NE(reset.message.find("unknown stream"), std::string::npos) << reset.message;
  EXPECT_TRUE(raw.expect_nothing(50ms));  // still connected
  expect_others_unaffected();
}

TEST_F(BadInput, DataBeyondCreditResetsTheStream) {
  // A responder that grants 4 KiB and never reads, so the relay returns no credit meanwhile.
  const auto quiet_channel = Uuid::random();
  RawPeer stalled(relay_.port());
  stalled.join(quiet_channel, true, 4096);
  RawPeer raw(relay_.port());
  raw.join(quiet_channel);
  std::vector<std::uint8_t> bytes;
  wire::Open open;
  open.kind = wire::StreamKind::to_any;
  wire::append_open(bytes, 1, open, {}, false);
  raw.send(bytes);
  // One chunk more than the relay's window, without waiting for WINDOW.
  std::vector<std::uint8_t> chunk(64 * 1024, 0xAB);
  const auto chunks = test::fast_limits().stream_window / chunk.size() + 1;
  for (std::size_t i = 0; i < chunks; ++i) {
    bytes.clear();
    wire::append_data(bytes, 1, chunk, false);
    raw.send(bytes);
  }
  const auto reset = expect_reset(raw, 1);
  EXPECT_EQ(reset.status, Status::protocol_error);
  EXPECT_NE(reset.message.find("window"), std::string::npos) << reset.message;
  expect_others_unaffected();
}

TEST_F(BadInput, DecreasingStreamIdClosesTheConnection) {
  RawPeer raw(relay_.port());
  raw.join(channel_);
  std::vector<std::uint8_t> bytes;
  wire::Open open;
  open.kind = wire::StreamKind::broadcast;
  wire::append_open(bytes, 5, open, {}, true);
  wire::append_open(bytes, 3, open, {}, true);
  raw.send(bytes);
  EXPECT_EQ(expect_error_and_close(raw).status, Status::protocol_error);
  expect_others_unaffected();
}

TEST_F(BadInput, SkippedStreamIdClosesTheConnection) {
  // Ids are consecutive: a skipped one would leave ids that are neither open nor closed.
  RawPeer raw(relay_.port());
  raw.join(channel_);
  std::vector<std::uint8_t> bytes;
  wire::Open open;
  open.kind = wire::StreamKind::broadcast;
  wire::append_open(bytes, 1, open, {}, true);
  wire::append_open(bytes, 5, open, {}, true);
  raw.send(bytes);
  const auto error = expect_error_and_close(raw);
  EXPECT_EQ(error.status, Status::protocol_error);
  EXPECT_NE(error.message.find("expected 3"), std::string::npos) << error.message;
  expect_others_unaffected();
}

TEST_F(BadInput, OpenNamesAPeerExactlyWhenAddressedToOne) {
  RawPeer raw(relay_.port());
  raw.join(channel_);
  struct Case {
    wire::StreamKind kind;
    Uuid peer;
  };
  const Case cases[] = {{wire::StreamKind::to_any, responder_->peer_id()},
                        {wire::StreamKind::broadcast, responder_->peer_id()},
                        {wire::StreamKind::to_peer, Uuid{}}};
  std::uint32_t id = 1;
  for (const auto& c : cases) {
    std::vector<std::uint8_t> bytes;
    wire::Open open;
    open.kind = c.kind;
    open.peer = c.peer;
    wire::append_open(bytes, id, open, test::as_bytes("x"), true);
    raw.send(bytes);
    const auto reset = expect_reset(raw, id);
    EXPECT_EQ(reset.status, Status::protocol_error)
        << "kind " << static_cast<int>(c.kind) << ": " << reset.message;
    EXPECT_NE(reset.message.find("malformed OPEN"), std::string::npos) << reset.message;
    id += 2;
  }
  EXPECT_TRUE(raw.expect_nothing(50ms));  // still connected
  expect_others_unaffected();
}

TEST_F(BadInput, HelloWindowAboveTheHttp2BoundIsRefused) {
  for (const std::uint32_t window : {wire::kMaxWindow + 1, std::uint32_t{0xffffffff}}) {
    RawPeer raw(relay_.port());
    wire::Hello hello;
    hello.channel = channel_;
    hello.max_frame = 65536;
    hello.stream_window = window;
    std::vector<std::uint8_t> bytes;
    wire::append_hello(bytes, hello);
    raw.send(bytes);
    EXPECT_EQ(expect_error_and_close(raw).status, Status::protocol_error) << window;
  }
  RawPeer largest(relay_.port());
  largest.join(channel_, false, wire::kMaxWindow);  // the bound itself is a valid window
  expect_others_unaffected();
}

TEST_F(BadInput, WindowAboveTheHttp2BoundResetsTheStream) {
  RawPeer raw(relay_.port());
  const auto raw_id = raw.join(channel_, true, 65536);
  auto stream = bystander_->request(client::Target::to(raw_id));
  ASSERT_TRUE(stream.write(test::as_bytes("x")).ok());
  auto open = raw.expect_type(wire::FrameType::open);
  ASSERT_TRUE(open);
  const auto id = open->header.stream;
  // The relay holds 65535 bytes of credit (65536 less the body byte): up to the bound is fine.
  std::vector<std::uint8_t> bytes;
  wire::append_window(bytes, id, wire::kMaxWindow - 65535);
  raw.send(bytes);
  EXPECT_TRUE(raw.expect_nothing(50ms));
  bytes.clear();
  wire::append_window(bytes, id, 1);
  raw.send(bytes);
  const auto reset = expect_reset(raw, id);
  EXPECT_EQ(reset.status, Status::protocol_error);
  EXPECT_NE(reset.message.find("overflow"), std::string::npos) << reset.message;
  EXPECT_EQ(stream.result().status, Status::protocol_error);
  expect_others_unaffected();
}

TEST_F(BadInput, NoHandshakeWithinTheLimit) {
  RawPeer raw(relay_.port());
  const auto start = std::chrono::steady_clock::now();
  const auto error = expect_error_and_close(raw);
  EXPECT_NE(error.message.find("handshake timeout"), std::string::npos) << error.message;
  EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
  expect_others_unaffected();
}

TEST_F(BadInput, SlowlorisHelloIsCutByTheHandshakeTimeout) {
  RawPeer raw(relay_.port());
  const auto bytes = hello_bytes(channel_);
  // One byte every 50 ms: the whole HELLO would take seconds, the limit is 300 ms.
  bool closed = false;
  for (std::size_t i = 0; i < bytes.size() && !closed; ++i) {
    raw.send({bytes.data() + i, 1});
    closed = !raw.expect_nothing(50ms);
  }
  EXPECT_TRUE(closed);
  expect_others_unaffected();
}

TEST_F(BadInput, EveryByteSplitOfAValidStreamIsAccepted) {
  // A whole conversation delivered one byte per write still works.
  RawPeer raw(relay_.port());
  std::vector<std::uint8_t> bytes = hello_bytes(channel_);
  wire::Open open;
  open.kind = wire::StreamKind::to_any;
  wire::append_open(bytes, 1, open, test::as_bytes("byte"), false);
  wire::append_data(bytes, 1, test::as_bytes(" by byte"), true);
  for (auto b : bytes) raw.send({&b, 1});
  std::string echoed;
  while (echoed.size() < 12) {
    auto data = raw.expect_type(wire::FrameType::data);
    ASSERT_TRUE(data);
    echoed.append(data->payload.begin(), data->payload.end());
  }
  EXPECT_EQ(echoed, "byte by byte");
}

}  // namespace
}  // namespace switchboard
