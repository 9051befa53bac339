// switchboard-cluster-bench grpc: gRPC requests to a channel of a cluster, straight to its owner
// (after asking another relay with Locate) and through a relay that does not own it; a native
// responder on the owner answers them.
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <future>
#include <thread>

#include "sb_cluster.hpp"
#include "switchboard/client.hpp"

#ifdef SB_CLUSTER_GRPC
#include <grpcpp/grpcpp.h>

#include "switchboard/v1/switchboard.grpc.pb.h"
#endif

namespace sbc {

#ifdef SB_CLUSTER_GRPC
namespace {

namespace asio = boost::asio;
namespace pb = ::switchboard::v1;
using switchboard::client::Connection;
using switchboard::client::ConnectOptions;
using switchboard::client::Outcome;
using switchboard::client::Stream;

// A native responder on its own I/O thread: answers each request, once read whole, with 128 bytes.
class NativeResponder {
public:
  NativeResponder(const RelayInfo& entry, const Uuid& channel) {
    ConnectOptions options;
    options.host = entry.host;
    options.port = entry.port;
    options.channel = channel;
    options.accept_requests = true;
    asio::co_spawn(
        io_,
        [this, options]() mutable -> asio::awaitable<void> {
          Outcome outcome;
          connection_ = co_await Connection::connect(io_.get_executor(), options, outcome);
          if (!connection_) {
            ready_.set_value(outcome.describe());
            co_return;
          }
          connection_->on_request([this](std::shared_ptr<Stream> request) {
            asio::co_spawn(io_, serve(std::move(request)), asio::detached);
          });
          ready_.set_value("");
        },
        asio::detached);
    thread_ = std::thread([this] { io_.run(); });
    auto joined = ready_.get_future();
    std::string failure = "no answer from the relay";
    if (joined.wait_for(std::chrono::seconds(15)) == std::future_status::ready) {
      failure = joined.get();
    }
    if (!failure.empty()) {
      stop();
      throw std::runtime_error("native responder: " + failure);
    }
  }
  ~NativeResponder() { stop(); }
  NativeResponder(const NativeResponder&) = delete;
  NativeResponder& operator=(const NativeResponder&) = delete;

private:
  static asio::awaitable<void> serve(std::shared_ptr<Stream> request) {
    for (;;) {
      auto chunk = co_await request->read();
      if (chunk.size == 0) break;
    }
    std::array<std::uint8_t, 128> reply{};
    co_await request->write(reply, true);
  }

  void stop() {
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_{asio::make_work_guard(io_)};
  std::promise<std::string> ready_;
  std::shared_ptr<Connection> connection_;
  std::thread thread_;
};

std::string address_of(const RelayInfo& relay) {
  return relay.host + ":" + std::to_string(relay.grpc_port);
}

std::unique_ptr<pb::SwitchboardService::Stub> stub_for(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    throw std::runtime_error("cannot connect to " + address);
  }
  return pb::SwitchboardService::NewStub(channel);
}

std::string describe(const grpc::Status& status) {
  return "gRPC status " + std::to_string(status.error_code()) + ": " + status.error_message();
}

// A call the relay would not take: refused on the door, before any answer.
struct Refused {
  std::string message;
};

// One request as its own Send RPC (open carrying the body, half-closed with it); round trip ns.
std::int64_t one_rpc(pb::SwitchboardService::Stub& stub, const pb::SendRequest& open) {
  const auto start = bench::now_ns();
  grpc::ClientContext context;
  auto call = stub.Send(&context);
  call->WriteLast(open, grpc::WriteOptions());
  std::size_t received = 0;
  pb::SendResponse in;
  while (call->Read(&in)) received += in.chunk().data().size();
  const auto status = call->Finish();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE && received == 0) {
    throw Refused{describe(status)};
  }
  if (!status.ok()) throw std::runtime_error("request failed: " + describe(status));
  if (received == 0) throw std::runtime_error("empty response");
  return bench::now_ns() - start;
}

// `n` sequential requests on one Requests stream, each under its own id; round trips in ns.
void mux_requests(pb::SwitchboardService::Stub& stub, const std::string& channel,
                  const std::string& body, std::uint64_t warmup, std::uint64_t n,
                  std::vector<double>& rtt) {
  grpc::ClientContext context;
  auto call = stub.Requests(&context);
  pb::RequestsRequest request;
  request.mutable_open()->mutable_open()->set_channel(channel);
  request.mutable_open()->mutable_open()->set_data(body);
  request.mutable_open()->set_last(true);
  pb::RequestsResponse in;
  for (std::uint64_t id = 1; id <= warmup + n; ++id) {
    const auto t0 = bench::now_ns();
    request.mutable_open()->set_id(id);
    if (!call->Write(request)) break;  // the stream ended: Finish says why
    std::size_t received = 0;
    for (bool last = false; !last;) {
      if (!call->Read(&in)) {
        const auto status = call->Finish();
        if (status.error_code() == grpc::StatusCode::UNAVAILABLE && id == 1) {
          throw Refused{describe(status)};
        }
        throw std::runtime_error("requests stream ended: " + describe(status));
      }
      if (in.has_end()) {
        // A relay may refuse the request in the stream rather than the whole call.
        if (in.end().status() == pb::STATUS_REFUSED && id == 1) {
          throw Refused{"request ended with status REFUSED: " + in.end().message()};
        }
        throw std::runtime_error("request ended with status " + pb::Status_Name(in.end().status()) +
                                 ": " + in.end().message());
      }
      received += in.chunk().data().size();
      last = in.chunk().last();
    }
    if (received == 0) throw std::runtime_error("empty response");
    if (id > warmup) rtt.push_back(static_cast<double>(bench::now_ns() - t0));
  }
  call->WritesDone();
  const auto status = call->Finish();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE && rtt.empty()) {
    throw Refused{describe(status)};
  }
  if (!status.ok()) throw std::runtime_error("requests stream: " + describe(status));
}

