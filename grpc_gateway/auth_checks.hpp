// Token checks at the gRPC door: where the token comes from, and refusals as gRPC statuses.
#pragma once

#include <grpcpp/grpcpp.h>

#include <boost/asio/steady_timer.hpp>
#include <optional>
#include <string>

#include "auth/authenticator.hpp"
#include "grpc_gateway/gateway_context.hpp"

namespace switchboard::gateway {

/// The message's `token` field, or else the `authorization: Bearer <jwt>` call metadata.
std::string request_token(grpc::CallbackServerContext* context, const std::string& field);

/// Verifies the call's token for `channel`/`peer` and `permission`. On refusal the refusal is
/// counted and logged once and the gRPC status to finish with is returned.
std::optional<grpc::Status> check_token(GatewayContext& gateway,
                                        grpc::CallbackServerContext* context,
                                        const std::string& token_field, const Uuid& channel,
                                        std::optional<Uuid> peer, core::auth::Permission permission,
                                        core::auth::Grant& grant);

/// A refusal of one request among many on a call: the status and reason to end it with.
struct RequestRefusal {
  Status status;
  std::string reason;
};

/// As check_token, for one request of a call that carries many: the call goes on either way.
std::optional<RequestRefusal> check_request_token(GatewayContext& gateway,
                                                  grpc::CallbackServerContext* context,
                                                  const std::string& token_field,
                                                  const Uuid& channel, std::optional<Uuid> peer,
                                                  core::auth::Permission permission,
                                                  core::auth::Grant& grant);

/// Arms `timer` (on the call's strand) to call `on_expired` when `grant` runs out; no-op for a
/// grant without expiry.
template <typename Handler>
void arm_expiry(boost::asio::steady_timer& timer, const core::auth::Grant& grant,
                Handler on_expired) {
  if (!grant.expires()) return;
  const auto remaining = std::max(grant.expiry - std::chrono::system_clock::now(),
                                  std::chrono::system_clock::duration::zero());
  timer.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining));
  timer.async_wait([on_expired = std::move(on_expired)](const boost::system::error_code& ec) {
    if (!ec) on_expired();
  });
}

/// Counts a live call ended by its token's expiry and returns the status to finish with.
grpc::Status token_expired(GatewayContext& gateway, grpc::CallbackServerContext* context,
                           const char* call, const Uuid& channel);

}  // namespace switchboard::gateway
