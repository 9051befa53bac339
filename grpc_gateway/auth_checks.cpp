// Token checks at the gRPC door: token extraction, verification and refusal accounting.
#include "grpc_gateway/auth_checks.hpp"

#include <spdlog/spdlog.h>

#include "grpc_gateway/mapping.hpp"

namespace switchboard::gateway {

std::string request_token(grpc::CallbackServerContext* context, const std::string& field) {
  if (!field.empty()) return field;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return {};
  const std::string_view value(it->second.data(), it->second.size());
  constexpr std::string_view kBearer = "Bearer ";
  if (value.size() <= kBearer.size()) return {};
  // The scheme is case-insensitive (RFC 7235).
  for (std::size_t i = 0; i < kBearer.size(); ++i) {
    const char c = value[i];
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    const char want = (kBearer[i] >= 'A' && kBearer[i] <= 'Z')
                          ? static_cast<char>(kBearer[i] - 'A' + 'a')
                          : kBearer[i];
    if (lower != want) return {};
  }
  return std::string(value.substr(kBearer.size()));
}

std::optional<RequestRefusal> check_request_token(GatewayContext& gateway,
                                                  grpc::CallbackServerContext* context,
                                                  const std::string& token_field,
                                                  const Uuid& channel, std::optional<Uuid> peer,
                                                  core::auth::Permission permission,
                                                  core::auth::Grant& grant) {
  auto decision = gateway.core.authenticator.authorize(request_token(context, token_field), channel,
                                                       peer, permission);
  if (decision.ok()) {
    grant = std::move(decision.grant);
    return std::nullopt;
  }
  core::record_auth_refusal(gateway.core, decision, "grpc", core::auth::permission_name(permission),
                            channel);
  return RequestRefusal{decision.status, decision.reason};
}

std::optional<grpc::Status> check_token(GatewayContext& gateway,
                                        grpc::CallbackServerContext* context,
                                        const std::string& token_field, const Uuid& channel,
                                        std::optional<Uuid> peer, core::auth::Permission permission,
                                        core::auth::Grant& grant) {
  auto refusal =
      check_request_token(gateway, context, token_field, channel, peer, permission, grant);
  if (!refusal) return std::nullopt;
  return to_grpc(context, refusal->status, refusal->reason);
}

grpc::Status token_expired(GatewayContext& gateway, grpc::CallbackServerContext* context,
                           const char* call, const Uuid& channel) {
  gateway.core.counters.auth_failures[static_cast<std::size_t>(core::auth::Failure::expired_token)]
      .fetch_add(1, std::memory_order_relaxed);
  spdlog::info("token expired door=grpc call={} channel={}", call, channel.to_string());
  return to_grpc(context, Status::unauthenticated, "token expired");
}

}  // namespace switchboard::gateway