void print_latency(const std::string& system, const std::string& variant,
                   std::vector<double>& rtt) {
  bench::Json json;
  json.add("workload", "cluster-grpc")
      .add("system", system)
      .add("variant", variant)
      .add("n", static_cast<std::uint64_t>(rtt.size()));
  bench::add_latency(json, rtt);
  json.print();
}

void print_refused(const std::string& system, const std::string& variant,
                   const std::string& message) {
  bench::Json()
      .add("workload", "cluster-grpc")
      .add("system", system)
      .add("variant", variant)
      .add("refused", "refused (not carried)")
      .add("message", message)
      .print();
}

}  // namespace

int grpc_workload(const bench::Args& args) {
  const auto relays = relays_of(args);
  const auto n = args.num("n", 2000);
  const auto warmup = args.num("warmup", 200);
  const auto system = args.str("system", std::to_string(relays.size()) + "-relays");
  if (relays.size() < 2) throw std::invalid_argument("grpc needs a cluster of 2+ relays");
  for (const auto& relay : relays) {
    if (relay.grpc_port == 0) throw std::invalid_argument("grpc needs --grpc-ports");
  }
  // Every time limit is a bound on the whole process, as for the native commands.
  const auto limit = std::chrono::seconds(args.num("timeout", 120));
  std::thread([limit, system] {
    std::this_thread::sleep_for(limit);
    bench::Json()
        .add("workload", "cluster-grpc")
        .add("system", system)
        .add("error", "time limit reached")
        .print();
    std::_Exit(3);
  }).detach();

  const auto channel = Uuid::random();
  const auto owner = owner_index(relays, channel);
  const auto& other = relays[(owner + 1) % relays.size()];
  // The responder enters through the other relay too: REDIRECT takes it to the owner.
  NativeResponder responder(other, channel);
  std::string body(args.num("size", 128), '\0');
  bench::fill_pattern(reinterpret_cast<std::uint8_t*>(body.data()), body.size(), 1);
  pb::SendRequest open;
  open.mutable_open()->set_channel(channel.to_string());
  open.mutable_open()->set_data(body);

  // Locate on a relay that does not serve the channel, as a client's first call does.
  auto other_stub = stub_for(address_of(other));
  std::vector<double> rtt;
  std::string located;
  for (std::uint64_t i = 0; i < warmup + n; ++i) {
    const auto t0 = bench::now_ns();
    grpc::ClientContext context;
    pb::LocateRequest request;
    request.set_channel(channel.to_string());
    pb::LocateResponse response;
    const auto status = other_stub->Locate(&context, request, &response);
    if (!status.ok()) throw std::runtime_error("Locate failed: " + describe(status));
    if (i >= warmup) rtt.push_back(static_cast<double>(bench::now_ns() - t0));
    located = response.here() ? address_of(other) : response.grpc_address();
  }
  print_latency(system, "locate", rtt);
  if (located != address_of(relays[owner])) {
    throw std::runtime_error("Locate named " + located + ", placement says " +
                             address_of(relays[owner]));
  }

  // Straight to the owner, at the address Locate gave.
  auto owner_stub = stub_for(located);
  rtt.clear();
  for (std::uint64_t i = 0; i < warmup + n; ++i) {
    const auto t = one_rpc(*owner_stub, open);
    if (i >= warmup) rtt.push_back(static_cast<double>(t));
  }
  print_latency(system, "owner-rpc", rtt);
  rtt.clear();
  mux_requests(*owner_stub, channel.to_string(), body, warmup, n, rtt);
  print_latency(system, "owner-mux", rtt);

  // Through the relay that does not own the channel: carried to the owner, or refused.
  rtt.clear();
  try {
    for (std::uint64_t i = 0; i < warmup + n; ++i) {
      const auto t = one_rpc(*other_stub, open);
      if (i >= warmup) rtt.push_back(static_cast<double>(t));
    }
    print_latency(system, "through-rpc", rtt);
  } catch (const Refused& refused) {
    print_refused(system, "through-rpc", refused.message);
  }
  rtt.clear();
  try {
    mux_requests(*other_stub, channel.to_string(), body, warmup, n, rtt);
    print_latency(system, "through-mux", rtt);
  } catch (const Refused& refused) {
    print_refused(system, "through-mux", refused.message);
  }
  std::fflush(stdout);
  std::_Exit(0);  // channels and the responder's connection may still be pending
}

#else

int grpc_workload(const bench::Args&) {
  std::fprintf(stderr, "switchboard-cluster-bench: built without gRPC\n");
  return 2;
}

#endif

}  // namespace sbc
