// gw-bench: gRPC side of the gateway benchmarks: the Send load generator (stream, rr), a gRPC
// Respond peer, the direct gRPC server (no relay) that is their baseline, a trivial gRPC
// forwarder in front of it (the floor of two gRPC legs), and a byte proxy in front of it (the
// floor of a door that passes every byte through a relay thread before gRPC sees it).
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace {

namespace pb = ::switchboard::v1;

// The body of every reply starts with (bytes received, time of the last byte), as the native
// responder of switchboard-bench answers, so a sender learns the receiver's view.
constexpr std::size_t kReportSize = 16;
// Open metadata asking the direct server to echo each chunk back (ping-pong on one stream)
// instead of reading the request to its end and answering once.
constexpr const char* kModeKey = "bench-mode";
constexpr const char* kEchoMode = "echo";

std::string report_body(std::uint64_t bytes, std::int64_t last_ns, std::size_t size) {
  std::string body(std::max(size, kReportSize), '\0');
  auto* out = reinterpret_cast<std::uint8_t*>(body.data());
  bench::put_u64(out, bytes);
  bench::put_u64(out + 8, static_cast<std::uint64_t>(last_ns));
  return body;
}

std::string target_of(const bench::Args& args) {
  const auto host = args.str("host", "127.0.0.1");
  if (host != "127.0.0.1" && host != "localhost") {
    throw std::invalid_argument("only loopback targets are allowed");
  }
  if (!args.has("port")) throw std::invalid_argument("--port is required");
  return host + ":" + std::to_string(args.num("port", 0));
}

std::unique_ptr<pb::SwitchboardService::Stub> stub_to(const std::string& target) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    throw std::runtime_error("cannot connect to " + target);
  }
  return pb::SwitchboardService::NewStub(channel);
}

std::unique_ptr<pb::SwitchboardService::Stub> stub_for(const bench::Args& args) {
  return stub_to(target_of(args));
}

std::string describe(const grpc::Status& status) {
  return "gRPC status " + std::to_string(status.error_code()) + ": " + status.error_message();
}

// ---- Loopback sockets for the byte-level baselines. ----

int listen_loopback(std::uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0 || ::listen(fd, 16) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::runtime_error("cannot listen on 127.0.0.1:0");
  }
  port = ntohs(address.sin_port);
  return fd;
}

int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Copies `from` to `to` until `from` ends, then ends `to`'s sending side.
void copy_bytes(int from, int to) {
  std::vector<char> buffer(256 * 1024);
  for (;;) {
    const auto n = ::read(from, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t done = 0; done < n;) {
      const auto w =
          ::send(to, buffer.data() + done, static_cast<std::size_t>(n - done), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        ::shutdown(from, SHUT_RD);
        return;
      }
      done += w;
    }
  }
  ::shutdown(to, SHUT_WR);
}

