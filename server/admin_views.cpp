// Rendering of the relay's and its doors' counters as Prometheus text and of the registry as JSON.
#include "server/admin_views.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <array>

#ifndef SWITCHBOARD_VERSION
#define SWITCHBOARD_VERSION "unknown"
#endif

namespace switchboard::core {
namespace {

/// The counters of one door as the relay's context holds them, with the door's label.
struct LabelledCounters {
  std::string_view name;
  const DoorCounters& counters;
};

std::int64_t load(const std::atomic<std::uint64_t>& value) { return MetricsWriter::load(value); }
std::int64_t load(const ShardedCounter<std::uint64_t>& value) { return MetricsWriter::load(value); }
std::int64_t load(const ShardedCounter<std::int64_t>& value) { return MetricsWriter::load(value); }

/// One sample per door of the counter `field` picks.
template <typename Field>
void per_door(MetricsWriter& out, const std::array<LabelledCounters, 2>& doors,
              std::string_view name, std::string_view type, std::string_view help, Field field) {
  out.family(name, type, help);
  for (const auto& door : doors) {
    out.sample(name, fmt::format("door=\"{}\"", door.name), load(field(door.counters)));
  }
}

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
      continue;
    }
    out += c;
  }
  out += '"';
}

}  // namespace

std::string metrics_text(const RelayContext& context, const std::vector<const Door*>& relay_doors,
                         bool draining, std::chrono::system_clock::time_point started) {
  const auto& counters = context.counters;
  const std::array<LabelledCounters, 2> doors{LabelledCounters{"native", counters.native},
                                              LabelledCounters{"grpc", counters.grpc}};
  MetricsWriter out;
  out.family("switchboard_build_info", "gauge", "Build of the running relay (value is always 1).");
  out.sample("switchboard_build_info",
             fmt::format("version=\"{}\",compiler=\"{}\"", SWITCHBOARD_VERSION, __VERSION__), 1);
  out.family("switchboard_start_time_seconds", "gauge",
             "Start time of the relay since the Unix epoch, in seconds.");
  out.sample("switchboard_start_time_seconds", "",
             std::chrono::duration_cast<std::chrono::seconds>(started.time_since_epoch()).count());
  out.family("switchboard_draining", "gauge", "1 while the relay drains for shutdown, else 0.");
  out.sample("switchboard_draining", "", draining ? 1 : 0);

  const auto stats = context.registry.stats();
  out.family("switchboard_channels", "gauge", "Channels with at least one peer.");
  out.sample("switchboard_channels", "", static_cast<std::int64_t>(stats.channels));
  out.family("switchboard_peers", "gauge", "Peers on all channels (both doors).");
  out.sample("switchboard_peers", "", static_cast<std::int64_t>(stats.peers));

  per_door(
      out, doors, "switchboard_connections_open", "gauge", "Open connections (gRPC: open calls).",
      [](const DoorCounters& c) -> auto& { return c.connections_open; });
  per_door(
      out, doors, "switchboard_connections_total", "counter",
      "Connections accepted (gRPC: calls started).",
      [](const DoorCounters& c) -> auto& { return c.connections_total; });
  per_door(
      out, doors, "switchboard_connections_refused_total", "counter",
      "Connections turned away at the connection limit.",
      [](const DoorCounters& c) -> auto& { return c.connections_refused; });
  out.family("switchboard_connections_throttled_total", "counter",
             "Connections turned away because their address connected too fast.");
  out.sample("switchboard_connections_throttled_total", "door=\"native\"",
             load(counters.native.connections_throttled));
  out.sample("switchboard_connections_throttled_total", "door=\"grpc\"",
             load(counters.grpc.connections_throttled));
  out.family("switchboard_redirects_total", "counter",
             "Joins and peers sent to the cluster relay that serves their channel.");
  out.sample("switchboard_redirects_total", "door=\"native\"",
             load(counters.native.redirects_sent));
  out.sample("switchboard_redirects_total", "door=\"grpc\"", load(counters.grpc.redirects_sent));
  // Each door's own families (the gRPC door's HTTP/2 transports and guard), where they have
  // always been listed.
  for (const auto* door : relay_doors) door->write_metrics(out);

  out.family("switchboard_handshake_failures_total", "counter",
             "Connections (gRPC: Respond calls) that never became a peer, by reason.");
  for (const auto& door : doors) {
    for (std::size_t i = 0; i < kHandshakeFailureCount; ++i) {
      out.sample("switchboard_handshake_failures_total",
                 fmt::format("door=\"{}\",reason=\"{}\"", door.name,
                             handshake_failure_name(static_cast<HandshakeFailure>(i))),
                 load(door.counters.handshake_failures[i]));
    }
  }
  out.family("switchboard_tls_handshake_failures_total", "counter",
             "TLS handshakes that failed or timed out.");
  out.sample("switchboard_tls_handshake_failures_total", "door=\"native\"",
             load(counters.native.tls_handshake_failures));
  out.sample("switchboard_tls_handshake_failures_total", "door=\"grpc\"",
             load(counters.grpc.tls_handshake_failures));
  per_door(
      out, doors, "switchboard_protocol_errors_total", "counter",
      "Connections closed for breaking the protocol.",
      [](const DoorCounters& c) -> auto& { return c.protocol_errors; });

  per_door(
      out, doors, "switchboard_streams_open", "gauge",
      "Stream ends open on this door (a stream between two peers has one at each end).",
      [](const DoorCounters& c) -> auto& { return c.streams_open; });
  per_door(
      out, doors, "switchboard_streams_started_total", "counter",
      "Stream ends started on this door.",
      [](const DoorCounters& c) -> auto& { return c.streams_total; });
  out.family("switchboard_streams_total", "counter",
             "Stream ends finished on this door, by final status.");
  for (const auto& door : doors) {
    for (std::size_t i = 0; i < kStatusCount; ++i) {
      out.sample(
          "switchboard_streams_total",
          fmt::format("door=\"{}\",status=\"{}\"", door.name, status_name(static_cast<Status>(i))),
          load(door.counters.stream_outcomes[i]));
    }
  }

  out.family("switchboard_bytes_received_total", "counter",
             "Bytes received (native: socket bytes with framing; gRPC: message payloads).");
  out.sample("switchboard_bytes_received_total", "door=\"native\"", load(counters.native.bytes_in));
  out.sample("switchboard_bytes_received_total", "door=\"grpc\"",
             load(counters.grpc.payload_bytes_in));
  out.family("switchboard_bytes_sent_total", "counter",
             "Bytes sent (native: socket bytes with framing; gRPC: message payloads).");
  out.sample("switchboard_bytes_sent_total", "door=\"native\"", load(counters.native.bytes_out));
  out.sample("switchboard_bytes_sent_total", "door=\"grpc\"",
             load(counters.grpc.payload_bytes_out));
  per_door(
      out, doors, "switchboard_payload_bytes_received_total", "counter",
      "Stream payload bytes received from clients of this door.",
      [](const DoorCounters& c) -> auto& { return c.payload_bytes_in; });
  per_door(
      out, doors, "switchboard_payload_bytes_sent_total", "counter",
      "Stream payload bytes sent to clients of this door.",
      [](const DoorCounters& c) -> auto& { return c.payload_bytes_out; });

  per_door(
      out, doors, "switchboard_credit_stalls_total", "counter",
      "Times a stream stopped for want of flow-control credit.",
      [](const DoorCounters& c) -> auto& { return c.credit_stalls; });
  per_door(
      out, doors, "switchboard_slow_consumer_drops_total", "counter",
      "Receivers dropped as slow consumers (broadcast receivers and whole connections).",
      [](const DoorCounters& c) -> auto& { return c.slow_consumer_drops; });
  out.family("switchboard_messages_received_total", "counter",
             "Whole messages (MESSAGE frames) received from native clients.");
  out.sample("switchboard_messages_received_total", "", load(counters.native.messages_received));
  out.family("switchboard_messages_delivered_total", "counter",
             "Whole messages written to a receiver (one per receiver).");
  out.sample("switchboard_messages_delivered_total", "", load(counters.native.messages_delivered));
  out.family("switchboard_messages_dropped_total", "counter",
             "Whole messages that did not reach a receiver (absent, gone, or too slow), per "
             "receiver.");
  out.sample("switchboard_messages_dropped_total", "", load(counters.native.messages_dropped));
  out.family("switchboard_queued_bytes", "gauge",
             "Payload bytes held in the relay's stream queues (bounded by the windows).");
  out.sample("switchboard_queued_bytes", "", load(counters.queued_bytes));
  out.family("switchboard_auth_failures_total", "counter",
             "Joins, streams and calls refused by token checks (both doors), by reason.");
  for (std::size_t i = 0; i < auth::kFailureKinds; ++i) {
    out.sample("switchboard_auth_failures_total",
               fmt::format("reason=\"{}\"", auth::failure_name(static_cast<auth::Failure>(i))),
               load(counters.auth_failures[i]));
  }
  return out.take();
}

