// One Requests RPC: many requests from one gRPC client on one stream, each routed like a Send.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <unordered_map>

#include "grpc_gateway/gateway_context.hpp"
#include "grpc_gateway/mapping.hpp"
#include "grpc_gateway/outbox.hpp"
#include "grpc_gateway/request_stream.hpp"
#include "grpc_gateway/serial.hpp"
#include "grpc_gateway/stream_link.hpp"
#include "registry/peer.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard::gateway {

/// The reactor: many Sends on one stream, a RequestStream per open request. Every field lives
/// on the call's Serial (serial.hpp). Each request's target
/// delivers to a StreamLink keyed by a number of the call's own, so a client id reused after its
/// request ended never receives the old request's late deliveries.
class RequestsCall final
    : public grpc::ServerBidiReactor<pb::RequestsRequest, pb::RequestsResponse>,
      public std::enable_shared_from_this<RequestsCall> {
public:
  static RequestsCall* start(GatewayContext& gateway, grpc::CallbackServerContext* context);
  RequestsCall(GatewayContext& gateway, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

private:
  template <class>
  friend class StreamLink;
  friend class DrainRegistry;
  using Clock = RequestStream::Clock;
  struct Request {
    std::uint64_t id = 0;  // the client's
    RequestStream stream;
  };
  template <class F>
  void dispatch(F&& handler) {
    serial_.dispatch(std::forward<F>(handler), shared_from_this());
  }
  void read_done(bool ok);
  void open(pb::RequestOpen& open);
  void on_chunk(pb::RequestChunk& chunk);
  void on_cancel_request(const pb::StreamCancel& cancel);
  void on_stream_data(std::uint64_t key, wire::Slice payload, bool fin);
  void on_stream_end(std::uint64_t key, const wire::End& end);
  void on_stream_reset(std::uint64_t key, const wire::Reset& reset);
  void on_stream_credit(std::uint64_t key, std::uint32_t bytes);
  void on_response_end(std::uint64_t key, Status status, std::uint32_t app_code,
                       const std::string& message, bool target_gone);
  void on_write_done(bool ok);
  void on_cancel(bool expired);
  void on_done();
  void refuse(std::uint64_t id, Status status, const std::string& message);
  void complete(std::uint64_t key, bool abandon_target);
  void end_all(Status status, const std::string& message);
  void enqueue(pb::RequestsResponse message, std::uint64_t key, std::uint32_t bytes);
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
  // Tagged with the request's key (0: nothing to credit).
  Outbox<pb::RequestsRequest, pb::RequestsResponse, std::uint64_t> outbox_{
      *this, serial_, gateway_.core.counters.grpc};
  boost::asio::steady_timer sweep_timer_;
  Clock::time_point sweep_due_ = Clock::time_point::max();
  std::shared_ptr<RequestsCall> self_;  // released once OnDone has run
  DrainRegistry::Registration drain_registration_;

  pb::RequestsRequest in_;
  bool read_pending_ = false;
  bool got_message_ = false;  // a first message was read
  bool half_closed_ = false;  // the client sends no more
  bool draining_ = false;
  bool done_ = false;
  std::uint64_t next_key_ = 1;
  std::unordered_map<std::uint64_t, Request> requests_;     // by key
  std::unordered_map<std::uint64_t, std::uint64_t> by_id_;  // client id -> key
};

}  // namespace switchboard::gateway
