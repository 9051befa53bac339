// One Requests RPC: many requests from one gRPC client on one stream, each routed like a Send.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>

#include "grpc_gateway/gateway_context.hpp"
#include "grpc_gateway/mapping.hpp"
#include "grpc_gateway/serial.hpp"
#include "registry/peer.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard::gateway {

class RequestsCall;

/// The endpoint one request's target delivers to.
class RequestLink final : public core::Endpoint {
public:
  RequestLink(std::shared_ptr<RequestsCall> call, std::uint64_t key)
      : call_(std::move(call)), key_(key) {}
  void deliver_data(wire::Slice payload, bool fin) override;
  void deliver_end(wire::End end) override;
  void deliver_reset(wire::Reset reset) override;
  void deliver_credit(std::uint32_t bytes, std::uint32_t sink) override;

private:
  std::shared_ptr<RequestsCall> call_;
  std::uint64_t key_;
};

/// The reactor. Every field is owned by the call's Serial, which runs gRPC reactions and
/// deliveries one at a time (a read or write completion and response bytes on the thread they
/// arrive on when it is idle). Requests are keyed internally by a number of their own, so a
/// client id reused after its request ended never receives the old request's late deliveries.
class RequestsCall final
    : public grpc::ServerBidiReactor<pb::RequestsClientMessage, pb::RequestsServerMessage>,
      public std::enable_shared_from_this<RequestsCall> {
public:
  static RequestsCall* start(GatewayContext& gateway, grpc::CallbackServerContext* context);
  RequestsCall(GatewayContext& gateway, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

private:
  friend class RequestLink;
  using Clock = std::chrono::steady_clock;
  struct Request {
    std::uint64_t id = 0;  // the client's
    std::shared_ptr<core::Endpoint> target;
    std::int64_t credit = 0;  // request bytes the target can still take
    bool request_done = false;
    bool response_done = false;
    Status outcome = Status::ok;
    Clock::time_point deadline = Clock::time_point::max();
    Clock::duration idle_timeout{};
    Clock::time_point last_activity{};
  };
  struct Outgoing {
    pb::RequestsServerMessage message;
    std::uint64_t key = 0;  // 0: nothing to credit
    std::uint32_t bytes = 0;
    std::size_t size = 0;  // as counted in outbox_bytes_
  };

  template <class F>
  void post(F&& handler) {
    serial_.post(std::forward<F>(handler), shared_from_this());
  }
  void read_done(bool ok);
  void open(pb::RequestOpen& open);
  void on_chunk(pb::RequestChunk& chunk);
  void on_cancel_request(const pb::StreamCancel& cancel);
  void on_response_data(std::uint64_t key, wire::Slice payload, bool fin);
  void on_response_end(std::uint64_t key, Status status, std::uint32_t app_code,
                       const std::string& message, bool target_gone);
  void on_credit(std::uint64_t key, std::uint32_t bytes);
  void on_write_done(bool ok);
  void on_cancel(bool expired);
  void on_done();
  void refuse(std::uint64_t id, Status status, const std::string& message);
  void complete(std::uint64_t key, bool abandon_target);
  void end_all(Status status, const std::string& message);
  void enqueue(Outgoing outgoing);
  void pump();
  void read_more();
  void finish(grpc::Status status, bool flush);
  void finish_ok();
  void end_request(std::uint64_t key, Status status, const std::string& message);
  void drain();
  void arm_sweep();
  void sweep();

  GatewayContext& gateway_;
  CountedCall counted_{gateway_.core.counters.grpc};
  grpc::CallbackServerContext* context_;
  Serial serial_;
  boost::asio::steady_timer sweep_timer_;
  Clock::time_point sweep_due_ = Clock::time_point::max();
  std::shared_ptr<RequestsCall> self_;  // released once OnDone has run
  std::uint64_t drain_token_ = 0;

  pb::RequestsClientMessage in_;
  bool read_pending_ = false;
  bool got_message_ = false;  // a first message was read
  bool half_closed_ = false;  // the client sends no more
  bool draining_ = false;
  bool done_ = false;
  bool finished_ = false;
  std::optional<grpc::Status> final_status_;
  std::uint64_t next_key_ = 1;
  std::unordered_map<std::uint64_t, Request> requests_;     // by key
  std::unordered_map<std::uint64_t, std::uint64_t> by_id_;  // client id -> key
  std::deque<Outgoing> outbox_;
  std::size_t outbox_bytes_ = 0;
  Outgoing writing_;
  bool write_pending_ = false;
};

}  // namespace switchboard::gateway
