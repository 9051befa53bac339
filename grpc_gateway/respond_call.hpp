// One Respond RPC: a gRPC client as a peer of a channel, serving requests and receiving
// broadcasts and presence.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "grpc_gateway/gateway_context.hpp"
#include "grpc_gateway/mapping.hpp"
#include "grpc_gateway/serial.hpp"
#include "registry/peer.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard::gateway {

class RespondCall;

/// One incoming request or broadcast on a Respond call: the endpoint its sender delivers to.
class IncomingLink final : public core::Endpoint {
public:
  IncomingLink(std::shared_ptr<RespondCall> call, std::uint64_t id)
      : call_(std::move(call)), id_(id) {}
  void deliver_data(wire::Slice payload, bool fin) override;
  void deliver_end(wire::End end) override;
  void deliver_reset(wire::Reset reset) override;
  void deliver_credit(std::uint32_t bytes, std::uint32_t sink) override;

private:
  std::shared_ptr<RespondCall> call_;
  std::uint64_t id_;
};

/// Reactor and registry peer. Every field is owned by the call's Serial, which runs gRPC reactions
/// and registry/core deliveries one at a time, except the write side (`write_mutex_`): OnWriteDone
/// starts the next queued message itself. The hot reactions (a read or a write done, a request
/// chunk) run on the thread they arrive on whenever the Serial is idle; the rest are posted.
///
/// Flow control of responses. Without stream windows (`join.stream_windows` false) the call
/// stops reading while any response is out of credit: head-of-line for the peer's responses.
/// With them, each request has its own credit, announced to the client (`IncomingWindow`) as
/// the requester takes the bytes; the call always reads, and a chunk beyond its request's credit
/// resets that request alone. Incoming bytes are then credited to their sender as the client
/// grants them (`window`), not as they are written.
class RespondCall final
    : public grpc::ServerBidiReactor<pb::RespondClientMessage, pb::RespondServerMessage>,
      public core::Peer,
      public std::enable_shared_from_this<RespondCall> {
public:
  static RespondCall* start(GatewayContext& gateway, grpc::CallbackServerContext* context);
  RespondCall(GatewayContext& gateway, grpc::CallbackServerContext* context);
  std::string_view door() const noexcept override { return "grpc"; }
  std::string_view origin() const noexcept override { return origin_; }

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  void on_presence(const wire::Presence& event) override;
  std::shared_ptr<core::Endpoint> accept_stream(core::StreamOffer offer) override;
  bool has_capacity() const override;

private:
  friend class IncomingLink;
  struct Incoming {
    std::shared_ptr<core::Endpoint> counterpart;
    bool broadcast = false;
    std::uint32_t sink_index = 0;
    bool request_written = false;  // the whole incoming body reached the client
    bool response_done = false;
    Status outcome = Status::ok;  // the status the responder ended with
    std::int64_t response_credit = 0;
    // Incoming bytes the client has not taken yet: waiting in the outbox or, with stream
    // windows, sent but not granted back.
    std::uint64_t queued = 0;
    std::chrono::steady_clock::time_point queued_since{};
  };
  struct Outgoing {
    pb::RespondServerMessage message;
    std::uint64_t id = 0;  // 0: not a stream message
    std::uint32_t bytes = 0;
    bool last = false;
    std::size_t size = 0;  // as counted in outbox_bytes_
  };
  struct Written {  // what the strand needs of a finished write
    std::uint64_t id = 0;
    std::uint32_t bytes = 0;
    bool last = false;
    std::size_t size = 0;  // as counted in outbox_bytes_
  };

  template <class F>
  void post(F&& handler) {
    serial_.post(std::forward<F>(handler), shared_from_this());
  }
  void read_done(bool ok);
  void join();
  void on_incoming(std::uint64_t id, core::StreamOffer offer);
  void on_data(std::uint64_t id, wire::Slice payload, bool fin);
  void on_reset(std::uint64_t id, const wire::Reset& reset);
  void on_credit(std::uint64_t id, std::uint32_t bytes);
  void on_client_window(const pb::StreamWindow& window);
  void overrun(std::uint64_t id);
  void enqueue_window(std::uint64_t id, std::uint32_t bytes);
  void on_write_done(bool ok, const Written& written);
  void on_done();
  void enqueue(Outgoing outgoing);
  void pump();
  void take_next_write();
  void read_more();
  void drop(std::uint64_t id, Status status, const std::string& message, bool tell_client);
  void finish(grpc::Status status);
  void leave();
  void check_slow_consumers();
  void token_expired_now();
  void drain();

  GatewayContext& gateway_;
  CountedCall counted_{gateway_.core.counters.grpc};
  grpc::CallbackServerContext* context_;
  const std::string origin_;  // the client connection, as gRPC names it (context->peer())
  Serial serial_;
  boost::asio::steady_timer watchdog_;
  boost::asio::steady_timer token_expiry_;
  std::shared_ptr<RespondCall> self_;
  std::uint64_t drain_token_ = 0;

  pb::RespondClientMessage in_;
  bool done_ = false;
  bool joined_ = false;
  bool read_pending_ = false;
  bool finished_ = false;
  bool draining_ = false;
  bool windows_ = false;  // join.stream_windows
  std::int64_t response_window_ = 0;
  Uuid channel_;
  Uuid peer_id_;
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<std::uint32_t> open_requests_{0};
  std::unordered_map<std::uint64_t, Incoming> incoming_;
  std::size_t outbox_bytes_ = 0;
  std::optional<grpc::Status> final_status_;

  // The write side, shared by OnWriteDone (gRPC's thread) and the strand.
  std::mutex write_mutex_;
  std::deque<Outgoing> outbox_;
  // IncomingWindow messages (stream windows): written before the outbox.
  std::deque<Outgoing> windows_out_;
  Outgoing writing_;  // gRPC's while a write is in flight
  bool write_pending_ = false;
  bool writes_open_ = true;  // false once Finish is decided or the call is done
};

}  // namespace switchboard::gateway
