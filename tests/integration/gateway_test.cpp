// The gRPC gateway from a C++ gRPC client: interop with native peers, status mapping, errors.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "support/clients.hpp"
#include "support/grpc_requests.hpp"
#include "support/relay.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard {
namespace {

namespace pb = ::switchboard::v1;
using client::BlockingClient;
using client::BlockingStream;
using test::options_for;
using namespace std::chrono_literals;

class Gateway : public ::testing::Test {
protected:
  Gateway()
      : relay_(limits()),
        channel_(grpc::CreateChannel("127.0.0.1:" + std::to_string(relay_.server().grpc_port()),
                                     grpc::InsecureChannelCredentials())),
        stub_(pb::SwitchboardService::NewStub(channel_)) {}

  // No test here is about slow receivers (GatewayStall is). Under a sanitizer on a loaded
  // machine a gRPC write can take longer than fast_limits()'s 300 ms, which must not drop the
  // receiver a test is waiting on.
  static core::Limits limits() {
    auto limits = test::fast_limits();
    limits.slow_consumer_timeout = std::chrono::seconds(30);
    return limits;
  }

  static std::string trailer(const grpc::ClientContext& context, const std::string& key) {
    const auto& trailers = context.GetServerTrailingMetadata();
    auto it = trailers.find(key);
    return it == trailers.end() ? "" : std::string(it->second.data(), it->second.size());
  }

  // A Send of `body` in `chunk`-sized messages; returns the response and the final status.
  grpc::Status send(grpc::ClientContext& context, const std::string& target,
                    const std::string& body, std::string& response, std::size_t chunk = 65536) {
    auto call = stub_->Send(&context);
    pb::SendRequest open;
    open.mutable_open()->set_channel(channel_id_.to_string());
    open.mutable_open()->set_target(target);
    std::thread writer([&] {
      if (!call->Write(open)) return;
      for (std::size_t at = 0; at < body.size(); at += chunk) {
        pb::SendRequest message;
        message.mutable_chunk()->set_data(body.substr(at, chunk));
        if (!call->Write(message)) return;
      }
      call->WritesDone();
    });
    pb::SendResponse in;
    while (call->Read(&in)) response += in.chunk().data();
    writer.join();
    return call->Finish();
  }

  using RespondStream = grpc::ClientReaderWriter<pb::RespondRequest, pb::RespondResponse>;

  // Joins the channel as a gRPC Respond peer and reads `joined` (its id into `peer_id`) and the
  // presence snapshot.
  std::unique_ptr<RespondStream> join_respond(grpc::ClientContext& context,
                                              std::string* peer_id = nullptr,
                                              pb::SwitchboardService::Stub* stub = nullptr) {
    auto respond = (stub ? stub : stub_.get())->Respond(&context);
    pb::RespondRequest join;
    join.mutable_join()->set_channel(channel_id_.to_string());
    EXPECT_TRUE(respond->Write(join));
    pb::RespondResponse in;
    EXPECT_TRUE(respond->Read(&in) && in.has_joined());
    if (peer_id) *peer_id = in.joined().peer_id();
    EXPECT_TRUE(respond->Read(&in) && in.presence().kind() == pb::PresenceUpdate::KIND_SNAPSHOT);
    return respond;
  }

  using RawStream = grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>;

  // A bidi call of `method` ("/package.Service/Method") whose messages are raw bytes, so a test
  // can send what no generated stub would: bytes that do not parse.
  std::unique_ptr<RawStream> raw_call(grpc::ClientContext& context, const char* method) {
    const grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::BIDI_STREAMING,
                                        channel_);
    return std::unique_ptr<RawStream>(
        grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
            channel_.get(), rpc, &context));
  }

  test::InProcessRelay relay_;
  Uuid channel_id_ = Uuid::random();
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::SwitchboardService::Stub> stub_;
};

TEST_F(Gateway, GrpcSenderToNativeResponderStreamsBothWays) {
  BlockingClient responder(options_for(relay_.port(), channel_id_, true));
  responder.serve(test::echo);
  std::string body(5 * 1024 * 1024 + 3, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 31 + 7);
  grpc::ClientContext context;
  std::string response;
  const auto status = send(context, "", body, response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response, body);
}

// The open's data uses the whole window: the rest of the body moves only on the credit the
// responder returns for it, which may reach the call before the open is done with.
TEST_F(Gateway, AnOpenCarryingAWholeWindowIsFollowedByTheRestOfTheBody) {
  BlockingClient responder(options_for(relay_.port(), channel_id_, true));
  responder.serve(test::echo);
  const std::size_t window = test::fast_limits().stream_window;
  std::string body(window + 3 * 65536 + 5, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 13 + 1);
  grpc::ClientContext context;
  auto call = stub_->Send(&context);
  std::thread writer([&] {
    pb::SendRequest open;
    open.mutable_open()->set_channel(channel_id_.to_string());
    open.mutable_open()->set_data(body.substr(0, window));
    if (!call->Write(open)) return;
    for (std::size_t at = window; at < body.size(); at += 65536) {
      pb::SendRequest message;
      message.mutable_chunk()->set_data(body.substr(at, 65536));
      if (!call->Write(message)) return;
    }
    call->WritesDone();
  });
  std::string response;
  pb::SendResponse in;
  while (call->Read(&in)) response += in.chunk().data();
  writer.join();
  const auto status = call->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response, body);
}