// Sends `data` and reads as many bytes back: one round trip through an echo peer.
bool echo_round_trip(int fd, const std::string& data, std::string& back) {
  for (std::size_t done = 0; done < data.size();) {
    const auto w = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    done += static_cast<std::size_t>(w);
  }
  back.resize(data.size());
  for (std::size_t done = 0; done < back.size();) {
    const auto r = ::read(fd, back.data() + done, back.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    done += static_cast<std::size_t>(r);
  }
  return true;
}

// ---- Direct gRPC server: the baseline without a relay. ----

// Send without a relay: reads the request to its end and answers with the report (as a
// responder behind the relay does), or echoes each chunk back in echo mode. With an echo port,
// each echoed chunk first makes a round trip over TCP to that echo peer (serve-echo), on the
// call's own thread: a gRPC leg and a byte leg with no hand-off between threads, the floor of
// gRPC -> relay -> native. With an upstream echo server (another serve-direct), each echoed
// chunk first makes a round trip over one gRPC Send to it, on the call's own thread: two gRPC
// legs with no hand-off, the floor of gRPC -> relay -> gRPC.
class DirectService final : public pb::SwitchboardService::Service {
public:
  DirectService(std::size_t reply_size, std::uint16_t echo_port,
                std::unique_ptr<pb::SwitchboardService::Stub> upstream)
      : reply_size_(reply_size), echo_port_(echo_port), upstream_(std::move(upstream)) {}

  grpc::Status Send(grpc::ServerContext*,
                    grpc::ServerReaderWriter<pb::SendResponse, pb::SendRequest>* stream) override {
    pb::SendRequest in;
    if (!stream->Read(&in) || !in.has_open()) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "the first message must be open"};
    }
    const auto& metadata = in.open().metadata();
    const auto mode = metadata.find(kModeKey);
    const bool echo = mode != metadata.end() && mode->second == kEchoMode;
    std::uint64_t total = in.open().data().size();
    std::int64_t last = total > 0 ? bench::now_ns() : 0;
    pb::SendResponse out;
    int hop = -1;
    if (echo && echo_port_ != 0 && (hop = connect_loopback(echo_port_)) < 0) {
      return {grpc::StatusCode::UNAVAILABLE, "cannot reach the echo peer"};
    }
    const int one = 1;
    if (hop >= 0) ::setsockopt(hop, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    grpc::ClientContext upstream_context;
    std::unique_ptr<grpc::ClientReaderWriter<pb::SendRequest, pb::SendResponse>> upstream;
    if (echo && upstream_) {
      upstream = upstream_->Send(&upstream_context);
      pb::SendRequest open;
      open.mutable_open()->mutable_metadata()->insert({kModeKey, kEchoMode});
      if (!upstream->Write(open)) return {grpc::StatusCode::UNAVAILABLE, "upstream refused"};
    }
    std::string back;
    pb::SendResponse upstream_answer;
    while (stream->Read(&in)) {
      const auto& data = in.chunk().data();
      total += data.size();
      last = bench::now_ns();
      if (echo) {
        if (hop >= 0 && !echo_round_trip(hop, data, back)) {
          ::close(hop);
          return {grpc::StatusCode::UNAVAILABLE, "echo peer went away"};
        }
        if (upstream && (!upstream->Write(in) || !upstream->Read(&upstream_answer))) {
          return {grpc::StatusCode::UNAVAILABLE, "upstream went away"};
        }
        out.mutable_chunk()->set_data(data);
        if (!stream->Write(out)) {
          if (hop >= 0) ::close(hop);
          return {grpc::StatusCode::CANCELLED, "client went away"};
        }
      }
    }
    if (hop >= 0) ::close(hop);
    if (upstream) {
      upstream->WritesDone();
      (void)upstream->Finish();
    }
    if (!echo) {
      out.mutable_chunk()->set_data(report_body(total, last, reply_size_));
      stream->Write(out);
    }
    return grpc::Status::OK;
  }

private:
  std::size_t reply_size_;
  std::uint16_t echo_port_;
  std::unique_ptr<pb::SwitchboardService::Stub> upstream_;  // null without --grpc-echo-port
};

// The same server on gRPC's callback API, the API the relay's gRPC door is built on: each
// reaction runs on one of gRPC's callback threads, so its ping-pong is the floor of that API.
class CallbackDirectService final : public pb::SwitchboardService::CallbackService {
public:
  explicit CallbackDirectService(std::size_t reply_size) : reply_size_(reply_size) {}

  grpc::ServerBidiReactor<pb::SendRequest, pb::SendResponse>* Send(
      grpc::CallbackServerContext*) override {
    return new Call(reply_size_);
  }

private:
  class Call final : public grpc::ServerBidiReactor<pb::SendRequest, pb::SendResponse> {
  public:
    explicit Call(std::size_t reply_size) : reply_size_(reply_size) { StartRead(&in_); }

    void OnReadDone(bool ok) override {
      if (!ok) {
        if (!opened_) {
          Finish({grpc::StatusCode::INVALID_ARGUMENT, "the first message must be open"});
        } else if (echo_) {
          Finish(grpc::Status::OK);
        } else {
          out_.mutable_chunk()->set_data(report_body(total_, last_, reply_size_));
          StartWriteAndFinish(&out_, grpc::WriteOptions(), grpc::Status::OK);
        }
        return;
      }
      if (!opened_) {
        if (!in_.has_open()) {
          Finish({grpc::StatusCode::INVALID_ARGUMENT, "the first message must be open"});
          return;
        }
        opened_ = true;
        const auto& metadata = in_.open().metadata();
        const auto mode = metadata.find(kModeKey);
        echo_ = mode != metadata.end() && mode->second == kEchoMode;
        total_ = in_.open().data().size();
        if (total_ > 0) last_ = bench::now_ns();
        StartRead(&in_);
        return;
      }
      total_ += in_.chunk().data().size();
      last_ = bench::now_ns();
      if (!echo_) {
        StartRead(&in_);
        return;
      }
      out_.mutable_chunk()->set_data(in_.chunk().data());
      StartWrite(&out_);
    }
    // In echo mode the next read starts once the echo is written: one message each way.
    void OnWriteDone(bool ok) override {
      if (!ok) {
        Finish({grpc::StatusCode::CANCELLED, "client went away"});
        return;
      }
      StartRead(&in_);
    }
    void OnDone() override { delete this; }

