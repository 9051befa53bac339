// One Respond RPC: a gRPC client as a peer of a channel, serving requests and receiving
// broadcasts and presence.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <unordered_map>

#include "grpc_gateway/gateway_context.hpp"
#include "grpc_gateway/mapping.hpp"
#include "grpc_gateway/outbox.hpp"
#include "grpc_gateway/serial.hpp"
#include "grpc_gateway/stream_link.hpp"
#include "registry/peer.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard::gateway {

/// Reactor and registry peer. Every field lives on the call's Serial (serial.hpp), except the
/// two atomics `accept_stream` and `has_capacity` read on the opener's thread. Each incoming
/// stream's sender delivers to a StreamLink keyed by the stream's id on this call.
///
/// Flow control of responses. Without stream windows (`join.stream_windows` false) the call
/// stops reading while any response is out of credit: head-of-line for the peer's responses.
/// With them, each request has its own credit, announced to the client (`IncomingWindow`) as
/// the requester takes the bytes; the call always reads, and a chunk beyond its request's credit
/// resets that request alone. Incoming bytes are then credited to their sender as the client
/// grants them (`window`), not as they are written.
class RespondCall final : public grpc::ServerBidiReactor<pb::RespondRequest, pb::RespondResponse>,
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
  void relocate(const cluster::Verdict& next) override;

private:
  template <class>
  friend class StreamLink;
  friend class DrainRegistry;
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
  struct Tag {             // of a message in the outbox
    std::uint64_t id = 0;  // 0: not a stream's data
    bool last = false;     // the stream's last bytes
  };

  template <class F>
  void dispatch(F&& handler) {
    serial_.dispatch(std::forward<F>(handler), shared_from_this());
  }
  template <class F>
  void deliver(F&& handler) {
    serial_.deliver(std::forward<F>(handler), shared_from_this());
  }
  template <class F>
  void post(F&& handler) {
    serial_.post(std::forward<F>(handler), shared_from_this());
  }
  void read_done(bool ok);
  void join();
  void on_incoming(std::uint64_t id, core::StreamOffer offer);
  void on_stream_data(std::uint64_t id, wire::Slice payload, bool fin);
  void on_stream_end(std::uint64_t id, const wire::End& end);
  void on_stream_reset(std::uint64_t id, const wire::Reset& reset);
  void on_stream_credit(std::uint64_t id, std::uint32_t bytes);
  void on_client_window(const pb::StreamWindow& window);
  void overrun(std::uint64_t id);
  void enqueue_window(std::uint64_t id, std::uint32_t bytes);
  void on_write_done(bool ok);
  void on_done();
  void enqueue(pb::RespondResponse message, Tag tag, std::uint32_t bytes);
  void read_more();
  void drop(std::uint64_t id, Status status, const std::string& message, bool tell_client);
  void finish(grpc::Status status);
  void leave();
  void check_slow_consumers();
  void token_expired_now();
  void drain();
  void join_resolved(const Uuid& channel, const Uuid& peer, const core::auth::Grant& grant,
                     const cluster::Verdict& verdict);

  GatewayContext& gateway_;
  CountedCall counted_{gateway_.core.counters.grpc};
  grpc::CallbackServerContext* context_;
  const std::string origin_;  // the client connection, as gRPC names it (context->peer())
  Serial serial_;
  Outbox<pb::RespondRequest, pb::RespondResponse, Tag> outbox_{*this, serial_,
                                                               gateway_.core.counters.grpc};
  boost::asio::steady_timer watchdog_;
  boost::asio::steady_timer token_expiry_;
  std::shared_ptr<RespondCall> self_;
  DrainRegistry::Registration drain_registration_;

  pb::RespondRequest in_;
  bool done_ = false;
  bool joined_ = false;
  bool read_pending_ = false;
  bool draining_ = false;
  static constexpr int kMaxResolveRounds = 3;
  // Set when another relay of the cluster serves the channel: the call is carried there.
  std::unique_ptr<BidiCarrier<pb::RespondRequest, pb::RespondResponse>> carrier_;
  int resolve_rounds_ = 0;  // joins sent back to the directory (a claim went meanwhile)
  std::string drain_message_ = "relay is draining";  // why the call ends once drained
  bool windows_ = false;                             // join.stream_windows
  std::int64_t response_window_ = 0;
  Uuid channel_;
  Uuid peer_id_;
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<std::uint32_t> open_requests_{0};
  std::unordered_map<std::uint64_t, Incoming> incoming_;
};

}  // namespace switchboard::gateway