// gRPC on both sides: the chunks and the credit pass between two calls of the gateway.
TEST_F(Gateway, GrpcSenderToGrpcResponderStreamsBothWays) {
  grpc::ClientContext respond_context;
  std::string grpc_peer;
  auto respond = join_respond(respond_context, &grpc_peer);
  ASSERT_FALSE(grpc_peer.empty());

  // Echoes each incoming piece back as it comes, then ends the response with the request.
  std::thread echo([&] {
    pb::RespondResponse incoming;
    for (bool last = false; !last && respond->Read(&incoming);) {
      pb::RespondRequest out;
      if (incoming.has_start()) {
        out.mutable_chunk()->set_request_id(incoming.start().id());
        out.mutable_chunk()->set_data(incoming.start().data());
        last = incoming.start().last();
      } else if (incoming.has_chunk()) {
        out.mutable_chunk()->set_request_id(incoming.chunk().id());
        out.mutable_chunk()->set_data(incoming.chunk().data());
        last = incoming.chunk().last();
      } else {
        continue;
      }
      out.mutable_chunk()->set_last(last);
      if (!respond->Write(out)) return;
    }
  });
  std::string body(3 * 1024 * 1024 + 17, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7 + 3);
  grpc::ClientContext context;
  std::string response;
  const auto status = send(context, grpc_peer, body, response);
  echo.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response, body);
  respond_context.TryCancel();
  (void)respond->Finish();
}

TEST_F(Gateway, NativeSenderToGrpcResponderSeesSenderAndMetadata) {
  grpc::ClientContext context;
  auto respond = stub_->Respond(&context);
  pb::RespondRequest join;
  join.mutable_join()->set_channel(channel_id_.to_string());
  ASSERT_TRUE(respond->Write(join));
  pb::RespondResponse in;
  ASSERT_TRUE(respond->Read(&in));
  ASSERT_TRUE(in.has_joined());
  const auto grpc_peer = Uuid::parse(in.joined().peer_id());
  ASSERT_TRUE(grpc_peer);
  ASSERT_TRUE(respond->Read(&in));
  ASSERT_EQ(in.presence().kind(), pb::PresenceUpdate::KIND_SNAPSHOT);

  BlockingClient sender(options_for(relay_.port(), channel_id_));
  ASSERT_TRUE(respond->Read(&in));  // the native sender joined
  EXPECT_EQ(in.presence().kind(), pb::PresenceUpdate::KIND_JOINED);
  EXPECT_EQ(in.presence().peers(0), sender.peer_id().to_string());

  auto result = std::async(std::launch::async, [&] {
    client::StreamOptions options;
    options.metadata = {{"lang", "c++"}};
    std::vector<std::uint8_t> response;
    auto outcome =
        sender.send(client::Target::to(*grpc_peer), test::as_bytes("shout"), response, options);
    return std::make_pair(outcome, std::string(response.begin(), response.end()));
  });
  std::string request;
  std::uint64_t id = 0;
  for (bool last = false; !last;) {
    ASSERT_TRUE(respond->Read(&in));
    if (in.has_start()) {
      id = in.start().id();
      EXPECT_FALSE(in.start().broadcast());
      EXPECT_EQ(in.start().sender(), sender.peer_id().to_string());
      EXPECT_EQ(in.start().metadata().at("lang"), "c++");
      request += in.start().data();
      last = in.start().last();
    } else if (in.has_chunk()) {
      request += in.chunk().data();
      last = in.chunk().last();
    }
  }
  EXPECT_EQ(request, "shout");
  pb::RespondRequest answer;
  answer.mutable_chunk()->set_request_id(id);
  answer.mutable_chunk()->set_data("SHOUT");
  answer.mutable_chunk()->set_last(true);
  ASSERT_TRUE(respond->Write(answer));
  const auto [outcome, response] = result.get();
  EXPECT_TRUE(outcome.ok()) << outcome.describe();
  EXPECT_EQ(response, "SHOUT");
  respond->WritesDone();
  EXPECT_TRUE(respond->Finish().ok());
}

TEST_F(Gateway, NativeMessagesReachAGrpcPeerAsOneMessageBroadcasts) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 60s);  // a lost message fails, not hangs
  std::string grpc_peer_text;
  auto respond = join_respond(context, &grpc_peer_text);
  const auto grpc_peer = Uuid::parse(grpc_peer_text).value_or(Uuid{});
  ASSERT_FALSE(grpc_peer.is_nil());
  // A native sender speaking whole messages, on its own I/O thread.
  namespace asio = boost::asio;
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });
  client::ConnectOptions options = options_for(relay_.port(), channel_id_);
  client::Outcome connected;
  auto connection =
      asio::co_spawn(io, client::Connection::connect(io.get_executor(), options, connected),
                     asio::use_future)
          .get();
  if (!connection) {
    work.reset();
    io_thread.join();
    FAIL() << connected.describe();
  }
  pb::RespondResponse in;
  ASSERT_TRUE(respond->Read(&in) && in.has_presence());  // the native sender joined

  auto sent = asio::co_spawn(
      io,
      [&]() -> asio::awaitable<client::MessageTally> {
        co_await connection->publish(test::as_bytes("to everyone"));
        co_await connection->send_message(grpc_peer, test::as_bytes("to you"));
        co_return co_await connection->flush_messages();
      },
      asio::use_future);
  std::vector<std::string> bodies;
  while (bodies.size() < 2 && respond->Read(&in)) {
    if (!in.has_start()) continue;
    EXPECT_TRUE(in.start().broadcast());
    EXPECT_TRUE(in.start().last());  // the whole body in the opening message
    EXPECT_EQ(in.start().sender(), connection->peer_id().to_string());
    bodies.push_back(in.start().data());
  }
  EXPECT_EQ(bodies, (std::vector<std::string>{"to everyone", "to you"}));
  const auto tally = sent.get();
  EXPECT_EQ(tally.delivered, 2U);
  EXPECT_EQ(tally.dropped, 0U);
  asio::post(io, [&] { connection->close(); });
  work.reset();
  io_thread.join();
  respond->WritesDone();
  while (respond->Read(&in)) {
  }  // the sender's LEFT, then the end: Finish wants everything read
  EXPECT_TRUE(respond->Finish().ok());
}