  private:
    std::size_t reply_size_;
    pb::SendRequest in_;
    pb::SendResponse out_;
    bool opened_ = false;
    bool echo_ = false;
    std::uint64_t total_ = 0;
    std::int64_t last_ = 0;
  };

  std::size_t reply_size_;
};

// Serves `service` on an ephemeral loopback port, printed as 'listening 127.0.0.1:PORT', until
// the process is ended (bench/run.sh stops it with SIGTERM).
int serve_on_loopback(grpc::Service& service) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(4 * 1024 * 1024);
  auto server = builder.BuildAndStart();
  if (!server || port == 0) throw std::runtime_error("cannot listen on 127.0.0.1:0");
  std::printf("listening 127.0.0.1:%d\n", port);
  std::fflush(stdout);
  server->Wait();
  return 0;
}

int serve_direct(const bench::Args& args) {
  const auto api = args.str("api", "sync");
  if (api == "callback") {
    if (args.has("echo-port") || args.has("grpc-echo-port")) {
      throw std::invalid_argument("--echo-port and --grpc-echo-port are for --api sync");
    }
    CallbackDirectService service(args.num("reply-size", 128));
    return serve_on_loopback(service);
  }
  if (api != "sync") throw std::invalid_argument("--api is sync or callback");
  std::unique_ptr<pb::SwitchboardService::Stub> upstream;
  if (args.has("grpc-echo-port")) {
    upstream = stub_to("127.0.0.1:" + std::to_string(args.num("grpc-echo-port", 0)));
  }
  DirectService service(args.num("reply-size", 128),
                        static_cast<std::uint16_t>(args.num("echo-port", 0)), std::move(upstream));
  return serve_on_loopback(service);
}

// A TCP echo peer: every connection's bytes are sent back, a thread per connection (bounded by
// --max-conns; the process ends at --timeout).
int serve_echo(const bench::Args& args) {
  const auto max_conns = args.num("max-conns", 16);
  std::uint16_t port = 0;
  const int listener = listen_loopback(port);
  std::printf("listening 127.0.0.1:%u\n", static_cast<unsigned>(port));
  std::fflush(stdout);
  for (std::uint64_t conns = 0; conns < max_conns; ++conns) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::thread([fd] {
      copy_bytes(fd, fd);
      ::close(fd);
    }).detach();
  }
  ::close(listener);
  std::this_thread::sleep_for(std::chrono::hours(1));
  return 0;
}

// ---- Trivial gRPC forwarder: two gRPC legs and nothing else. ----

// Each Send is passed on, message by message and unchanged, over one upstream Send, each
// direction on its own thread as the TCP forwarder does: the least a relay between two gRPC
// peers can do, so its ping-pong is the floor of gw-rr's gRPC → relay → gRPC row.
class ForwardService final : public pb::SwitchboardService::Service {
public:
  explicit ForwardService(pb::SwitchboardService::Stub& upstream) : upstream_(upstream) {}

  grpc::Status Send(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<pb::SendResponse, pb::SendRequest>* downstream) override {
    grpc::ClientContext context;
    auto upstream = upstream_.Send(&context);
    std::thread answers([&] {
      pb::SendResponse answer;
      while (upstream->Read(&answer) && downstream->Write(answer)) {
      }
    });
    pb::SendRequest in;
    while (downstream->Read(&in) && upstream->Write(in)) {
    }
    upstream->WritesDone();
    answers.join();
    return upstream->Finish();
  }

private:
  pb::SwitchboardService::Stub& upstream_;
};

int serve_forward(const bench::Args& args) {
  auto upstream = stub_for(args);
  ForwardService service(*upstream);
  return serve_on_loopback(service);
}

// ---- Byte proxy: what the gRPC door's HTTP/2 guard costs at the least. ----

