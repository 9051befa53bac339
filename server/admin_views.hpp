// What the admin endpoint serves: the Prometheus exposition and the introspection JSON.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "relay/door.hpp"
#include "relay/relay_context.hpp"

namespace switchboard::core {

/// Every metric of the relay in the Prometheus text exposition format (version 0.0.4): the
/// counters each door has in the relay's context, then what `doors` add of their own.
std::string metrics_text(const RelayContext& context, const std::vector<const Door*>& doors,
                         bool draining, std::chrono::system_clock::time_point started);

/// {"channels":[{"id":...,"peers":N,"version":V},...],"peers":P} for GET /channels.
std::string channels_json(const Registry& registry);

/// {"id":...,"version":V,"peers":[{"id":...,"door":...,...}]} for GET /channels/<id>, or
/// nothing when the text is not a channel id or the channel does not exist.
std::optional<std::string> channel_json(const Registry& registry, std::string_view id_text);

}  // namespace switchboard::core