TEST_F(Gateway, ApplicationErrorFromGrpcResponderReachesNativeSender) {
  grpc::ClientContext context;
  auto respond = stub_->Respond(&context);
  pb::RespondRequest join;
  join.mutable_join()->set_channel(channel_id_.to_string());
  ASSERT_TRUE(respond->Write(join));
  pb::RespondResponse in;
  ASSERT_TRUE(respond->Read(&in));
  ASSERT_TRUE(respond->Read(&in));
  BlockingClient sender(options_for(relay_.port(), channel_id_));
  auto result = std::async(std::launch::async, [&] {
    std::vector<std::uint8_t> response;
    return sender.send(client::Target::any(), test::as_bytes("x"), response);
  });
  do {
    ASSERT_TRUE(respond->Read(&in));
  } while (!in.has_start());
  pb::RespondRequest end;
  end.mutable_end()->set_request_id(in.start().id());
  end.mutable_end()->set_status(pb::STATUS_APPLICATION);
  end.mutable_end()->set_app_code(418);
  end.mutable_end()->set_message("teapot");
  ASSERT_TRUE(respond->Write(end));
  const auto outcome = result.get();
  EXPECT_EQ(outcome.status, Status::application);
  EXPECT_EQ(outcome.app_code, 418u);
  EXPECT_EQ(outcome.message, "teapot");
  context.TryCancel();
  (void)respond->Finish();
}

TEST_F(Gateway, ResponseEndStatusOutsideTheEnumReachesNativeSenderAsInternal) {
  grpc::ClientContext context;
  auto respond = stub_->Respond(&context);
  pb::RespondRequest join;
  join.mutable_join()->set_channel(channel_id_.to_string());
  ASSERT_TRUE(respond->Write(join));
  pb::RespondResponse in;
  ASSERT_TRUE(respond->Read(&in));
  ASSERT_TRUE(respond->Read(&in));
  BlockingClient sender(options_for(relay_.port(), channel_id_));
  auto result = std::async(std::launch::async, [&] {
    std::vector<std::uint8_t> response;
    return sender.send(client::Target::any(), test::as_bytes("x"), response);
  });
  do {
    ASSERT_TRUE(respond->Read(&in));
  } while (!in.has_start());
  pb::RespondRequest end;
  end.mutable_end()->set_request_id(in.start().id());
  // 65537, less the enum's offset of one, narrowed to 16 bits would be OK.
  end.mutable_end()->set_status(static_cast<pb::Status>(65537));
  ASSERT_TRUE(respond->Write(end));
  EXPECT_EQ(result.get().status, Status::internal);
  context.TryCancel();
  (void)respond->Finish();
}

TEST_F(Gateway, OpenMetadataBeyondTheNativeOpenLimitsIsInvalidArgument) {
  BlockingClient responder(options_for(relay_.port(), channel_id_, true));
  std::promise<std::size_t> seen_entries;
  responder.serve([&](BlockingStream& request) {
    seen_entries.set_value(request.metadata().size());
    test::echo(request);
  });
  auto send_with = [&](grpc::ClientContext& context, int entries, std::size_t value_size,
                       std::string& response) {
    auto call = stub_->Send(&context);
    pb::SendRequest open;
    open.mutable_open()->set_channel(channel_id_.to_string());
    open.mutable_open()->set_data("body");
    for (int i = 0; i < entries; ++i) {
      (*open.mutable_open()->mutable_metadata())[std::string("k").append(std::to_string(i))] =
          std::string(value_size, 'v');
    }
    call->Write(open);
    call->WritesDone();
    pb::SendResponse in;
    while (call->Read(&in)) response += in.chunk().data();
    return call->Finish();
  };
  for (const auto& [entries, value_size] : {std::pair{65, std::size_t{1}}, {1, std::size_t{993}}}) {
    grpc::ClientContext context;
    std::string response;
    const auto status = send_with(context, entries, value_size, response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << entries;
    EXPECT_EQ(trailer(context, "switchboard-status"), "PROTOCOL_ERROR");
    EXPECT_NE(status.error_message().find("open.metadata"), std::string::npos);
  }
  // The limits themselves pass, and the native responder receives every entry.
  grpc::ClientContext context;
  std::string response;
  const auto status = send_with(context, 64, 8, response);  // 28 + 64 * 4 + 182 + 64 * 8 = 978
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response, "body");
  EXPECT_EQ(seen_entries.get_future().get(), 64u);
}

