// Per-stream credit on a gRPC Respond stream (join.stream_windows): a slow requester delays only
// its own response, and a responder that outruns one request's credit loses only that request.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "support/clients.hpp"
#include "support/relay.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard {
namespace {

namespace pb = ::switchboard::v1;
using client::BlockingClient;
using client::BlockingStream;
using test::options_for;
using namespace std::chrono_literals;

constexpr std::size_t kChunk = 64 * 1024;
constexpr std::uint64_t kSeed = 11;

// Response bytes [offset, offset + out.size()) of the pattern every responder here sends.
void response_bytes(std::span<std::uint8_t> out, std::uint64_t offset) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::uint64_t x = (offset + i) * 0x9E3779B97F4A7C15ULL + kSeed;
    out[i] = static_cast<std::uint8_t>(x >> 29);
  }
}

test::Checksum expected_sum(std::uint64_t size) {
  test::Checksum sum;
  std::vector<std::uint8_t> block(kChunk);
  for (std::uint64_t at = 0; at < size; at += kChunk) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - at));
    response_bytes({block.data(), n}, at);
    sum.update({block.data(), n});
  }
  return sum;
}

std::string meta(const wire::Metadata& metadata, const std::string& key) {
  for (const auto& [k, v] : metadata) {
    if (k == key) return v;
  }
  return {};
}

// A gRPC Respond peer written against the contract alone, as a client in another language
// would be: it joins with stream windows, grants credit for the request bytes it reads, and
// answers each request (once its body has ended) with `size` pattern bytes (metadata), waiting
// for its own request's credit only. With metadata mode=overrun it sends one chunk of one byte
// more than the request's whole credit instead. A relay that announces no windows (an older one)
// gets neither grants nor credit accounting from it: HTTP/2 backpressure paces the stream.
class WindowedResponder {
public:
  WindowedResponder(pb::SwitchboardService::Stub& stub, const Uuid& channel) {
    call_ = stub.Respond(&context_);
    pb::RespondRequest join;
    join.mutable_join()->set_channel(channel.to_string());
    join.mutable_join()->set_stream_windows(true);
    EXPECT_TRUE(call_->Write(join));
    pb::RespondResponse in;
    EXPECT_TRUE(call_->Read(&in) && in.has_joined());
    peer_id = *Uuid::parse(in.joined().peer_id());
    response_window = in.joined().response_window();
    incoming_window = in.joined().incoming_window();
    EXPECT_TRUE(call_->Read(&in) && in.has_presence());
    reader_ = std::thread([this] { read_loop(); });
  }
  ~WindowedResponder() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    context_.TryCancel();
    reader_.join();
    for (auto& handler : handlers_) handler.join();
    (void)call_->Finish();
  }

  /// Response bytes the responder has written for the request named `name` (metadata).
  std::uint64_t written(const std::string& name) {
    std::lock_guard lock(mutex_);
    return written_[name];
  }
  /// The status of the IncomingReset the responder got for `name`'s request, once it has one.
  std::optional<pb::Status> reset_of(const std::string& name, std::chrono::milliseconds wait) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, wait, [&] { return resets_.count(name) > 0; });
    auto it = resets_.find(name);
    if (it == resets_.end()) return std::nullopt;
    return it->second;
  }

  Uuid peer_id;
  std::uint32_t response_window = 0;
  std::uint32_t incoming_window = 0;