// Every connection accepted is paired with one to UPSTREAM and the bytes copied both ways,
// each direction on its own blocking thread: the relay's door passes each byte of a gRPC
// connection through one of its threads on the way in and on the way out (grpc_gateway/
// guard_connection.cpp), so the direct ping-pong through this proxy is the floor of any door
// that keeps that guard, before the relay does anything else.
int serve_proxy(const bench::Args& args) {
  (void)target_of(args);  // loopback only
  const auto upstream = static_cast<std::uint16_t>(args.num("port", 0));
  const auto max_pairs = args.num("max-pairs", 16);
  std::uint16_t port = 0;
  const int listener = listen_loopback(port);
  std::printf("listening 127.0.0.1:%u\n", static_cast<unsigned>(port));
  std::fflush(stdout);
  // Bounded: a few pairs, each closed when both directions end; the process ends at --timeout.
  for (std::uint64_t pairs = 0; pairs < max_pairs; ++pairs) {
    const int client = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    const int server = connect_loopback(upstream);
    if (server < 0) {
      ::close(client);
      continue;
    }
    const int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::thread([client, server] {
      std::thread back([client, server] { copy_bytes(server, client); });
      copy_bytes(client, server);
      back.join();
      ::close(client);
      ::close(server);
    }).detach();
  }
  ::close(listener);
  std::this_thread::sleep_for(std::chrono::hours(1));  // the --timeout thread ends the process
  return 0;
}

// ---- gRPC Respond peer. ----

// Joins the channel and answers every request once its body ends, with the report.
int respond(const bench::Args& args) {
  const auto reply_size = args.num("reply-size", 128);
  auto stub = stub_for(args);
  grpc::ClientContext context;
  auto call = stub->Respond(&context);
  pb::RespondRequest join;
  join.mutable_join()->set_channel(args.str("channel", ""));
  if (!call->Write(join)) throw std::runtime_error("join write failed");
  pb::RespondResponse in;
  if (!call->Read(&in) || !in.has_joined()) {
    throw std::runtime_error("join failed: " + describe(call->Finish()));
  }
  std::printf("ready\n");
  std::fflush(stdout);
  struct Request {
    std::uint64_t bytes = 0;
    std::int64_t last = 0;
  };
  std::map<std::uint64_t, Request> requests;
  pb::RespondRequest answer;
  while (call->Read(&in)) {
    std::uint64_t id = 0;
    bool last = false;
    const std::string* data = nullptr;
    if (in.has_start()) {
      if (in.start().broadcast()) continue;
      id = in.start().id();
      data = &in.start().data();
      last = in.start().last();
    } else if (in.has_chunk()) {
      id = in.chunk().id();
      data = &in.chunk().data();
      last = in.chunk().last();
    } else {
      if (in.has_reset()) requests.erase(in.reset().id());
      continue;
    }
    auto& request = requests[id];
    request.bytes += data->size();
    if (!data->empty()) request.last = bench::now_ns();
    if (!last) continue;
    answer.mutable_chunk()->set_request_id(id);
    answer.mutable_chunk()->set_data(report_body(request.bytes, request.last, reply_size));
    answer.mutable_chunk()->set_last(true);
    requests.erase(id);
    if (!call->Write(answer)) break;
  }
  const auto status = call->Finish();
  std::fprintf(stderr, "gw-bench respond: stream ended: %s\n", describe(status).c_str());
  return 0;
}

// ---- Load generator. ----

pb::SendRequest open_message(const bench::Args& args) {
  pb::SendRequest open;
  open.mutable_open()->set_channel(args.str("channel", ""));
  return open;
}

// One Send of `total` bytes in `chunk`-sized messages; MB/s at the receiver.
int stream(const bench::Args& args) {
  const auto total = args.num("bytes", 1ULL << 30);
  const auto chunk = args.num("chunk", 64 * 1024);
  auto stub = stub_for(args);
  pb::SendRequest message;
  std::string filler(chunk, '\0');
  bench::fill_pattern(reinterpret_cast<std::uint8_t*>(filler.data()), filler.size(), 3);
  message.mutable_chunk()->set_data(filler);
  pb::SendRequest tail;  // the last, shorter chunk when total is not a multiple
  tail.mutable_chunk()->set_data(filler.substr(0, total % chunk));

  grpc::ClientContext context;
  auto call = stub->Send(&context);
  const auto start = bench::now_ns();
  if (!call->Write(open_message(args))) throw std::runtime_error("open write failed");
  std::uint64_t sent = 0;
  while (sent < total) {
    const auto& next = total - sent >= chunk ? message : tail;
    if (!call->Write(next)) break;  // the call ended early: Finish says why
    sent += next.chunk().data().size();
  }
  call->WritesDone();
  const auto sent_ns = bench::now_ns() - start;
  std::string reply;
  pb::SendResponse in;
  while (call->Read(&in)) reply += in.chunk().data();
  const auto status = call->Finish();
  if (!status.ok() || reply.size() < kReportSize) {
    throw std::runtime_error("stream failed: " + describe(status));
  }
  const auto* report = reinterpret_cast<const std::uint8_t*>(reply.data());
  const auto received = bench::get_u64(report);
  const auto last = static_cast<std::int64_t>(bench::get_u64(report + 8));
  bench::Json()
      .add("workload", "gw-stream")
      .add("system", args.str("system", "gw"))
      .add("bytes", total)
      .add("received", received)
      .add("mb_s", bench::per_second(static_cast<double>(received), last - start) / 1e6)
      .add("sender_mb_s", bench::per_second(static_cast<double>(sent), sent_ns) / 1e6)
      .add("seconds", static_cast<double>(last - start) / 1e9)
      .print();
  return received == total ? 0 : 1;
}