TEST_F(Gateway, NoRespondersIsUnavailableWithTrailer) {
  grpc::ClientContext context;
  std::string response;
  const auto status = send(context, "", "anyone?", response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(trailer(context, "switchboard-status"), "NO_RESPONDERS");
}

TEST_F(Gateway, DeadlinePropagatesToNativeResponder) {
  std::promise<std::chrono::milliseconds> seen_deadline;
  std::promise<Status> seen_status;
  BlockingClient responder(options_for(relay_.port(), channel_id_, true));
  responder.serve([&](BlockingStream& request) {
    seen_deadline.set_value(request.deadline());
    while (request.read_chunk().size > 0) {
    }
    seen_status.set_value(request.result().status);
  });
  // The deadline must leave the request time to reach the responder: no connection set-up
  // inside it, and room for a slow (sanitized, loaded) relay.
  ASSERT_TRUE(channel_->WaitForConnected(std::chrono::system_clock::now() + 10s));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 800ms);
  std::string response;
  const auto status = send(context, "", "slow", response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  auto deadline = seen_deadline.get_future();
  ASSERT_EQ(deadline.wait_for(10s), std::future_status::ready) << "the request never arrived";
  const auto remaining = deadline.get();
  EXPECT_GT(remaining.count(), 0);
  EXPECT_LE(remaining.count(), 800);
  auto final_status = seen_status.get_future();
  ASSERT_EQ(final_status.wait_for(10s), std::future_status::ready) << "the request never ended";
  EXPECT_EQ(final_status.get(), Status::deadline_exceeded);
}

TEST_F(Gateway, MalformedFirstMessagesAreInvalidArgument) {
  {
    grpc::ClientContext context;
    auto call = stub_->Send(&context);
    pb::SendRequest chunk;
    chunk.mutable_chunk()->set_data("too early");
    call->Write(chunk);
    call->WritesDone();
    const auto status = call->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("must be open"), std::string::npos);
  }
  {
    grpc::ClientContext context;
    auto call = stub_->Send(&context);
    pb::SendRequest open;
    open.mutable_open()->set_channel("not-a-uuid");
    call->Write(open);
    call->WritesDone();
    const auto status = call->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("not a UUID"), std::string::npos);
  }
  {
    grpc::ClientContext context;
    auto call = stub_->Respond(&context);
    pb::RespondRequest join;
    join.mutable_join();  // missing channel
    call->Write(join);
    call->WritesDone();
    const auto status = call->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("channel is required"), std::string::npos);
  }
}

TEST_F(Gateway, BroadcastFromGrpcReachesNativePeersWithSummary) {
  std::vector<std::unique_ptr<BlockingClient>> receivers;
  std::vector<std::promise<std::string>> got(3);
  for (int i = 0; i < 3; ++i) {
    receivers.push_back(std::make_unique<BlockingClient>(options_for(relay_.port(), channel_id_)));
    receivers.back()->on_broadcast([&, i](BlockingStream& message) {
      std::string body;
      for (auto chunk = message.read_chunk(); chunk.size > 0; chunk = message.read_chunk()) {
        body.append(reinterpret_cast<const char*>(chunk.data), chunk.size);
      }
      got[static_cast<std::size_t>(i)].set_value(body);
    });
  }
  grpc::ClientContext context;
  auto call = stub_->Broadcast(&context);
  pb::BroadcastRequest open;
  open.mutable_open()->set_channel(channel_id_.to_string());
  open.mutable_open()->set_data("news: ");
  ASSERT_TRUE(call->Write(open));
  pb::BroadcastRequest chunk;
  chunk.mutable_chunk()->set_data("all good");
  ASSERT_TRUE(call->Write(chunk));
  call->WritesDone();
  pb::BroadcastResponse summary;
  ASSERT_TRUE(call->Read(&summary));
  EXPECT_EQ(summary.summary().delivered(), 3u);
  EXPECT_EQ(summary.summary().dropped(), 0u);
  EXPECT_TRUE(call->Finish().ok());
  for (auto& promise : got) EXPECT_EQ(promise.get_future().get(), "news: all good");
}

TEST_F(Gateway, WatchPeersSeesNativeJoinAndLeaveWithoutJoining) {
  grpc::ClientContext context;
  pb::WatchPeersRequest request;
  request.set_channel(channel_id_.to_string());
  auto watch = stub_->WatchPeers(&context, request);
  pb::WatchPeersResponse update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.update().kind(), pb::PresenceUpdate::KIND_SNAPSHOT);
  EXPECT_EQ(update.update().peers_size(), 0);
  Uuid joined_id;
  {
    BlockingClient peer(options_for(relay_.port(), channel_id_));
    joined_id = peer.peer_id();
    ASSERT_TRUE(watch->Read(&update));
    EXPECT_EQ(update.update().kind(), pb::PresenceUpdate::KIND_JOINED);
    EXPECT_EQ(update.update().peers(0), joined_id.to_string());
    EXPECT_TRUE(peer.peers().empty());  // the watcher is not a member
  }
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.update().kind(), pb::PresenceUpdate::KIND_LEFT);
  EXPECT_EQ(update.update().peers(0), joined_id.to_string());
  context.TryCancel();
}

