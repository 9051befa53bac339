// Token auth on both doors: the refusal matrix, expiry of live peers and calls, open mode,
// refusal counters, and the server binary's key flags.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>

#include "auth/token_mint.hpp"
#include "support/clients.hpp"
#include "support/grpc_requests.hpp"
#include "support/process.hpp"
#include "support/relay.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

// Tokens are described with designated initializers naming only what differs from a valid token.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace switchboard {
namespace {

namespace pb = ::switchboard::v1;
namespace fs = std::filesystem;
using client::BlockingClient;
using core::auth::Failure;
using namespace std::chrono_literals;

const std::string kSecret = "matrix-secret";

/// RSA and EC key pairs made with the openssl CLI, and the HS256 secret, in a temporary folder.
struct Keys {
  fs::path dir;
  std::string rsa_private, ec_private;

  Keys() {
    char pattern[] = "/tmp/switchboard-auth-XXXXXX";
    dir = ::mkdtemp(pattern);
    const auto run = [](const std::string& command) {
      if (std::system((command + " 2>/dev/null").c_str()) != 0) {
        throw std::runtime_error("failed: " + command);
      }
    };
    const auto d = dir.string();
    run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " + d + "/rsa.pem");
    run("openssl pkey -in " + d + "/rsa.pem -pubout -out " + d + "/rsa.pub");
    run("openssl ecparam -name prime256v1 -genkey -noout -out " + d + "/ec.pem");
    run("openssl ec -in " + d + "/ec.pem -pubout -out " + d + "/ec.pub");
    std::ofstream(dir / "secret") << kSecret << "\n";
    rsa_private = core::auth::read_key_file(d + "/rsa.pem", false);
    ec_private = core::auth::read_key_file(d + "/ec.pem", false);
  }
  ~Keys() { fs::remove_all(dir); }

  core::auth::AuthConfig config() const {
    core::auth::AuthConfig auth;
    auth.mode = core::auth::Mode::required;
    auth.hs256_secret_file = (dir / "secret").string();
    auth.public_key_files = {(dir / "rsa.pub").string(), (dir / "ec.pub").string()};
    return auth;
  }
};

Keys& keys() {
  static Keys instance;
  return instance;
}

struct Mint {
  std::string alg = "HS256";
  std::string channel;
  std::vector<std::string> perms{"send", "respond", "broadcast", "presence"};
  std::chrono::seconds ttl{60};
  std::string peer;
  std::string secret = kSecret;
};

std::string mint(const Mint& m) {
  core::auth::MintOptions options;
  options.algorithm = m.alg;
  options.key = m.alg == "HS256"   ? m.secret
                : m.alg == "RS256" ? keys().rsa_private
                                   : keys().ec_private;
  options.channel = m.channel;
  options.peer = m.peer;
  options.permissions = m.perms;
  options.ttl = m.ttl;
  return core::auth::mint_token(options);
}

std::string base64url(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::uint32_t bits = 0;
  int count = 0;
  for (const char c : bytes) {
    bits = (bits << 8) | static_cast<std::uint8_t>(c);
    count += 8;
    while (count >= 6) {
      count -= 6;
      out.push_back(kAlphabet[(bits >> count) & 0x3F]);
    }
  }
  if (count > 0) out.push_back(kAlphabet[(bits << (6 - count)) & 0x3F]);
  return out;
}

/// A compact HS256 JWT over `claims` (a JSON object's text) signed with kSecret: claims of
/// types the minter never writes.
std::string hs256_token(const std::string& claims) {
  const std::string signed_part =
      base64url(R"({"alg":"HS256","typ":"JWT"})") + "." + base64url(claims);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_size = 0;
  HMAC(EVP_sha256(), kSecret.data(), static_cast<int>(kSecret.size()),
       reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size(), mac,
       &mac_size);
  return signed_part + "." +
         base64url(std::string_view(reinterpret_cast<const char*>(mac), mac_size));
}

std::vector<std::string> all_but(const std::string& missing) {
  std::vector<std::string> perms;
  for (const char* p : {"send", "respond", "broadcast", "presence"}) {
    if (missing != p) perms.emplace_back(p);
  }
  return perms;
}

std::string status_text(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    default:
      return "grpc code " + std::to_string(status.error_code()) + ": " + status.error_message();
  }
}