// One request per Send RPC (open carrying the body, half-closed with it), read to its end, as
// every gRPC request through the gateway is; returns the round trip in ns.
std::int64_t one_rpc(pb::SwitchboardService::Stub& stub, const pb::SendRequest& open) {
  const auto start = bench::now_ns();
  grpc::ClientContext context;
  auto call = stub.Send(&context);
  call->WriteLast(open, grpc::WriteOptions());
  std::size_t received = 0;
  pb::SendResponse in;
  while (call->Read(&in)) received += in.chunk().data().size();
  const auto status = call->Finish();
  if (!status.ok()) throw std::runtime_error("request failed: " + describe(status));
  if (received == 0) throw std::runtime_error("empty response");
  return bench::now_ns() - start;
}

// Sequential round trips: one RPC each (--mode rpc), all on one Requests stream through the
// gateway (--mode mux), or ping-pong of chunks on one Send stream to the direct server
// (--mode pingpong, the cheapest a gRPC round trip gets).
// Runs `warmup` round trips untimed, then `n` timed ones into `rtt` (ns each); returns the
// timed part's wall time in ns.
template <typename RoundTrip>
std::int64_t time_round_trips(RoundTrip&& round_trip, std::uint64_t warmup, std::uint64_t n,
                              std::vector<double>& rtt) {
  for (std::uint64_t i = 0; i < warmup; ++i) round_trip();
  const auto start = bench::now_ns();
  for (std::uint64_t i = 0; i < n; ++i) rtt.push_back(static_cast<double>(round_trip()));
  return bench::now_ns() - start;
}

int rr(const bench::Args& args) {
  const auto n = args.num("n", 5000);
  const auto warmup = args.num("warmup", 500);
  const auto mode = args.str("mode", "rpc");
  std::string body(args.num("size", 128), '\0');
  bench::fill_pattern(reinterpret_cast<std::uint8_t*>(body.data()), body.size(), 1);
  auto stub = stub_for(args);
  std::vector<double> rtt;
  rtt.reserve(n);
  std::int64_t elapsed = 0;
  if (mode == "rpc") {
    auto open = open_message(args);
    open.mutable_open()->set_data(body);
    elapsed = time_round_trips([&] { return one_rpc(*stub, open); }, warmup, n, rtt);
  } else if (mode == "pingpong") {
    grpc::ClientContext context;
    auto call = stub->Send(&context);
    auto open = open_message(args);
    (*open.mutable_open()->mutable_metadata())[kModeKey] = kEchoMode;
    if (!call->Write(open)) throw std::runtime_error("open write failed");
    pb::SendRequest ping;
    ping.mutable_chunk()->set_data(body);
    pb::SendResponse pong;
    auto round_trip = [&] {
      const auto t0 = bench::now_ns();
      if (!call->Write(ping) || !call->Read(&pong)) {
        throw std::runtime_error("ping-pong failed: " + describe(call->Finish()));
      }
      if (pong.chunk().data().size() != body.size()) throw std::runtime_error("short pong");
      return bench::now_ns() - t0;
    };
    elapsed = time_round_trips(round_trip, warmup, n, rtt);
    call->WritesDone();
    const auto status = call->Finish();
    if (!status.ok()) throw std::runtime_error("ping-pong stream: " + describe(status));
  } else if (mode == "mux") {
    // Every request on one Requests stream, each under its own id: open with the body, last.
    grpc::ClientContext context;
    auto call = stub->Requests(&context);
    pb::RequestsRequest request;
    *request.mutable_open()->mutable_open() = open_message(args).open();
    request.mutable_open()->mutable_open()->set_data(body);
    request.mutable_open()->set_last(true);
    pb::RequestsResponse in;
    std::uint64_t id = 0;
    auto round_trip = [&] {
      const auto t0 = bench::now_ns();
      request.mutable_open()->set_id(++id);
      if (!call->Write(request)) throw std::runtime_error("request write failed");
      std::size_t received = 0;
      for (bool last = false; !last;) {
        if (!call->Read(&in)) throw std::runtime_error("stream ended: " + describe(call->Finish()));
        if (in.has_end()) {
          throw std::runtime_error("request ended with status " +
                                   pb::Status_Name(in.end().status()) + ": " + in.end().message());
        }
        received += in.chunk().data().size();
        last = in.chunk().last();
      }
      if (received == 0) throw std::runtime_error("empty response");
      return bench::now_ns() - t0;
    };
    elapsed = time_round_trips(round_trip, warmup, n, rtt);
    call->WritesDone();
    const auto status = call->Finish();
    if (!status.ok()) throw std::runtime_error("requests stream: " + describe(status));
  } else {
    throw std::invalid_argument("--mode is rpc, mux or pingpong");
  }
  bench::Json json;
  json.add("workload", "gw-rr").add("system", args.str("system", "gw")).add("mode", mode);
  json.add("n", n);
  bench::add_latency(json, rtt);
  json.add("rps", bench::per_second(static_cast<double>(n), elapsed)).print();
  return 0;
}