TEST_F(Gateway, DuplicateRespondPeerIdIsAlreadyExists) {
  auto options = options_for(relay_.port(), channel_id_, true);
  options.peer_id = Uuid::random();
  BlockingClient native(options);
  grpc::ClientContext context;
  auto respond = stub_->Respond(&context);
  pb::RespondRequest join;
  join.mutable_join()->set_channel(channel_id_.to_string());
  join.mutable_join()->set_peer_id(options.peer_id.to_string());
  respond->Write(join);
  respond->WritesDone();
  const auto status = respond->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(trailer(context, "switchboard-status"), "REFUSED");
}

// ---- Requests: many requests on one stream. ----

pb::RequestsRequest request_open(std::uint64_t id, const Uuid& channel, const std::string& data,
                                 bool last, const std::string& target = "") {
  pb::RequestsRequest message;
  auto* open = message.mutable_open();
  open->set_id(id);
  open->mutable_open()->set_channel(channel.to_string());
  open->mutable_open()->set_target(target);
  open->mutable_open()->set_data(data);
  open->set_last(last);
  return message;
}

pb::RequestsRequest request_chunk(std::uint64_t id, const std::string& data, bool last) {
  pb::RequestsRequest message;
  message.mutable_chunk()->set_id(id);
  message.mutable_chunk()->set_data(data);
  message.mutable_chunk()->set_last(last);
  return message;
}