/// One row of the printed matrix.
struct Row {
  std::string door, name, action, expected, got, reason;
};

void print_matrix(const std::vector<Row>& rows) {
  std::printf(
      "\n| door   | case                    | action           | expected          | got"
      "               | reason\n");
  std::printf(
      "|--------|-------------------------|------------------|-------------------|----"
      "---------------|-------\n");
  for (const auto& r : rows) {
    std::printf("| %-6s | %-23s | %-16s | %-17s | %-17s | %s\n", r.door.c_str(), r.name.c_str(),
                r.action.c_str(), r.expected.c_str(), r.got.c_str(), r.reason.c_str());
  }
  std::fflush(stdout);
}

enum class Action { join, join_responder, send, broadcast, presence };

const char* action_name(Action action) {
  switch (action) {
    case Action::join:
      return "join";
    case Action::join_responder:
      return "join responder";
    case Action::send:
      return "send";
    case Action::broadcast:
      return "broadcast";
    case Action::presence:
      return "list/watch peers";
  }
  return "?";
}

struct Case {
  std::string name;
  std::string token;
  Action action;
  std::string expected;
  Uuid peer;                 // the identity the caller uses (nil: assigned / anonymous)
  bool as_metadata = false;  // gRPC: send the token as authorization: Bearer metadata
};

class Auth : public ::testing::Test {
protected:
  Auth() : relay_(config()), stub_(make_stub()) {
    // The bystander: a responder on the channel that every case must leave undisturbed.
    auto options = test::options_for(relay_.port(), channel_, true);
    options.token = mint({.channel = channel_.to_string()});
    bystander_ = std::make_unique<BlockingClient>(options);
    bystander_->serve([this](client::BlockingStream& request) {
      ++bystander_streams_;
      test::echo(request);
    });
    bystander_->on_broadcast([this](client::BlockingStream& broadcast) {
      ++bystander_streams_;
      std::uint8_t sink[4096];
      while (broadcast.read(sink) > 0) {
      }
    });
    bystander_->on_presence([this](const client::PresenceChange&) { ++bystander_events_; });
    // Each membership change from here on reaches the bystander as one event.
    events_offset_ = static_cast<std::int64_t>(version()) - bystander_events_.load();
  }

  static core::ServerConfig config() {
    core::ServerConfig config;
    config.limits = test::fast_limits();
    config.auth = keys().config();
    return config;
  }

