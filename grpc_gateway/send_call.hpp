// One Send RPC: a request streamed from a gRPC client to a peer, and the response back.
#pragma once

#include <atomic>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "grpc_gateway/gateway_context.hpp"
#include "grpc_gateway/mapping.hpp"
#include "grpc_gateway/serial.hpp"
#include "registry/peer.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard::gateway {

/// The reactor and the endpoint the responder's side delivers to. The call's Serial runs gRPC
/// reactions and core deliveries one at a time (a read or write completion and response bytes
/// on the thread they arrive on when it is idle) and owns every field except the read side:
/// once the stream is open, request chunks go from OnReadDone straight to the target, and the
/// next read starts there while credit remains or from the target's credit delivery, so reads
/// are not paced by the Serial. The read side is guarded by `read_mutex_`. The object lives until
/// OnDone has run and no counterpart holds it.
class SendCall final : public grpc::ServerBidiReactor<pb::SendClientMessage, pb::SendServerMessage>,
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
  template <class F>
  void post(F&& handler) {
    serial_.post(std::forward<F>(handler), shared_from_this());
  }
  void read_done(bool ok);
  void stop_reading();
  void touch() noexcept;
  void open();
  void on_data(wire::Slice payload, bool fin);
  void on_end(const wire::End& end);
  void on_reset(const wire::Reset& reset);
  void on_write_done(bool ok);
  void on_cancel(bool expired);
  void on_done();
  void idle_check();
  void arm_idle_timer();
  void read_more();
  void pump();
  void finish(grpc::Status status);

  GatewayContext& gateway_;
  CountedCall counted_{gateway_.core.counters.grpc};
  std::optional<Status> outcome_;  // the stream's final status, first one decided wins
  grpc::CallbackServerContext* context_;
  Serial serial_;
  boost::asio::steady_timer idle_timer_;
  std::shared_ptr<SendCall> self_;  // released once OnDone has run

  pb::SendClientMessage in_;  // gRPC's while a read is in flight, then the read side's
  bool done_ = false;
  bool opened_ = false;
  bool response_done_ = false;
  bool finished_ = false;
  std::shared_ptr<core::Endpoint> target_;

  // The read side, shared by OnReadDone (gRPC's thread), credit deliveries and the Serial.
  std::mutex read_mutex_;
  bool read_pending_ = false;  // a StartRead is in flight
  bool reading_ = false;       // open, and neither end has stopped the request
  bool request_done_ = false;  // the request's end reached the target
  std::int64_t credit_ = 0;    // bytes the target can still take
  std::shared_ptr<core::Endpoint> read_target_;
  std::deque<pb::SendServerMessage> outbox_;
  std::deque<std::uint32_t> outbox_bytes_;
  pb::SendServerMessage writing_;
  std::uint32_t writing_bytes_ = 0;
  bool write_pending_ = false;
  std::optional<grpc::Status> final_status_;
  std::atomic<std::chrono::steady_clock::rep> last_activity_;
  std::chrono::milliseconds idle_timeout_{0};
};

}  // namespace switchboard::gateway