TEST_F(Gateway, ManyRequestsOnOneStreamEachGetTheirOwnResponse) {
  BlockingClient responder(options_for(relay_.port(), channel_id_, true));
  responder.serve(test::echo);
  grpc::ClientContext context;
  auto call = stub_->Requests(&context);
  // Three requests open at once, their chunks interleaved; each body ends on a chunk.
  const std::string big(300 * 1024, 'z');
  ASSERT_TRUE(call->Write(request_open(1, channel_id_, "one:", false)));
  ASSERT_TRUE(call->Write(request_open(2, channel_id_, "two:", false)));
  ASSERT_TRUE(call->Write(request_open(3, channel_id_, "", false)));
  ASSERT_TRUE(call->Write(request_chunk(3, big, false)));
  ASSERT_TRUE(call->Write(request_chunk(2, "b", false)));
  ASSERT_TRUE(call->Write(request_chunk(1, "a", true)));
  ASSERT_TRUE(call->Write(request_chunk(3, "!", true)));
  ASSERT_TRUE(call->Write(request_chunk(2, "c", true)));
  std::map<std::uint64_t, std::string> responses;
  std::set<std::uint64_t> ended;
  pb::RequestsResponse in;
  while (ended.size() < 3 && call->Read(&in)) {
    ASSERT_TRUE(in.has_chunk()) << in.DebugString();
    responses[in.chunk().request_id()] += in.chunk().data();
    if (in.chunk().last()) ended.insert(in.chunk().request_id());
  }
  EXPECT_EQ(responses[1], "one:a");
  EXPECT_EQ(responses[2], "two:bc");
  EXPECT_EQ(responses[3], big + "!");
  // An id is free again once its response ended.
  ASSERT_TRUE(call->Write(request_open(1, channel_id_, "again", true)));
  std::string again;
  for (bool last = false; !last && call->Read(&in);) {
    ASSERT_TRUE(in.has_chunk());
    EXPECT_EQ(in.chunk().request_id(), 1u);
    again += in.chunk().data();
    last = in.chunk().last();
  }
  EXPECT_EQ(again, "again");
  call->WritesDone();
  EXPECT_FALSE(call->Read(&in));
  const auto status = call->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(Gateway, ARefusedRequestEndsAloneAndTheStreamGoesOn) {
  BlockingClient responder(options_for(relay_.port(), channel_id_, true));
  responder.serve(test::echo);
  grpc::ClientContext context;
  auto call = stub_->Requests(&context);
  ASSERT_TRUE(call->Write(request_open(5, channel_id_, "x", true, Uuid::random().to_string())));
  pb::RequestsResponse in;
  ASSERT_TRUE(call->Read(&in));
  ASSERT_TRUE(in.has_end()) << in.DebugString();
  EXPECT_EQ(in.end().request_id(), 5u);
  EXPECT_EQ(in.end().status(), pb::STATUS_NO_RESPONDERS);
  ASSERT_TRUE(call->Write(request_open(6, channel_id_, "y", true)));
  std::string response;
  for (bool last = false; !last;) {
    ASSERT_TRUE(call->Read(&in));
    ASSERT_TRUE(in.has_chunk()) << in.DebugString();
    EXPECT_EQ(in.chunk().request_id(), 6u);
    response += in.chunk().data();
    last = in.chunk().last();
  }
  EXPECT_EQ(response, "y");
  context.TryCancel();
  (void)call->Finish();
}

TEST_F(Gateway, AnOpenWhoseIdIsStillOpenIsInvalidArgument) {
  BlockingClient responder(options_for(relay_.port(), channel_id_, true));
  responder.serve(test::echo);
  grpc::ClientContext context;
  auto call = stub_->Requests(&context);
  ASSERT_TRUE(call->Write(request_open(1, channel_id_, "x", false)));
  (void)call->Write(request_open(1, channel_id_, "y", false));
  pb::RequestsResponse in;
  while (call->Read(&in)) {
  }
  const auto status = call->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(trailer(context, "switchboard-status"), "PROTOCOL_ERROR");
}

// A gRPC responder that never answers: one request runs out of its deadline, another is
// cancelled by its sender; the responder learns both, and the stream stays usable.
TEST_F(Gateway, RequestDeadlineAndCancelReachTheResponder) {
  grpc::ClientContext respond_context;
  auto respond = join_respond(respond_context);
  pb::RespondResponse incoming;

  grpc::ClientContext context;
  auto call = stub_->Requests(&context);
  auto late = request_open(1, channel_id_, "late", true);
  late.mutable_open()->set_deadline_ms(100);
  ASSERT_TRUE(call->Write(late));
  ASSERT_TRUE(respond->Read(&incoming));
  ASSERT_TRUE(incoming.has_start());
  EXPECT_GT(incoming.start().deadline_ms(), 0u);
  EXPECT_LE(incoming.start().deadline_ms(), 100u);
  pb::RequestsResponse in;
  ASSERT_TRUE(call->Read(&in));
  ASSERT_TRUE(in.has_end()) << in.DebugString();
  EXPECT_EQ(in.end().request_id(), 1u);
  EXPECT_EQ(in.end().status(), pb::STATUS_DEADLINE_EXCEEDED);
  ASSERT_TRUE(respond->Read(&incoming));
  ASSERT_TRUE(incoming.has_reset()) << incoming.DebugString();
  EXPECT_EQ(incoming.reset().status(), pb::STATUS_DEADLINE_EXCEEDED);

  ASSERT_TRUE(call->Write(request_open(2, channel_id_, "never mind", false)));
  ASSERT_TRUE(respond->Read(&incoming));
  ASSERT_TRUE(incoming.has_start());
  const auto second = incoming.start().id();
  pb::RequestsRequest cancel;
  cancel.mutable_cancel()->set_id(2);
  ASSERT_TRUE(call->Write(cancel));
  ASSERT_TRUE(respond->Read(&incoming));
  ASSERT_TRUE(incoming.has_reset()) << incoming.DebugString();
  EXPECT_EQ(incoming.reset().id(), second);
  EXPECT_EQ(incoming.reset().status(), pb::STATUS_CANCELLED);
  ASSERT_TRUE(call->Read(&in));
  ASSERT_TRUE(in.has_end()) << in.DebugString();
  EXPECT_EQ(in.end().request_id(), 2u);
  EXPECT_EQ(in.end().status(), pb::STATUS_CANCELLED);

  call->WritesDone();
  EXPECT_FALSE(call->Read(&in));
  EXPECT_TRUE(call->Finish().ok());
  respond_context.TryCancel();
  (void)respond->Finish();
}

// Requests past the per-call limit are refused alone; a half-closed call lets its open request
// finish before it ends OK.
TEST(GatewayRequests, OpenRequestsBeyondTheLimitAreRefusedAndHalfCloseWaitsForTheRest) {
  auto limits = test::fast_limits();
  limits.max_streams_per_connection = 2;
  // Keepalive is not under test: a responder thread starved for 200 ms on a loaded machine
  // must not be judged dead in the middle of its requests.
  limits.keepalive_interval = std::chrono::seconds(30);
  test::InProcessRelay relay(limits);
  const auto channel_id = Uuid::random();
  auto stub = pb::SwitchboardService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(relay.server().grpc_port()),
                          grpc::InsecureChannelCredentials()));
  BlockingClient responder(options_for(relay.port(), channel_id, true));
  responder.serve(test::echo);
  grpc::ClientContext context;
  auto call = stub->Requests(&context);
  ASSERT_TRUE(call->Write(request_open(1, channel_id, "a", false)));
  ASSERT_TRUE(call->Write(request_open(2, channel_id, "b", false)));
  ASSERT_TRUE(call->Write(request_open(3, channel_id, "c", false)));
  // The third is refused; the echoes of the first two may come before or after its end.
  pb::RequestsResponse in;
  std::map<std::uint64_t, std::string> responses;
  for (bool refused = false; !refused;) {
    ASSERT_TRUE(call->Read(&in));
    if (in.has_chunk()) {
      responses[in.chunk().request_id()] += in.chunk().data();
      continue;
    }
    ASSERT_TRUE(in.has_end()) << in.DebugString();
    EXPECT_EQ(in.end().request_id(), 3u);
    EXPECT_EQ(in.end().status(), pb::STATUS_RESOURCE_EXHAUSTED);
    refused = true;
  }
  ASSERT_TRUE(call->Write(request_chunk(1, "1", true)));
  ASSERT_TRUE(call->Write(request_chunk(2, "2", true)));
  call->WritesDone();
  while (call->Read(&in)) {
    ASSERT_TRUE(in.has_chunk()) << in.DebugString();
    responses[in.chunk().request_id()] += in.chunk().data();
  }
  const auto status = call->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(responses[1], "a1");
  EXPECT_EQ(responses[2], "b2");
}

