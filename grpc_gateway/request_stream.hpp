// RequestStream: one request the gRPC door routed to a target, as Send and Requests both carry it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "grpc_gateway/gateway_context.hpp"
#include "registry/peer.hpp"

namespace switchboard::gateway {

/// One routed request: its body's credit and end towards the target, its response's outcome,
/// and when it expires (its deadline, or no bytes moving for its idle timeout). A Send call
/// carries one, a Requests call one per open request; the call reads and writes the gRPC
/// stream and decides when to act. Counted as a gRPC-door stream from its construction. Lives
/// on its call's Serial.
class RequestStream {
public:
  using Clock = std::chrono::steady_clock;

  /// A request routed to `target` whose open carried `first_bytes` of the body (all of it with
  /// `last`). `idle_ms` is the client's idle timeout (0: the relay's default).
  RequestStream(GatewayContext& gateway, std::shared_ptr<core::Endpoint> target,
                std::size_t first_bytes, bool last, std::uint32_t idle_ms,
                Clock::time_point deadline = Clock::time_point::max());

  const std::shared_ptr<core::Endpoint>& target() const noexcept { return target_; }

  // ---- The body: client to target. ----

  /// Forwards a message's bytes (with `last`, the body's end) to the target, paid from the
  /// credit.
  void forward(std::string& data, bool last);
  /// The client's body ended without bytes (a half-close).
  void end_body();
  /// The target took `bytes` more of the body.
  void credit(std::uint32_t bytes) noexcept {
    credit_ += bytes;
    touch();
  }
  bool body_done() const noexcept { return body_done_; }
  /// The target can take more of the body now.
  bool has_credit() const noexcept { return credit_ > 0; }
  /// The body is still coming and the target can take none of it now.
  bool stalled() const noexcept { return !body_done_ && credit_ <= 0; }

  // ---- The response: target to client. ----

  /// The response ended (or the stream was ended for it) with `status`.
  void end_response(Status status) noexcept {
    response_done_ = true;
    decide(status);
  }
  /// The stream's final status, unless one was decided already.
  void decide(Status status) noexcept {
    if (!outcome_) outcome_ = status;
  }
  bool response_done() const noexcept { return response_done_; }
  Status outcome() const noexcept { return outcome_.value_or(Status::cancelled); }
  /// The client took `bytes` of the response: the target may send as many more.
  void response_taken(std::uint32_t bytes) {
    touch();
    target_->deliver_credit(bytes, 0);
  }

  /// Aborts the stream at the target.
  void reset(Status status, std::string message) {
    target_->deliver_reset(wire::Reset{status, 0, std::move(message)});
  }

  // ---- Time. ----

  void touch() noexcept { last_activity_ = Clock::now(); }
  /// When the stream expires if nothing moves (Clock::time_point::max(): never).
  Clock::time_point expiry() const noexcept;
  /// Why the stream has expired at `now` (deadline first, then idle), if it has.
  std::optional<Status> expired(Clock::time_point now) const noexcept;

private:
  GatewayContext* gateway_;
  std::shared_ptr<core::Endpoint> target_;
  std::int64_t credit_ = 0;  // body bytes the target can still take
  bool body_done_ = false;   // the body's end reached the target
  bool response_done_ = false;
  std::optional<Status> outcome_;  // the first one decided wins
  Clock::time_point deadline_;
  Clock::duration idle_timeout_{};
  Clock::time_point last_activity_;
};

}  // namespace switchboard::gateway