  std::unique_ptr<pb::SwitchboardService::Stub> make_stub() {
    return pb::SwitchboardService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(relay_.server().grpc_port()),
                            grpc::InsecureChannelCredentials()));
  }

  std::uint64_t version() {
    std::uint64_t v = 0;
    relay_.registry().members(channel_, v);
    return v;
  }
  std::size_t members() {
    std::uint64_t v = 0;
    return relay_.registry().members(channel_, v).size();
  }

  /// The bystander still answers: a valid sender's request comes back whole.
  bool bystander_answers() {
    auto options = test::options_for(relay_.port(), channel_);
    options.token = mint({.channel = channel_.to_string(), .perms = {"send"}});
    BlockingClient sender(options);
    std::vector<std::uint8_t> response;
    const std::string body = "still there?";
    const auto outcome = sender.send({}, test::as_bytes(body), response);
    return outcome.ok() && std::string(response.begin(), response.end()) == body;
  }

  // ---- Native door: the real client library. ----
  std::pair<std::string, std::string> native(const Case& c) {
    auto options = test::options_for(relay_.port(), channel_, c.action == Action::join_responder);
    options.token = c.token;
    options.peer_id = c.peer;
    options.observe = c.action == Action::presence;  // presence without joining (version 2)
    std::unique_ptr<BlockingClient> client;
    try {
      client = std::make_unique<BlockingClient>(options);
    } catch (const client::ConnectError& e) {
      return {std::string(status_name(e.outcome().status)), e.outcome().message};
    }
    client::Outcome outcome;
    if (c.action == Action::send) {
      std::vector<std::uint8_t> response;
      outcome = client->send({}, test::as_bytes("ping"), response);
    } else if (c.action == Action::broadcast) {
      auto stream = client->broadcast();
      stream.write(test::as_bytes("hello all"), true);
      outcome = stream.result();
    }
    return {std::string(status_name(outcome.status)), outcome.message};
  }

  // ---- gRPC door: a generated C++ stub. ----
  void authorize(grpc::ClientContext& context, const Case& c) {
    if (c.as_metadata) context.AddMetadata("authorization", "Bearer " + c.token);
  }
  std::string field(const Case& c) { return c.as_metadata ? "" : c.token; }

  std::pair<std::string, std::string> grpc_call(const Case& c) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    authorize(context, c);
    grpc::Status status;
    const std::string peer = c.peer.is_nil() ? "" : c.peer.to_string();
    switch (c.action) {
      case Action::join:
      case Action::join_responder: {
        auto call = stub_->Respond(&context);
        pb::RespondRequest join;
        join.mutable_join()->set_channel(channel_.to_string());
        join.mutable_join()->set_peer_id(peer);
        join.mutable_join()->set_token(field(c));
        call->Write(join);
        pb::RespondResponse in;
        if (call->Read(&in) && in.has_joined()) {
          call->WritesDone();
          while (call->Read(&in)) {
          }
        }
        status = call->Finish();
        break;
      }
      case Action::send: {
        auto call = stub_->Send(&context);
        pb::SendRequest open;
        open.mutable_open()->set_channel(channel_.to_string());
        open.mutable_open()->set_sender_peer_id(peer);
        open.mutable_open()->set_token(field(c));
        open.mutable_open()->set_data("ping");
        call->Write(open);
        call->WritesDone();
        pb::SendResponse in;
        std::string response;
        while (call->Read(&in)) response += in.chunk().data();
        status = call->Finish();
        if (status.ok() && response != "ping") return {"WRONG RESPONSE", response};
        break;
      }
      case Action::broadcast: {
        auto call = stub_->Broadcast(&context);
        pb::BroadcastRequest open;
        open.mutable_open()->set_channel(channel_.to_string());
        open.mutable_open()->set_token(field(c));
        open.mutable_open()->set_data("hello all");
        call->Write(open);
        call->WritesDone();
        pb::BroadcastResponse in;
        while (call->Read(&in)) {
        }
        status = call->Finish();
        break;
      }
      case Action::presence: {
        pb::ListPeersRequest list;
        list.set_channel(channel_.to_string());
        list.set_token(field(c));
        pb::ListPeersResponse peers;
        status = stub_->ListPeers(&context, list, &peers);
        // WatchPeers must agree with ListPeers.
        grpc::ClientContext watch_context;
        watch_context.set_deadline(std::chrono::system_clock::now() + 10s);
        authorize(watch_context, c);
        pb::WatchPeersRequest watch;
        watch.set_channel(channel_.to_string());
        watch.set_token(field(c));
        auto reader = stub_->WatchPeers(&watch_context, watch);
        pb::WatchPeersResponse update;
        const bool got_snapshot = reader->Read(&update);
        if (got_snapshot) watch_context.TryCancel();
        const auto watch_status = reader->Finish();
        if (got_snapshot != status.ok() ||
            (!got_snapshot && watch_status.error_code() != status.error_code())) {
          return {"LIST/WATCH DISAGREE", watch_status.error_message()};
        }
        break;
      }
    }
    return {status_text(status), status.error_message()};
  }

  std::vector<Case> matrix(bool grpc_door) {
    const auto ch = channel_.to_string();
    const auto bound = Uuid::random();
    std::vector<Case> cases = {
        {"no token", "", Action::join_responder, "UNAUTHENTICATED", {}},
        {"garbage token", "not.a.jwt", Action::join_responder, "UNAUTHENTICATED", {}},
        {"bad signature",
         mint({.channel = ch, .secret = "another-secret"}),
         Action::join_responder,
         "UNAUTHENTICATED",
         {}},
        {"expired",
         mint({.channel = ch, .ttl = -5s}),
         Action::join_responder,
         "UNAUTHENTICATED",
         {}},
        {"wrong channel",
         mint({.channel = Uuid::random().to_string()}),
         Action::join_responder,
         "PERMISSION_DENIED",
         {}},
        {"wrong peer id", mint({.channel = ch, .peer = bound.to_string()}), Action::join_responder,
         "PERMISSION_DENIED", Uuid::random()},
        {"missing send",
         mint({.channel = ch, .perms = all_but("send")}),
         Action::send,
         "PERMISSION_DENIED",
         {}},
        {"missing respond",
         mint({.channel = ch, .perms = all_but("respond")}),
         Action::join_responder,
         "PERMISSION_DENIED",
         {}},
        {"missing broadcast",
         mint({.channel = ch, .perms = all_but("broadcast")}),
         Action::broadcast,
         "PERMISSION_DENIED",
         {}},
        {"valid HS256", mint({.channel = ch}), Action::send, "OK", {}},
        {"valid RS256", mint({.alg = "RS256", .channel = ch}), Action::send, "OK", {}},
        {"valid ES256",
         mint({.alg = "ES256", .channel = ch.substr(0, 8) + "*"}),
         Action::send,
         "OK",
         {}},
        {"valid, bound peer", mint({.channel = ch, .peer = bound.to_string()}),
         Action::join_responder, "OK", bound},
        {"valid broadcast",
         mint({.channel = "*", .perms = {"broadcast"}}),
         Action::broadcast,
         "OK",
         {}},
    };
    if (grpc_door) {
      cases.push_back({"missing presence",
                       mint({.channel = ch, .perms = all_but("presence")}),
                       Action::presence,
                       "PERMISSION_DENIED",
                       {}});
      cases.push_back({"valid presence",
                       mint({.channel = ch, .perms = {"presence"}}),
                       Action::presence,
                       "OK",
                       {}});
      cases.push_back(
          {"valid, Bearer metadata", mint({.channel = ch}), Action::send, "OK", {}, true});
      cases.push_back({"expired, Bearer metadata",
                       mint({.channel = ch, .ttl = -5s}),
                       Action::send,
                       "UNAUTHENTICATED",
                       {},
                       true});
    } else {
      cases.push_back({"no token, plain join", "", Action::join, "UNAUTHENTICATED", {}});
      // An observer (HELLO flag OBSERVE) needs what the gRPC presence calls need.
      cases.push_back({"observer, missing presence",
                       mint({.channel = ch, .perms = all_but("presence")}),
                       Action::presence,
                       "PERMISSION_DENIED",
                       {}});
      cases.push_back({"observer, valid presence",
                       mint({.channel = ch, .perms = {"presence"}}),
                       Action::presence,
                       "OK",
                       {}});
    }
    return cases;
  }

  void run_matrix(bool grpc_door) {
    std::vector<Row> rows;
    for (const auto& c : matrix(grpc_door)) {
      // Earlier cases' clients have left: only the bystander is on the channel.
      // Presence events reach the bystander after the registry changes: wait for them too.
      ASSERT_TRUE(test::eventually([&] {
        return members() == 1 &&
               static_cast<std::int64_t>(version()) - bystander_events_.load() == events_offset_;
      })) << c.name;
      const auto version_before = version();
      const auto events_before = bystander_events_.load();
      const auto streams_before = bystander_streams_.load();
      const auto [got, reason] = grpc_door ? grpc_call(c) : native(c);
      rows.push_back(
          {grpc_door ? "grpc" : "native", c.name, action_name(c.action), c.expected, got, reason});
      EXPECT_EQ(got, c.expected) << c.name << ": " << reason;
      if (c.expected != "OK") {
        EXPECT_FALSE(reason.empty()) << c.name;
        // A refused stream reaches nobody.
        EXPECT_EQ(bystander_streams_.load(), streams_before) << c.name;
        if (c.action == Action::join || c.action == Action::join_responder ||
            c.action == Action::presence) {
          // A refused join never reaches the registry: nobody sees a join or a leave.
          EXPECT_EQ(version(), version_before) << c.name;
          EXPECT_EQ(bystander_events_.load(), events_before) << c.name;
        }
      }
      EXPECT_TRUE(bystander_answers()) << "after " << c.name;
    }
    print_matrix(rows);
  }

  Uuid channel_ = Uuid::random();
  test::InProcessRelay relay_;
  std::unique_ptr<pb::SwitchboardService::Stub> stub_;
  std::atomic<int> bystander_events_{0};
  std::atomic<int> bystander_streams_{0};
  std::int64_t events_offset_ = 0;
  std::unique_ptr<BlockingClient> bystander_;
};