// A request that used its whole window stops the reading of the stream until its responder
// takes more; a response that ends it first resumes the reading. A request whose body has not
// ended when the client half-closes ends CANCELLED.
TEST_F(Gateway, AFinishedRequestResumesReadingAndHalfCloseEndsUnfinishedBodies) {
  grpc::ClientContext respond_context;
  auto respond = join_respond(respond_context);
  pb::RespondResponse incoming;

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 20s);
  auto call = stub_->Requests(&context);
  const std::string window(test::fast_limits().stream_window, 'w');
  ASSERT_TRUE(call->Write(request_open(1, channel_id_, window, false)));
  // The responder answers at once, without waiting for the rest of the body.
  std::uint64_t first = 0;
  do {
    ASSERT_TRUE(respond->Read(&incoming));
  } while (!incoming.has_start());
  first = incoming.start().id();
  pb::RespondRequest answer;
  answer.mutable_chunk()->set_request_id(first);
  answer.mutable_chunk()->set_data("enough");
  answer.mutable_chunk()->set_last(true);
  ASSERT_TRUE(respond->Write(answer));
  pb::RequestsResponse in;
  std::string response;
  for (bool last = false; !last;) {
    ASSERT_TRUE(call->Read(&in));
    ASSERT_TRUE(in.has_chunk()) << in.DebugString();
    response += in.chunk().data();
    last = in.chunk().last();
  }
  EXPECT_EQ(response, "enough");
  // The stream reads again: a second request reaches the responder.
  ASSERT_TRUE(call->Write(request_open(2, channel_id_, "second", false)));
  do {
    ASSERT_TRUE(respond->Read(&incoming));
  } while (!incoming.has_start());
  EXPECT_EQ(incoming.start().data(), "second");
  const auto second = incoming.start().id();
  call->WritesDone();
  ASSERT_TRUE(call->Read(&in));
  ASSERT_TRUE(in.has_end()) << in.DebugString();
  EXPECT_EQ(in.end().request_id(), 2u);
  EXPECT_EQ(in.end().status(), pb::STATUS_CANCELLED);
  do {
    ASSERT_TRUE(respond->Read(&incoming));
  } while (!incoming.has_reset());
  EXPECT_EQ(incoming.reset().id(), second);
  EXPECT_FALSE(call->Read(&in));
  const auto status = call->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  respond_context.TryCancel();
  (void)respond->Finish();
}

// ---- Sender identity, first messages and trailers. ----

// On an open relay no token proves whom a call speaks for: sender_peer_id may name only a
// Respond peer joined over the caller's own connection, never a native peer or a gRPC peer of
// another connection (docs/SECURITY.md, "Sender identity").
TEST_F(Gateway, OpenRelaySenderPeerIdMustBeARespondPeerOfTheCallersConnection) {
  std::mutex mutex;
  std::vector<std::string> senders;  // the sender of each request that reached `receiver`
  BlockingClient receiver(options_for(relay_.port(), channel_id_, true));
  receiver.serve([&](BlockingStream& request) {
    {
      std::lock_guard lock(mutex);
      senders.push_back(request.peer().to_string());
    }
    test::echo(request);
  });
  const auto drain = [](BlockingStream& broadcast) {
    std::uint8_t sink[256];
    while (broadcast.read(sink) > 0) {
    }
  };
  receiver.on_broadcast(drain);
  BlockingClient victim(options_for(relay_.port(), channel_id_));
  victim.on_broadcast(drain);
  const auto victim_id = victim.peer_id().to_string();

  // A Respond peer over a connection of its own (a channel with its own subchannel pool).
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto other_stub = pb::SwitchboardService::NewStub(
      grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(relay_.server().grpc_port()),
                                grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext other_context;
  std::string other_id;
  auto other = join_respond(other_context, &other_id, other_stub.get());
  // A Respond peer over the connection the calls below use.
  grpc::ClientContext own_context;
  std::string own_id;
  auto own = join_respond(own_context, &own_id);

  const auto send_as = [&](const std::string& sender, std::string& status_trailer) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    auto call = stub_->Send(&context);
    pb::SendRequest open;
    open.mutable_open()->set_channel(channel_id_.to_string());
    open.mutable_open()->set_target(receiver.peer_id().to_string());
    open.mutable_open()->set_sender_peer_id(sender);
    open.mutable_open()->set_data("who?");
    call->Write(open);
    call->WritesDone();
    pb::SendResponse in;
    while (call->Read(&in)) {
    }
    const auto status = call->Finish();
    status_trailer = trailer(context, "switchboard-status");
    return status;
  };
  const auto broadcast_as = [&](const std::string& sender, std::uint32_t& receivers) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    auto call = stub_->Broadcast(&context);
    pb::BroadcastRequest open;
    open.mutable_open()->set_channel(channel_id_.to_string());
    open.mutable_open()->set_sender_peer_id(sender);
    open.mutable_open()->set_data("news");
    call->Write(open);
    call->WritesDone();
    pb::BroadcastResponse in;
    while (call->Read(&in)) receivers = in.summary().delivered() + in.summary().dropped();
    return call->Finish();
  };
  // The status of one request on a Requests stream: OK once its response ended.
  const auto request_as = [&](const std::string& sender) {
    auto open = request_open(1, channel_id_, "who?", true, receiver.peer_id().to_string());
    open.mutable_open()->mutable_open()->set_sender_peer_id(sender);
    return test::requests_outcome(*stub_, open);
  };

  for (const auto& [name, sender] : {std::pair{"native peer", victim_id}, {"other", other_id}}) {
    std::string status_trailer;
    const auto sent = send_as(sender, status_trailer);
    EXPECT_EQ(sent.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << name << ": " << sent.error_message();
    EXPECT_EQ(status_trailer, "PERMISSION_DENIED") << name;
    std::uint32_t receivers = 0;
    const auto broadcast = broadcast_as(sender, receivers);
    EXPECT_EQ(broadcast.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << name << ": " << broadcast.error_message() << " (receivers " << receivers << ")";
    EXPECT_EQ(request_as(sender), pb::STATUS_PERMISSION_DENIED) << name;
  }
  // The caller's own Respond peer: receivers see it as the sender, and a broadcast skips it.
  std::string status_trailer;
  const auto sent = send_as(own_id, status_trailer);
  EXPECT_TRUE(sent.ok()) << sent.error_message();
  std::uint32_t receivers = 0;
  const auto broadcast = broadcast_as(own_id, receivers);
  EXPECT_TRUE(broadcast.ok()) << broadcast.error_message();
  EXPECT_EQ(receivers, 3u);  // receiver, victim and the other connection's peer
  EXPECT_EQ(request_as(own_id), pb::STATUS_OK);
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(senders, (std::vector<std::string>{own_id, own_id}));
  }
  other_context.TryCancel();
  (void)other->Finish();
  own_context.TryCancel();
  (void)own->Finish();
}