std::string channels_json(const Registry& registry) {
  const auto channels = registry.channel_list();
  std::string out = "{\"channels\":[";
  std::size_t peers = 0;
  for (std::size_t i = 0; i < channels.size(); ++i) {
    if (i > 0) out += ',';
    out += fmt::format("{{\"id\":\"{}\",\"peers\":{},\"version\":{}}}", channels[i].id.to_string(),
                       channels[i].peers, channels[i].version);
    peers += channels[i].peers;
  }
  out += fmt::format("],\"channel_count\":{},\"peer_count\":{}}}\n", channels.size(), peers);
  return out;
}

std::optional<std::string> channel_json(const Registry& registry, std::string_view id_text) {
  const auto id = Uuid::parse(id_text);
  if (!id) return std::nullopt;
  std::uint64_t version = 0;
  const auto peers = registry.channel_peers(*id, version);
  if (!peers) return std::nullopt;
  std::string out =
      fmt::format("{{\"id\":\"{}\",\"version\":{},\"peers\":[", id->to_string(), version);
  for (std::size_t i = 0; i < peers->size(); ++i) {
    const auto& peer = (*peers)[i];
    if (i > 0) out += ',';
    out += fmt::format("{{\"id\":\"{}\",\"metadata\":{{\"door\":", peer.id.to_string());
    append_json_string(out, peer.door);
    out += fmt::format(",\"accepts_requests\":{},\"joined_at\":\"{:%Y-%m-%dT%H:%M:%S}Z\"}}}}",
                       peer.accepts_requests ? "true" : "false",
                       fmt::gmtime(std::chrono::system_clock::to_time_t(peer.joined_at)));
  }
  out += "]}\n";
  return out;
}

}  // namespace switchboard::core