private:
  struct Request {
    wire::Metadata metadata;
    std::int64_t credit = 0;
    bool reset = false;
  };

  void read_loop() {
    pb::RespondResponse in;
    while (call_->Read(&in)) {
      std::uint64_t id = 0;
      std::size_t bytes = 0;
      bool last = false;
      if (in.has_start()) {
        id = in.start().id();
        bytes = in.start().data().size();
        last = in.start().last();
        std::lock_guard lock(mutex_);
        auto& request = requests_[id];
        for (const auto& [k, v] : in.start().metadata()) request.metadata.emplace_back(k, v);
        request.credit = response_window;
      } else if (in.has_chunk()) {
        id = in.chunk().id();
        bytes = in.chunk().data().size();
        last = in.chunk().last();
      } else if (in.has_window()) {
        std::lock_guard lock(mutex_);
        requests_[in.window().id()].credit += in.window().bytes();
        changed_.notify_all();
        continue;
      } else if (in.has_reset()) {
        std::lock_guard lock(mutex_);
        auto& request = requests_[in.reset().id()];
        request.reset = true;
        resets_[meta(request.metadata, "name")] = in.reset().status();
        changed_.notify_all();
        continue;
      } else {
        continue;
      }
      if (bytes > 0 && incoming_window != 0) {
        pb::RespondRequest grant;
        grant.mutable_window()->set_id(id);
        grant.mutable_window()->set_bytes(static_cast<std::uint32_t>(bytes));
        write(grant);
      }
      if (last) handlers_.emplace_back([this, id] { answer(id); });
    }
  }

  void answer(std::uint64_t id) {
    wire::Metadata metadata;
    {
      std::lock_guard lock(mutex_);
      metadata = requests_[id].metadata;
    }
    const auto name = meta(metadata, "name");
    if (meta(metadata, "mode") == "overrun") {
      const std::size_t window = response_window != 0 ? response_window : expected_window_;
      std::vector<std::uint8_t> block(window + 1);
      response_bytes(block, 0);
      pb::RespondRequest out;
      out.mutable_chunk()->set_request_id(id);
      out.mutable_chunk()->set_data(block.data(), block.size());
      out.mutable_chunk()->set_last(true);
      write(out);
      return;
    }
    const std::uint64_t size = std::stoull(meta(metadata, "size"));
    std::vector<std::uint8_t> block(kChunk);
    for (std::uint64_t at = 0; at < size;) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - at));
      if (response_window != 0) {
        std::unique_lock lock(mutex_);
        auto& request = requests_[id];
        changed_.wait(lock, [&] { return request.credit > 0 || request.reset || stopping_; });
        if (request.reset || stopping_) return;
        n = std::min<std::size_t>(n, static_cast<std::size_t>(request.credit));
        request.credit -= static_cast<std::int64_t>(n);
      }
      response_bytes({block.data(), n}, at);
      pb::RespondRequest out;
      out.mutable_chunk()->set_request_id(id);
      out.mutable_chunk()->set_data(block.data(), n);
      if (!write(out)) return;
      at += n;
      std::lock_guard lock(mutex_);
      written_[name] = at;
    }
    pb::RespondRequest end;
    end.mutable_chunk()->set_request_id(id);
    end.mutable_chunk()->set_last(true);
    write(end);
  }

  bool write(const pb::RespondRequest& message) {
    std::lock_guard lock(write_mutex_);
    return call_->Write(message);
  }

  static constexpr std::size_t expected_window_ = 256 * 1024;  // fast_limits(): 64 MiB / 256
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::RespondRequest, pb::RespondResponse>> call_;
  std::mutex write_mutex_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uint64_t, Request> requests_;
  std::map<std::string, std::uint64_t> written_;
  std::map<std::string, pb::Status> resets_;
  bool stopping_ = false;
  std::thread reader_;
  std::vector<std::thread> handlers_;  // joined on destruction (reader_ joined first)
};

// A native request named `name` for `size` response bytes, with a `body_size` body. Its
// deadline bounds a test that fails by stalling.
BlockingStream open_request(BlockingClient& requester, const Uuid& responder,
                            const std::string& name, std::uint64_t size, std::size_t body_size = 1,
                            const std::string& mode = "") {
  client::StreamOptions options;
  options.deadline = 60s;
  options.metadata = {{"name", name}, {"size", std::to_string(size)}};
  if (!mode.empty()) options.metadata.emplace_back("mode", mode);
  auto stream = requester.request(client::Target::to(responder), options);
  std::vector<std::uint8_t> body(body_size, 'q');
  EXPECT_TRUE(stream.write(body, true).ok());
  return stream;
}

struct Received {
  test::Checksum sum;
  client::Outcome outcome;
};

Received read_all(BlockingStream& stream, Received so_far = {}) {
  for (auto chunk = stream.read_chunk(); chunk.size > 0; chunk = stream.read_chunk()) {
    so_far.sum.update(chunk.bytes());
  }
  so_far.outcome = stream.result();
  return so_far;
}

class GatewayWindows : public ::testing::Test {
protected:
  GatewayWindows()
      : relay_(test::fast_limits()),
        stub_(pb::SwitchboardService::NewStub(
            grpc::CreateChannel("127.0.0.1:" + std::to_string(relay_.server().grpc_port()),
                                grpc::InsecureChannelCredentials()))) {}

  test::InProcessRelay relay_;
  Uuid channel_id_ = Uuid::random();
  std::unique_ptr<pb::SwitchboardService::Stub> stub_;
};