// A Respond or Requests call that half-closes before its first message, or whose first message
// does not parse, is refused like any malformed first message.
TEST_F(Gateway, RespondAndRequestsWithoutAValidFirstMessageAreInvalidArgument) {
  for (const char* method : {"/switchboard.v1.SwitchboardService/Respond",
                             "/switchboard.v1.SwitchboardService/Requests"}) {
    for (const bool garbage : {false, true}) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + 10s);
      auto call = raw_call(context, method);
      if (garbage) {
        // Field 1 with wire type 7, which does not exist: no message parses from this.
        grpc::Slice bytes(std::string("\x0f\x01", 2));
        grpc::ByteBuffer message(&bytes, 1);
        call->Write(message);
      }
      call->WritesDone();
      grpc::ByteBuffer in;
      while (call->Read(&in)) {
      }
      const auto status = call->Finish();
      const std::string what = std::string(method) + (garbage ? ", unparsable" : ", half-closed");
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << what << ": " << status.error_code() << " " << status.error_message();
      EXPECT_EQ(trailer(context, "switchboard-status"), "PROTOCOL_ERROR") << what;
    }
  }
}

// Every call that ends OK says so in the switchboard-status trailer too, as the other statuses.
TEST_F(Gateway, CallsEndingOkCarryTheOkTrailer) {
  BlockingClient responder(options_for(relay_.port(), channel_id_, true));
  responder.serve(test::echo);
  responder.on_broadcast([](BlockingStream& broadcast) {
    std::uint8_t sink[256];
    while (broadcast.read(sink) > 0) {
    }
  });
  {
    grpc::ClientContext context;
    std::string response;
    const auto status = send(context, "", "ok?", response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response, "ok?");
    EXPECT_EQ(trailer(context, "switchboard-status"), "OK") << "Send";
  }
  {
    grpc::ClientContext context;
    auto call = stub_->Broadcast(&context);
    pb::BroadcastRequest open;
    open.mutable_open()->set_channel(channel_id_.to_string());
    open.mutable_open()->set_data("ok?");
    call->Write(open);
    call->WritesDone();
    pb::BroadcastResponse in;
    while (call->Read(&in)) {
    }
    const auto status = call->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(trailer(context, "switchboard-status"), "OK") << "Broadcast";
  }
  {
    grpc::ClientContext context;
    auto call = stub_->Requests(&context);
    call->Write(request_open(1, channel_id_, "ok?", true));
    call->WritesDone();
    pb::RequestsResponse in;
    while (call->Read(&in)) {
    }
    const auto status = call->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(trailer(context, "switchboard-status"), "OK") << "Requests";
  }
  {
    grpc::ClientContext context;
    auto respond = join_respond(context);
    respond->WritesDone();
    pb::RespondResponse in;
    while (respond->Read(&in)) {
    }
    const auto status = respond->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(trailer(context, "switchboard-status"), "OK") << "Respond";
  }
  {
    grpc::ClientContext context;
    pb::ListPeersRequest request;
    request.set_channel(channel_id_.to_string());
    pb::ListPeersResponse peers;
    const auto status = stub_->ListPeers(&context, request, &peers);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(trailer(context, "switchboard-status"), "OK") << "ListPeers";
  }
}

TEST_F(Gateway, LocateOnARelayAloneAnswersHere) {
  grpc::ClientContext context;
  pb::LocateRequest request;
  request.set_channel(channel_id_.to_string());
  pb::LocateResponse response;
  const auto status = stub_->Locate(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.here());
  EXPECT_TRUE(response.grpc_address().empty());
  EXPECT_EQ(response.revision(), 0U);

  grpc::ClientContext bad_context;
  pb::LocateRequest bad;
  bad.set_channel("not-a-uuid");
  EXPECT_EQ(stub_->Locate(&bad_context, bad, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace switchboard
