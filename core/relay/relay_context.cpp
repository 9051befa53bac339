// Accounting shared by both doors: auth refusals counted by reason and logged once each.
#include "relay/relay_context.hpp"

#include <spdlog/spdlog.h>

namespace switchboard::core {

void record_auth_refusal(RelayContext& context, const auth::Decision& decision,
                         std::string_view door, std::string_view action, const Uuid& channel,
                         std::uint64_t connection) {
  context.counters.auth_failures[static_cast<std::size_t>(decision.failure)].fetch_add(
      1, std::memory_order_relaxed);
  spdlog::warn(
      "auth refused door={} conn={} action={} channel={} status={} reason={} detail=\"{}\"", door,
      connection, action, channel.to_string(), status_name(decision.status),
      auth::failure_name(decision.failure), decision.reason);
}

}  // namespace switchboard::core