TEST_F(Auth, NativeDoorMatrix) {
  run_matrix(false);
  auto& counters = relay_.counters();
  EXPECT_EQ(counters.auth_failures_for(Failure::missing_token), 2u);
  EXPECT_EQ(counters.auth_failures_for(Failure::invalid_token), 2u);  // garbage, bad signature
  EXPECT_EQ(counters.auth_failures_for(Failure::expired_token), 1u);
  EXPECT_EQ(counters.auth_failures_for(Failure::wrong_channel), 1u);
  EXPECT_EQ(counters.auth_failures_for(Failure::wrong_peer), 1u);
  // send, respond, broadcast, and presence (an observer).
  EXPECT_EQ(counters.auth_failures_for(Failure::missing_permission), 4u);
}

TEST_F(Auth, GrpcDoorMatrix) {
  run_matrix(true);
  auto& counters = relay_.counters();
  EXPECT_EQ(counters.auth_failures_for(Failure::missing_token), 1u);
  EXPECT_EQ(counters.auth_failures_for(Failure::invalid_token), 2u);
  EXPECT_EQ(counters.auth_failures_for(Failure::expired_token), 2u);
  EXPECT_EQ(counters.auth_failures_for(Failure::wrong_channel), 1u);
  EXPECT_EQ(counters.auth_failures_for(Failure::wrong_peer), 1u);
  // send, respond, broadcast, and presence twice (ListPeers and WatchPeers).
  EXPECT_EQ(counters.auth_failures_for(Failure::missing_permission), 5u);
}

