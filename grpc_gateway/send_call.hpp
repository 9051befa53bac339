// One Send RPC: a request streamed from a gRPC client to a peer, and the response back.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <optional>

#include "grpc_gateway/gateway_context.hpp"
#include "grpc_gateway/mapping.hpp"
#include "grpc_gateway/outbox.hpp"
#include "grpc_gateway/request_stream.hpp"
#include "grpc_gateway/serial.hpp"
#include "registry/peer.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard::gateway {

/// The reactor and the endpoint the responder's side delivers to: one RequestStream. Every
/// field lives on the call's Serial (serial.hpp). A request chunk is forwarded, and the next read
/// started while the target has credit, by the read's completion itself: on gRPC's thread when the
/// Serial is idle, so reads are not paced by thread hand-offs. The object lives until OnDone has
/// run and no counterpart holds it.
class SendCall final : public grpc::ServerBidiReactor<pb::SendRequest, pb::SendResponse>,
                       public core::Endpoint,
                       public std::enable_shared_from_this<SendCall> {
public:
  static SendCall* start(GatewayContext& gateway, grpc::CallbackServerContext* context);
  SendCall(GatewayContext& gateway, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  void deliver_data(wire::Slice payload, bool fin) override;
  void deliver_end(wire::End end) override;
  void deliver_reset(wire::Reset reset) override;
  void deliver_credit(std::uint32_t bytes, std::uint32_t sink) override;

private:
  using Clock = RequestStream::Clock;
  struct NoTag {};  // one stream: nothing to tell apart

  template <class F>
  void dispatch(F&& handler) {
    serial_.dispatch(std::forward<F>(handler), shared_from_this());
  }
  template <class F>
  void deliver(F&& handler) {
    serial_.deliver(std::forward<F>(handler), shared_from_this());
  }
  void read_done(bool ok);
  void open();
  void on_data(wire::Slice payload, bool fin);
  void on_end(const wire::End& end);
  void on_reset(const wire::Reset& reset);
  void on_credit(std::uint32_t bytes);
  void on_write_done(bool ok);
  void on_cancel(bool expired);
  void on_done();
  void idle_check();
  void arm_idle_timer();
  void read_more();
  void end_response(grpc::Status status);
  void abort(grpc::Status status);

  GatewayContext& gateway_;
  CountedCall counted_{gateway_.core.counters.grpc};
  grpc::CallbackServerContext* context_;
  Serial serial_;
  Outbox<pb::SendRequest, pb::SendResponse, NoTag> outbox_{*this, serial_,
                                                           gateway_.core.counters.grpc};
  boost::asio::steady_timer idle_timer_;
  std::shared_ptr<SendCall> self_;  // released once OnDone has run

  pb::SendRequest in_;  // gRPC's while a read is in flight
  bool done_ = false;
  bool read_pending_ = false;            // a StartRead is in flight
  bool reading_ = false;                 // open, and neither end has stopped the request
  std::optional<RequestStream> stream_;  // once routed
  // Set when another relay of the cluster serves the channel: the call is carried there.
  std::unique_ptr<BidiCarrier<pb::SendRequest, pb::SendResponse>> carrier_;
};

}  // namespace switchboard::gateway