void usage() {
  std::fprintf(
      stderr,
      "usage: gw-bench COMMAND --port P [flags]   (gRPC port; loopback only)\n"
      "  serve-direct [--reply-size 128] [--echo-port P] [--grpc-echo-port P]\n"
      "               [--api sync|callback]   gRPC Send server without a relay; echoed\n"
      "                                    chunks first go round serve-echo at --echo-port,\n"
      "                                    or over one gRPC Send to the serve-direct at\n"
      "                                    --grpc-echo-port; --api callback serves it on\n"
      "                                    gRPC's callback API; prints\n"
      "                                    'listening 127.0.0.1:PORT'\n"
      "  serve-echo [--max-conns 16]      TCP echo peer; prints 'listening 127.0.0.1:PORT'\n"
      "  serve-forward --port UPSTREAM   gRPC Send forwarder to UPSTREAM (serve-direct);\n"
      "                                    prints 'listening 127.0.0.1:PORT'\n"
      "  serve-proxy --port UPSTREAM [--max-pairs 16]   byte proxy to UPSTREAM, a thread per\n"
      "                                    direction; prints 'listening 127.0.0.1:PORT'\n"
      "  respond --channel UUID [--reply-size 128]   gRPC Respond peer; prints 'ready'\n"
      "  stream [--channel UUID] [--bytes 1G --chunk 64K] [--system NAME]\n"
      "  rr [--channel UUID] [--mode rpc|mux|pingpong] [--n 5000 --warmup 500 --size 128]\n"
      "every command: [--timeout SECONDS (120)]; workloads print one JSON line.\n");
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, int (*)(const bench::Args&)> commands = {
      {"serve-direct", serve_direct},
      {"serve-forward", serve_forward},
      {"serve-proxy", serve_proxy},
      {"serve-echo", serve_echo},
      {"respond", respond},
      {"stream", stream},
      {"rr", rr}};
  if (argc < 2 || commands.count(argv[1]) == 0) {
    usage();
    return 2;
  }
  const std::string command = argv[1];
  try {
    const bench::Args args(argc, argv, 2);
    // Every run is bounded in time: past the limit the process reports and leaves.
    const auto limit = std::chrono::seconds(args.num("timeout", 120));
    const auto system = args.str("system", "gw");
    std::thread([limit, command, system] {
      std::this_thread::sleep_for(limit);
      std::fprintf(stderr, "gw-bench %s: time limit reached\n", command.c_str());
      bench::Json()
          .add("workload", command)
          .add("system", system)
          .add("error", "time limit reached")
          .print();
      std::_Exit(3);
    }).detach();
    const int code = commands.at(command)(args);
    std::fflush(stdout);
    std::_Exit(code);  // calls and channels may still be pending; leave without unwinding them
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gw-bench %s: %s\n", command.c_str(), e.what());
    std::fflush(stdout);
    std::_Exit(1);
  }
}