TEST_F(Auth, NativePeerIsEndedAtTokenExpiryWithItsStreamsReset) {
  auto options = test::options_for(relay_.port(), channel_);
  options.token = mint({.channel = channel_.to_string(), .ttl = 2s});
  BlockingClient client(options);
  // A request in flight at expiry: the bystander echoes but the body never ends.
  auto stream = client.request({});
  ASSERT_TRUE(stream.write(test::as_bytes("unfinished")).ok());
  auto closed = std::async(std::launch::async, [&] { return client.wait_closed(); });
  ASSERT_EQ(closed.wait_for(10s), std::future_status::ready) << "not ended at token expiry";
  const auto outcome = closed.get();
  EXPECT_EQ(outcome.status, Status::unauthenticated) << outcome.describe();
  EXPECT_EQ(outcome.message, "token expired");
  const auto stream_outcome = stream.result();
  EXPECT_EQ(stream_outcome.status, Status::unauthenticated) << stream_outcome.describe();
  EXPECT_EQ(relay_.counters().auth_failures_for(Failure::expired_token), 1u);
  EXPECT_TRUE(bystander_answers());
}

TEST_F(Auth, GrpcRespondAndWatchEndUnauthenticatedAtTokenExpiry) {
  const auto token = mint({.channel = channel_.to_string(), .ttl = 2s});
  grpc::ClientContext respond_context;
  respond_context.set_deadline(std::chrono::system_clock::now() + 15s);
  auto respond = stub_->Respond(&respond_context);
  pb::RespondRequest join;
  join.mutable_join()->set_channel(channel_.to_string());
  join.mutable_join()->set_token(token);
  ASSERT_TRUE(respond->Write(join));
  pb::RespondResponse in;
  ASSERT_TRUE(respond->Read(&in));
  ASSERT_TRUE(in.has_joined());

  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + 15s);
  watch_context.AddMetadata("authorization", "Bearer " + token);
  pb::WatchPeersRequest watch;
  watch.set_channel(channel_.to_string());
  auto reader = stub_->WatchPeers(&watch_context, watch);
  pb::WatchPeersResponse update;
  ASSERT_TRUE(reader->Read(&update));

  // Both calls end on their own at expiry (well before the 15 s deadline).
  const auto started = std::chrono::steady_clock::now();
  while (respond->Read(&in)) {
  }
  const auto respond_status = respond->Finish();
  while (reader->Read(&update)) {
  }
  const auto watch_status = reader->Finish();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
  EXPECT_EQ(respond_status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << respond_status.error_message();
  EXPECT_EQ(respond_status.error_message(), "token expired");
  EXPECT_EQ(watch_status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << watch_status.error_message();
  EXPECT_EQ(relay_.counters().auth_failures_for(Failure::expired_token), 2u);
  EXPECT_TRUE(bystander_answers());
}

// With auth required, sender_peer_id must be proven by the token's peer claim: a token without
// one can neither make a live peer the sender of a request nor leave it out of a broadcast.
TEST_F(Auth, GrpcSenderPeerIdMustBeTheTokensPeer) {
  const auto ch = channel_.to_string();
  std::mutex mutex;
  std::vector<std::string> senders;  // the sender of each request that reached `receiver`
  auto receiver_options = test::options_for(relay_.port(), channel_, true);
  receiver_options.token = mint({.channel = ch});
  BlockingClient receiver(receiver_options);
  receiver.serve([&](client::BlockingStream& request) {
    {
      std::lock_guard lock(mutex);
      senders.push_back(request.peer().to_string());
    }
    test::echo(request);
  });
  receiver.on_broadcast([](client::BlockingStream& broadcast) {
    std::uint8_t sink[256];
    while (broadcast.read(sink) > 0) {
    }
  });
  auto victim_options = test::options_for(relay_.port(), channel_);
  victim_options.token = mint({.channel = ch});
  BlockingClient victim(victim_options);
  const auto victim_id = victim.peer_id().to_string();
  const auto target = receiver.peer_id().to_string();
  const auto unbound = mint({.channel = ch, .perms = {"send", "broadcast"}});
  const auto bound = mint({.channel = ch, .perms = {"send", "broadcast"}, .peer = victim_id});

  const auto send_as = [&](const std::string& token, const std::string& sender,
                           std::string& status_trailer) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    auto call = stub_->Send(&context);
    pb::SendRequest open;
    open.mutable_open()->set_channel(ch);
    open.mutable_open()->set_target(target);
    open.mutable_open()->set_sender_peer_id(sender);
    open.mutable_open()->set_token(token);
    open.mutable_open()->set_data("who?");
    call->Write(open);
    call->WritesDone();
    pb::SendResponse in;
    while (call->Read(&in)) {
    }
    const auto status = call->Finish();
    const auto& trailers = context.GetServerTrailingMetadata();
    const auto it = trailers.find("switchboard-status");
    status_trailer = it == trailers.end() ? "" : std::string(it->second.data(), it->second.size());
    return status;
  };
  const auto broadcast_as = [&](const std::string& token, const std::string& sender) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    auto call = stub_->Broadcast(&context);
    pb::BroadcastRequest open;
    open.mutable_open()->set_channel(ch);
    open.mutable_open()->set_sender_peer_id(sender);
    open.mutable_open()->set_token(token);
    open.mutable_open()->set_data("news");
    call->Write(open);
    call->WritesDone();
    pb::BroadcastResponse in;
    while (call->Read(&in)) {
    }
    return call->Finish();
  };
  // The status of one request on a Requests stream: OK once its response ended.
  const auto request_as = [&](const std::string& token, const std::string& sender) {
    pb::RequestsRequest message;
    auto* open = message.mutable_open();
    open->set_id(1);
    open->set_last(true);
    open->mutable_open()->set_channel(ch);
    open->mutable_open()->set_target(target);
    open->mutable_open()->set_sender_peer_id(sender);
    open->mutable_open()->set_token(token);
    open->mutable_open()->set_data("who?");
    return test::requests_outcome(*stub_, message);
  };

  // A token without a peer claim cannot speak for the victim.
  std::string status_trailer;
  const auto spoofed = send_as(unbound, victim_id, status_trailer);
  EXPECT_EQ(spoofed.error_code(), grpc::StatusCode::PERMISSION_DENIED) << spoofed.error_message();
  EXPECT_EQ(status_trailer, "PERMISSION_DENIED");
  const auto spoofed_broadcast = broadcast_as(unbound, victim_id);
  EXPECT_EQ(spoofed_broadcast.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << spoofed_broadcast.error_message();
  EXPECT_EQ(request_as(unbound, victim_id), pb::STATUS_PERMISSION_DENIED);
  // A token bound to a peer must name it (unchanged) ...
  const auto unnamed = send_as(bound, "", status_trailer);
  EXPECT_EQ(unnamed.error_code(), grpc::StatusCode::PERMISSION_DENIED) << unnamed.error_message();
  // ... and then speaks for it, whichever door that peer came in by.
  const auto proven = send_as(bound, victim_id, status_trailer);
  EXPECT_TRUE(proven.ok()) << proven.error_message();
  EXPECT_EQ(status_trailer, "OK");
  const auto proven_broadcast = broadcast_as(bound, victim_id);
  EXPECT_TRUE(proven_broadcast.ok()) << proven_broadcast.error_message();
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(senders, std::vector<std::string>{victim_id});
  }
  EXPECT_EQ(relay_.counters().auth_failures_for(Failure::wrong_peer), 4u);
  EXPECT_TRUE(bystander_answers());
}

