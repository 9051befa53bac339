// The relay's configurable limits and timeouts, shared by the registry and both front doors.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace switchboard::core {

using Milliseconds = std::chrono::milliseconds;

struct Limits {
  std::uint32_t max_frame = 64 * 1024;  ///< largest frame payload the relay accepts
  /// Bytes buffered per stream direction. 1 MiB covers a loopback or LAN bandwidth-delay product
  /// through two hops; 256 KiB held a single stream to about 60% of what the path carries.
  std::uint32_t stream_window = 1024 * 1024;
  std::uint32_t max_streams_per_connection = 256;
  /// Body bytes of whole messages (protocol MESSAGE) one connection may have in the relay at
  /// once: sent and not yet written to every receiver (or dropped). Bounds the relay's memory
  /// per sending connection as stream_window does per stream. A message must fit in one frame
  /// and in this window.
  std::uint32_t message_window = 1024 * 1024;
  std::uint32_t max_peers_per_channel = 10'000;
  std::uint32_t max_channels = 100'000;
  std::uint32_t max_connections = 50'000;
  /// Lanes one shared native connection (protocol versions 4 and 5) may carry at once. Each lane is
  /// a connection of its own for max_connections.
  std::uint32_t max_lanes_per_connection = 1024;
  /// Native connections one source address may open per second (token bucket; 0: unlimited)
  /// and how many it may open at once before that rate applies.
  std::uint32_t connect_rate_per_address = 200;
  std::uint32_t connect_burst_per_address = 400;
  /// Bytes queued towards one connection (control frames and data) before it is closed as a slow
  /// consumer; data alone is already bounded by the stream windows.
  std::size_t max_connection_buffer = 64 * 1024 * 1024;
  /// The kernel's send buffer of each accepted connection (SO_SNDBUF; 0: the kernel's own
  /// autotuned size, up to net.ipv4.tcp_wmem's maximum). A fixed size bounds the kernel memory
  /// a peer that stops reading pins, and makes max_connection_buffer the limit it meets after
  /// that many bytes more; the kernel doubles the value and caps it at net.core.wmem_max.
  std::size_t socket_send_buffer = 0;
  std::size_t read_block_size = 256 * 1024;
  /// Free read blocks kept for reuse by any connection: a reader whose last block is still being
  /// forwarded takes one instead of allocating. Bounds the memory kept after traffic stops. A
  /// full stream window spans window / block size blocks (4 by default) and a reader holds one
  /// more, so a steady stream cycles through its blocks without allocating.
  std::uint32_t read_block_pool = 8;
  Milliseconds handshake_timeout{10'000};
  Milliseconds keepalive_interval{15'000};
  Milliseconds slow_consumer_timeout{5'000};
  /// A write the connection's socket has not taken whole for this long closes the connection as
  /// a slow consumer: a peer that keeps sending (PINGs, WINDOWs) but never reads its socket
  /// would otherwise hold the streams towards it until their idle timeouts. A write carries at
  /// most 512 KiB, so the default asks a reader for about 17 KiB/s.
  Milliseconds write_timeout{30'000};
  /// The longest a presence change waits for a native connection's next presence write. A
  /// change on a quiet connection is written at once; changes that follow it closely wait and
  /// go out together, every one of them in version order, the wait growing fourfold from an
  /// eighth of this to all of it while they keep coming; once no change is announced for a tick (a
  /// sixteenth of this, at most 25 ms) held changes go out at once. A join storm (a relay
  /// restarting, a cluster relay failing over) would otherwise cost each peer a write per
  /// newcomer: O(n^2) writes per channel. 0: every change is written in the turn of the event
  /// loop it came in.
  Milliseconds presence_interval{200};
  /// A join storm: while the relay as a whole announces at least presence_storm_rate presence
  /// changes a second (joins and leaves over every channel; 0: never a storm), a
  /// held change waits up to presence_storm_hold after its connection's last presence write
  /// (or its welcome) instead of following presence_interval's schedule, and a change on a
  /// quiet connection is held too. Peers then get a write per presence_storm_hold of the storm
  /// instead of one per presence_interval, and the relay's threads go to the joins. Once no
  /// change is announced for four ticks, held changes go out as before. 1,000 a second is more
  /// than a relay's ordinary churn and less than a restart's returning peers.
  std::uint32_t presence_storm_rate = 1000;
  Milliseconds presence_storm_hold{1000};
  Milliseconds default_idle_timeout{300'000};
  Milliseconds drain_timeout{30'000};
  /// The gRPC door's HTTP/2 guard (docs/GATEWAY.md): bytes of one request header block
  /// (HEADERS + CONTINUATION; gRPC's own metadata limit is 8 KiB), streams one connection may
  /// have open (no more than max_connection_buffer / stream_window: each may hold a window of
  /// response bytes), and client control frames (SETTINGS, PING, PRIORITY, empty frames) and
  /// resets (RST_STREAM and refused streams) per second per connection (0: no limit).
  std::uint32_t grpc_max_header_block = 16 * 1024;
  std::uint32_t grpc_max_streams_per_connection = 100;
  std::uint32_t grpc_control_frames_per_second = 1000;
  std::uint32_t grpc_resets_per_second = 200;

  /// The stream limit the gRPC door applies: grpc_max_streams_per_connection, lowered so that
  /// a window per stream fits in max_connection_buffer.
  std::uint32_t grpc_streams_per_connection() const noexcept {
    const std::size_t by_buffer = std::max<std::size_t>(1, max_connection_buffer / stream_window);
    return static_cast<std::uint32_t>(
        std::min<std::size_t>(grpc_max_streams_per_connection, by_buffer));
  }

  /// Throws std::invalid_argument naming the first inconsistent setting.
  void validate() const;
};

}  // namespace switchboard::core
