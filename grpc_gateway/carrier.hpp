// Carrying a gRPC call that reached a relay not serving its channel to the relay that does:
// `OwnerChannels` owns the channels to the other relays; a carrier owns one carried call's
// upstream call and the one message in flight each way.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "cluster/directory.hpp"
#include "grpc_gateway/serial.hpp"
#include "relay/relay_context.hpp"
#include "switchboard/v1/switchboard.grpc.pb.h"

namespace switchboard::gateway {

namespace pb = ::switchboard::v1;

/// How the gateway reaches the other relays' gRPC doors when it carries calls there.
struct CarryOptions {
  bool tls = false;      ///< their gRPC doors use TLS (as this relay's does)
  std::string ca_pem;    ///< roots to verify them with; empty: the system's roots
  std::string cert_pem;  ///< this relay's certificate, for doors that ask clients for one
  std::string key_pem;
  std::string node_id;  ///< this relay, named in the metadata of the calls it carries
  /// The largest message either way (the gRPC server's receive limit on every relay).
  int max_message = 4 * 1024 * 1024;
};

/// Metadata key marking a call carried from another relay: such a call is never carried again
/// (two relays with different views must not pass a call back and forth).
inline constexpr const char* kCarriedByKey = "switchboard-carried-by";

/// One gRPC channel (its HTTP/2 connections) per relay address calls are carried to.
/// Thread-safe.
class OwnerChannels {
public:
  OwnerChannels(CarryOptions options, core::Counters& counters);

  /// The stub for the relay at `address`; made on first use. The stub keeps its channel.
  std::shared_ptr<pb::SwitchboardService::Stub> stub(const std::string& address);

  const CarryOptions& options() const noexcept { return options_; }
  core::Counters& counters() noexcept { return counters_; }

private:
  CarryOptions options_;
  core::Counters& counters_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<pb::SwitchboardService::Stub>> stubs_;
};

/// The gRPC address to carry a call for a channel located at `where` to; empty when the call is
/// not to be carried: the channel is served here or by nobody now, its relay has no gRPC door,
/// or the call itself was carried here by another relay.
std::string carry_target(const grpc::CallbackServerContext* context, const cluster::Verdict& where);

/// The upstream call's context: the caller's deadline and `authorization` metadata, and the
/// carried-by mark.
void prepare_upstream(grpc::ClientContext& upstream, const grpc::CallbackServerContext& caller,
                      const CarryOptions& options);

/// `status` as the carried call ends with it: the upstream's `switchboard-*` trailing
/// metadata is copied to the caller's. A failure the owner did not give (it is unreachable, or
/// died) says so, naming `address`.
grpc::Status carried_status(grpc::CallbackServerContext* caller,
                            const grpc::ClientContext& upstream, const grpc::Status& status,
                            const std::string& address);

/// Carries one bidirectional call (Send, Broadcast, Respond) to the relay that serves its
/// channel. Every field lives on the carried call's Serial; the call forwards its gRPC
/// reactions to the downstream_* members, on the Serial, once it carries. One message is in
/// flight each way, so the caller's and the owner's HTTP/2 flow control meet end to end and
/// the carrying relay holds at most one message per direction per call.
template <class Req, class Resp>
class BidiCarrier final : public grpc::ClientBidiReactor<Req, Resp> {
public:
  using Downstream = grpc::ServerBidiReactor<Req, Resp>;

  /// `downstream` and `serial` belong to the call, which `owner` keeps alive until both the
  /// caller's call and the upstream one are done.
  BidiCarrier(OwnerChannels& channels, Serial& serial, Downstream& downstream,
              grpc::CallbackServerContext* caller, std::shared_ptr<void> owner);

  /// On the Serial: opens the upstream call to `address` and writes `first` (the message the
  /// call read already) on it.
  void start(const std::string& address, Req first);

  void downstream_read_done(bool ok);
  void downstream_write_done(bool ok);
  void downstream_cancelled();
  void downstream_done();

  void OnWriteDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

private:
  template <class F>
  void dispatch(F&& handler) {
    auto owner = owner_;  // a copy: the handler may release owner_
    serial_.dispatch(std::forward<F>(handler), owner);
  }
  void upstream_write_done(bool ok);
  void upstream_read_done(bool ok);
  void upstream_done(const grpc::Status& status);
  void abandon();
  void release_hold();
  void finish_downstream();
  void maybe_release();

  OwnerChannels& channels_;
  Serial& serial_;
  Downstream& downstream_;
  grpc::CallbackServerContext* caller_;
  std::shared_ptr<void> owner_;
  std::shared_ptr<pb::SwitchboardService::Stub> stub_;
  std::string address_;
  grpc::ClientContext upstream_;
  Req up_;     // the caller's message on its way to the owner
  Resp down_;  // the owner's message on its way to the caller
  grpc::Status status_;
  bool hold_ = false;  // the upstream call may not end before its reads do
  bool upstream_reading_ = false;
  bool upstream_done_ = false;
  bool downstream_writing_ = false;
  bool downstream_gone_ = false;  // cancelled or stopped reading: nothing more is written to it
  bool downstream_finished_ = false;
  bool downstream_done_ = false;
};

extern template class BidiCarrier<pb::SendRequest, pb::SendResponse>;
extern template class BidiCarrier<pb::BroadcastRequest, pb::BroadcastResponse>;
extern template class BidiCarrier<pb::RespondRequest, pb::RespondResponse>;

/// Carries a ListPeers call: finishes `reactor` with the owner's answer in `response`.
void carry_list_peers(OwnerChannels& channels, const std::string& address,
                      grpc::CallbackServerContext* caller, grpc::ServerUnaryReactor* reactor,
                      const pb::ListPeersRequest* request, pb::ListPeersResponse* response);

/// Carries a WatchPeers call (a server stream): as BidiCarrier, with nothing sent upstream
/// after the request.
class WatchCarrier final : public grpc::ClientReadReactor<pb::WatchPeersResponse> {
public:
  using Downstream = grpc::ServerWriteReactor<pb::WatchPeersResponse>;

  WatchCarrier(OwnerChannels& channels, Serial& serial, Downstream& downstream,
               grpc::CallbackServerContext* caller, std::shared_ptr<void> owner);

  /// On the Serial: opens the upstream WatchPeers call to `address` with `request`.
  void start(const std::string& address, const pb::WatchPeersRequest& request);

  void downstream_write_done(bool ok);
  void downstream_cancelled();
  void downstream_done();

  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

private:
  template <class F>
  void dispatch(F&& handler) {
    auto owner = owner_;
    serial_.dispatch(std::forward<F>(handler), owner);
  }
  void upstream_read_done(bool ok);
  void upstream_done(const grpc::Status& status);
  void abandon();
  void finish_downstream();

  OwnerChannels& channels_;
  Serial& serial_;
  Downstream& downstream_;
  grpc::CallbackServerContext* caller_;
  std::shared_ptr<void> owner_;
  std::shared_ptr<pb::SwitchboardService::Stub> stub_;
  std::string address_;
  grpc::ClientContext upstream_;
  pb::WatchPeersRequest request_;
  pb::WatchPeersResponse down_;
  grpc::Status status_;
  bool hold_ = false;
  bool upstream_reading_ = false;
  bool upstream_done_ = false;
  bool downstream_writing_ = false;
  bool downstream_gone_ = false;
  bool downstream_finished_ = false;
  bool downstream_done_ = false;
};

}  // namespace switchboard::gateway