// exp and nbf must be whole numbers of seconds the relay can represent: a string, a fraction or
// an out-of-range number makes a malformed token, never an expired (or a valid) one.
TEST_F(Auth, TimeClaimsThatAreNotWholeSecondsAreMalformed) {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  const std::string valid_exp = R"(,"exp":)" + std::to_string(now + 60);
  const auto claims = [&](const std::string& times) {
    return hs256_token(R"({"channel":")" + channel_.to_string() +
                       R"(","perms":["send","respond","broadcast","presence"])" + times + "}");
  };
  struct TimeCase {
    std::string name, token, expected;  // expected: OK, expired or malformed
  };
  const std::vector<TimeCase> cases = {
      {"integer exp", claims(valid_exp), "OK"},
      {"exp in the past", claims(R"(,"exp":)" + std::to_string(now - 5)), "expired"},
      {"exp as a string", claims(R"(,"exp":")" + std::to_string(now + 60) + "\""), "malformed"},
      {"exp 1e300", claims(R"(,"exp":1e300)"), "malformed"},
      {"exp with a fraction", claims(R"(,"exp":)" + std::to_string(now + 60) + ".5"), "malformed"},
      {"exp out of range", claims(R"(,"exp":4611686018427387904)"), "malformed"},
      {"exp true", claims(R"(,"exp":true)"), "malformed"},
      {"nbf as a string", claims(valid_exp + R"(,"nbf":"0")"), "malformed"},
      {"nbf 1e300", claims(valid_exp + R"(,"nbf":1e300)"), "malformed"},
  };
  const auto verdict = [](const std::string& status, const std::string& reason) -> std::string {
    if (status == "OK") return "OK";
    if (status != "UNAUTHENTICATED") return status;
    if (reason == "token expired") return "expired";
    if (reason.find("malformed token") == 0 && reason.find("expired") == std::string::npos) {
      return "malformed";
    }
    return "other";
  };
  std::vector<Row> rows;
  for (const auto& c : cases) {
    for (const bool grpc_door : {false, true}) {
      const Case call{c.name, c.token, grpc_door ? Action::send : Action::join, c.expected, {}};
      const auto [status, reason] = grpc_door ? grpc_call(call) : native(call);
      const auto got = verdict(status, reason);
      rows.push_back({grpc_door ? "grpc" : "native", c.name, action_name(call.action), c.expected,
                      got, reason});
      EXPECT_EQ(got, c.expected) << (grpc_door ? "grpc: " : "native: ") << c.name << ": " << status
                                 << " " << reason;
    }
  }
  print_matrix(rows);
  EXPECT_TRUE(bystander_answers());
}

