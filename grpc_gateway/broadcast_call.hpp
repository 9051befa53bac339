// One Broadcast RPC: a message streamed from a gRPC client to every other peer of a channel.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <optional>

#include "grpc_gateway/gateway_context.hpp"
#include "grpc_gateway/mapping.hpp"
#include "grpc_gateway/serial.hpp"
#include "registry/fanout.hpp"
#include "registry/peer.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard::gateway {

/// Reactor and broadcast source. Every field lives on the call's Serial (serial.hpp); the
/// receivers deliver credit and completion to it as the source endpoint.
class BroadcastCall final
    : public grpc::ServerBidiReactor<pb::BroadcastRequest, pb::BroadcastResponse>,
      public core::Endpoint,
      public std::enable_shared_from_this<BroadcastCall> {
public:
  static BroadcastCall* start(GatewayContext& gateway, grpc::CallbackServerContext* context);
  BroadcastCall(GatewayContext& gateway, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  void deliver_data(wire::Slice, bool) override {}
  void deliver_end(wire::End) override {}
  void deliver_reset(wire::Reset) override {}
  void deliver_credit(std::uint32_t bytes, std::uint32_t sink) override;
  void deliver_sink_done(std::uint32_t sink, Status status) override;

private:
  template <class F>
  void dispatch(F&& handler) {
    serial_.dispatch(std::forward<F>(handler), shared_from_this());
  }
  template <class F>
  void deliver(F&& handler) {
    serial_.deliver(std::forward<F>(handler), shared_from_this());
  }
  void read_done(bool ok);
  void on_credit(std::uint32_t bytes, std::uint32_t sink);
  void on_sink_done(std::uint32_t sink, Status status);
  void on_write_done();
  void on_cancel();
  void open();
  void forward(const wire::Slice& slice, bool fin);
  void release(std::uint64_t bytes);
  void read_more();
  void maybe_summarise();
  void finish(grpc::Status status);
  void on_done();
  void idle_check();

  GatewayContext& gateway_;
  CountedCall counted_{gateway_.core.counters.grpc};
  std::optional<Status> outcome_;  // the stream's final status, first one decided wins
  grpc::CallbackServerContext* context_;
  Serial serial_;
  boost::asio::steady_timer idle_timer_;
  std::shared_ptr<BroadcastCall> self_;

  pb::BroadcastRequest in_;
  pb::BroadcastResponse out_;
  bool done_ = false;
  bool opened_ = false;
  bool read_pending_ = false;
  bool message_done_ = false;
  bool summarised_ = false;
  bool finished_ = false;
  std::int64_t credit_ = 0;
  core::Fanout fanout_;
  std::chrono::steady_clock::time_point last_activity_;
  std::chrono::milliseconds idle_timeout_{0};
  // Set when another relay of the cluster serves the channel: the call is carried there.
  std::unique_ptr<BidiCarrier<pb::BroadcastRequest, pb::BroadcastResponse>> carrier_;
};

}  // namespace switchboard::gateway
