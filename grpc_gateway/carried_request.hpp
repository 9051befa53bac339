// CarriedRequest: one request of a Requests call whose channel another cluster relay serves,
// carried there as a Send call. Owns that upstream call and the body and response messages in
// flight on it.
#pragma once

#include <deque>
#include <memory>

#include "grpc_gateway/carrier.hpp"
#include "grpc_gateway/serial.hpp"
#include "registry/peer.hpp"

namespace switchboard::gateway {

/// The target a Requests call's RequestStream forwards to, as if the request had been routed to
/// a peer here: body bytes go upstream and are credited back as the owner takes them; the
/// response comes back to `counterpart` one message at a time, the next read only once the
/// call's client took the last one (deliver_credit). Its own Serial orders the call's
/// deliveries and gRPC's reactions. Lives until the upstream call is done.
class CarriedRequest final : public core::Endpoint,
                             public grpc::ClientBidiReactor<pb::SendRequest, pb::SendResponse>,
                             public std::enable_shared_from_this<CarriedRequest> {
public:
  /// Opens the upstream Send on `address` with `open` (its data the body's first bytes; `last`:
  /// all of it) and `deadline` (system_clock max: none but the caller's).
  static std::shared_ptr<CarriedRequest> start(OwnerChannels& channels,
                                               boost::asio::any_io_executor executor,
                                               const grpc::CallbackServerContext& caller,
                                               const std::string& address, pb::SendOpen open,
                                               bool last,
                                               std::chrono::system_clock::time_point deadline,
                                               std::shared_ptr<core::Endpoint> counterpart);

  CarriedRequest(OwnerChannels& channels, boost::asio::any_io_executor executor,
                 std::shared_ptr<core::Endpoint> counterpart);

  void deliver_data(wire::Slice payload, bool fin) override;
  void deliver_end(wire::End /*end*/) override {}
  void deliver_reset(wire::Reset reset) override;
  void deliver_credit(std::uint32_t bytes, std::uint32_t sink) override;

  void OnWriteDone(bool ok) override;
  void OnWritesDoneDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

private:
  template <class F>
  void dispatch(F&& handler) {
    serial_.dispatch(std::forward<F>(handler), shared_from_this());
  }
  void begin(const grpc::CallbackServerContext& caller, const std::string& address,
             pb::SendOpen open, bool last, std::chrono::system_clock::time_point deadline);
  void write_next();
  void read_next();
  void upstream_done(const grpc::Status& status);

  OwnerChannels& channels_;
  Serial serial_;
  std::shared_ptr<core::Endpoint> counterpart_;
  std::shared_ptr<pb::SwitchboardService::Stub> stub_;
  grpc::ClientContext upstream_;
  std::shared_ptr<CarriedRequest> self_;  // until the upstream call is done

  std::deque<wire::Slice> body_;  // bounded by the Requests call's window for the request
  bool body_fin_ = false;         // the body's end is queued
  pb::SendRequest up_;
  std::uint32_t writing_bytes_ = 0;
  bool writing_ = false;
  bool writes_done_ = false;
  pb::SendResponse down_;
  std::int64_t unacknowledged_ = 0;  // response bytes the call's client has not taken yet
  bool reading_ = false;
  bool reads_over_ = false;
  bool hold_ = false;
  bool gone_ = false;  // the call reset the request: nothing more is delivered to it
  bool done_ = false;
};

}  // namespace switchboard::gateway
