// RequestStream: credit, ends and expiry of one request from the gRPC door.
#include "grpc_gateway/request_stream.hpp"

#include <algorithm>

#include "grpc_gateway/mapping.hpp"

namespace switchboard::gateway {

RequestStream::RequestStream(GatewayContext& gateway, std::shared_ptr<core::Endpoint> target,
                             std::size_t first_bytes, bool last, std::uint32_t idle_ms,
                             Clock::time_point deadline)
    : gateway_(&gateway),
      target_(std::move(target)),
      credit_(gateway_window(gateway) - static_cast<std::int64_t>(first_bytes)),
      body_done_(last),
      deadline_(deadline),
      idle_timeout_(core::stream_idle_timeout(gateway.limits, idle_ms)),
      last_activity_(Clock::now()) {
  count_stream_start(gateway);
  gateway.core.counters.grpc.payload_bytes_in.fetch_add(first_bytes, std::memory_order_relaxed);
}

void RequestStream::forward(std::string& data, bool last) {
  credit_ -= static_cast<std::int64_t>(data.size());
  touch();
  auto& counters = gateway_->core.counters.grpc;
  counters.payload_bytes_in.fetch_add(data.size(), std::memory_order_relaxed);
  if (credit_ <= 0 && !last) counters.credit_stalls.fetch_add(1, std::memory_order_relaxed);
  body_done_ = last;
  if (!data.empty() || last) target_->deliver_data(take_slice(data), last);
}

void RequestStream::end_body() {
  touch();
  body_done_ = true;
  target_->deliver_data(wire::Slice{}, true);
}

RequestStream::Clock::time_point RequestStream::expiry() const noexcept {
  auto due = deadline_;
  if (idle_timeout_.count() > 0) due = std::min(due, last_activity_ + idle_timeout_);
  return due;
}

std::optional<Status> RequestStream::expired(Clock::time_point now) const noexcept {
  if (now >= deadline_) return Status::deadline_exceeded;
  if (idle_timeout_.count() > 0 && now >= last_activity_ + idle_timeout_) {
    return Status::idle_timeout;
  }
  return std::nullopt;
}

}  // namespace switchboard::gateway