// Requester A stops reading its response after the first bytes; requester B's request, served by
// the same gRPC Respond peer, completes meanwhile; then A reads again and completes too.
TEST_F(GatewayWindows, AStalledRequesterDelaysOnlyItsOwnResponse) {
  constexpr std::uint64_t kSizeA = 8 * 1024 * 1024;
  constexpr std::uint64_t kSizeB = 4 * 1024 * 1024 + 5;
  WindowedResponder responder(*stub_, channel_id_);
  const auto limits = test::fast_limits();
  EXPECT_EQ(responder.response_window,
            std::min<std::size_t>(limits.stream_window, limits.max_connection_buffer /
                                                            limits.max_streams_per_connection));
  EXPECT_EQ(responder.incoming_window, limits.stream_window);

  BlockingClient requester_a(options_for(relay_.port(), channel_id_));
  BlockingClient requester_b(options_for(relay_.port(), channel_id_));
  auto stream_a = open_request(requester_a, responder.peer_id, "A", kSizeA);
  Received a;
  const auto first = stream_a.read_chunk();
  ASSERT_GT(first.size, 0u) << stream_a.result().describe();
  a.sum.update(first.bytes());
  // A reads nothing more for now. B's body is larger than one incoming window: the responder's
  // credit for it has to come back too.
  auto b = std::async(std::launch::async, [&] {
    auto stream_b = open_request(requester_b, responder.peer_id, "B", kSizeB, 3 * 1024 * 1024);
    return read_all(stream_b);
  });
  const bool b_done = b.wait_for(20s) == std::future_status::ready;
  const auto written_a = responder.written("A");
  std::printf("while A is stalled: B %s, responder wrote %llu of A's %llu bytes\n",
              b_done ? "completed" : "did not complete within 20 s",
              static_cast<unsigned long long>(written_a), static_cast<unsigned long long>(kSizeA));
  EXPECT_TRUE(b_done) << "B's response waited for A's stalled one";
  EXPECT_LT(written_a, kSizeA) << "A was not stalled";

  a = read_all(stream_a, std::move(a));  // A resumes (and B, if it was held, is released)
  const auto got_b = b.get();
  EXPECT_TRUE(got_b.outcome.ok()) << got_b.outcome.describe();
  EXPECT_EQ(got_b.sum.size(), kSizeB);
  EXPECT_EQ(got_b.sum.value(), expected_sum(kSizeB).value());
  EXPECT_TRUE(a.outcome.ok()) << a.outcome.describe();
  EXPECT_EQ(a.sum.size(), kSizeA);
  EXPECT_EQ(a.sum.value(), expected_sum(kSizeA).value());
}

// A chunk beyond its request's credit resets that request (PROTOCOL_ERROR at both ends); the
// request in flight beside it and a later one on the same Respond stream complete.
TEST_F(GatewayWindows, AResponderExceedingOneRequestsCreditLosesOnlyThatRequest) {
  constexpr std::uint64_t kSize = 2 * 1024 * 1024;
  WindowedResponder responder(*stub_, channel_id_);
  BlockingClient requester(options_for(relay_.port(), channel_id_));
  auto steady = open_request(requester, responder.peer_id, "steady", kSize);
  Received got_steady;
  const auto first = steady.read_chunk();
  ASSERT_GT(first.size, 0u) << steady.result().describe();
  got_steady.sum.update(first.bytes());

  auto overrun = open_request(requester, responder.peer_id, "overrun", kSize, 1, "overrun");
  const auto got_overrun = read_all(overrun);
  const auto reset = responder.reset_of("overrun", 10s);
  std::printf("overrun request: requester %s, responder reset %s\n",
              got_overrun.outcome.describe().c_str(),
              reset ? pb::Status_Name(*reset).c_str() : "none");
  EXPECT_EQ(got_overrun.outcome.status, Status::protocol_error);
  ASSERT_TRUE(reset.has_value()) << "the responder was not told";
  EXPECT_EQ(*reset, pb::STATUS_PROTOCOL_ERROR);

  got_steady = read_all(steady, std::move(got_steady));
  EXPECT_TRUE(got_steady.outcome.ok()) << got_steady.outcome.describe();
  EXPECT_EQ(got_steady.sum.value(), expected_sum(kSize).value());
  auto later = open_request(requester, responder.peer_id, "later", kSize);
  const auto got_later = read_all(later);
  EXPECT_TRUE(got_later.outcome.ok()) << got_later.outcome.describe();
  EXPECT_EQ(got_later.sum.value(), expected_sum(kSize).value());
  EXPECT_FALSE(responder.reset_of("steady", 0ms).has_value());
}

// A client that does not ask for windows keeps the contract it was written against: no window
// messages, and Joined announces none.
TEST_F(GatewayWindows, APlainJoinGetsNoWindows) {
  grpc::ClientContext context;
  auto call = stub_->Respond(&context);
  pb::RespondRequest join;
  join.mutable_join()->set_channel(channel_id_.to_string());
  ASSERT_TRUE(call->Write(join));
  pb::RespondResponse in;
  ASSERT_TRUE(call->Read(&in) && in.has_joined());
  EXPECT_EQ(in.joined().response_window(), 0u);
  EXPECT_EQ(in.joined().incoming_window(), 0u);
  const auto peer = *Uuid::parse(in.joined().peer_id());
  ASSERT_TRUE(call->Read(&in) && in.has_presence());
  BlockingClient requester(options_for(relay_.port(), channel_id_));
  auto result = std::async(std::launch::async, [&] {
    std::vector<std::uint8_t> response;
    return requester.send(client::Target::to(peer), test::as_bytes("ping"), response);
  });
  std::uint64_t id = 0;
  do {
    ASSERT_TRUE(call->Read(&in));
    EXPECT_FALSE(in.has_window());
  } while (!in.has_start());
  id = in.start().id();
  std::string reply(3 * 1024 * 1024, 'r');
  pb::RespondRequest out;
  out.mutable_chunk()->set_request_id(id);
  out.mutable_chunk()->set_data(reply);
  out.mutable_chunk()->set_last(true);
  ASSERT_TRUE(call->Write(out));
  EXPECT_TRUE(result.get().ok());
  context.TryCancel();
  while (call->Read(&in)) EXPECT_FALSE(in.has_window());
  (void)call->Finish();
}

}  // namespace
}  // namespace switchboard