TEST(AuthOpenMode, TokensAreIgnored) {
  test::InProcessRelay relay(test::fast_limits());
  const auto channel = Uuid::random();
  auto responder_options = test::options_for(relay.port(), channel, true);
  responder_options.token = "garbage that an open relay never reads";
  BlockingClient responder(responder_options);
  responder.serve(test::echo);
  BlockingClient sender(test::options_for(relay.port(), channel));
  std::vector<std::uint8_t> response;
  EXPECT_TRUE(sender.send({}, test::as_bytes("open"), response).ok());
  for (std::size_t i = 0; i < core::auth::kFailureKinds; ++i) {
    EXPECT_EQ(relay.counters().auth_failures[i].load(), 0u);
  }
}

TEST(AuthServerBinary, KeyFlagsAndRefusals) {
  const auto& k = keys();
  test::ServerProcess server(
      SWITCHBOARD_SERVER_BINARY,
      {"--auth-mode", "required", "--auth-hs256-secret-file", (k.dir / "secret").string(),
       "--auth-public-key-file", (k.dir / "ec.pub").string()});
  const auto channel = Uuid::random();
  auto options = test::options_for(server.port(), channel, true);
  try {
    BlockingClient refused(options);
    ADD_FAILURE() << "joined without a token";
  } catch (const client::ConnectError& e) {
    EXPECT_EQ(e.outcome().status, Status::unauthenticated);
  }
  options.token = mint({.alg = "ES256", .channel = channel.to_string()});
  BlockingClient responder(options);
  responder.serve(test::echo);
  auto sender_options = test::options_for(server.port(), channel);
  sender_options.token = mint({.channel = "*", .perms = {"send"}});
  BlockingClient sender(sender_options);
  std::vector<std::uint8_t> response;
  EXPECT_TRUE(sender.send({}, test::as_bytes("binary"), response).ok());
  // RS256 is not configured on this relay.
  sender_options.token = mint({.alg = "RS256", .channel = "*", .perms = {"send"}});
  try {
    BlockingClient refused(sender_options);
    ADD_FAILURE() << "joined with an RS256 token but no RSA key configured";
  } catch (const client::ConnectError& e) {
    EXPECT_EQ(e.outcome().status, Status::unauthenticated);
  }
}

}  // namespace
}  // namespace switchboard
