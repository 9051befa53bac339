// Broadcast fan-out: a broadcast moves at the pace of its slowest remaining receiver.
#include "registry/fanout.hpp"

#include <algorithm>

namespace switchboard::core {

void Fanout::add(std::shared_ptr<Endpoint> receiver) {
  if (receiver) {
    sinks_.push_back(Sink{std::move(receiver), received_, true});
    ++pending_;
  } else {
    sinks_.push_back(Sink{});
    ++dropped_;
  }
}

std::uint64_t Fanout::forward(const wire::Slice& payload, bool fin) {
  received_ += payload.size;
  for (auto& sink : sinks_) {
    if (sink.active) sink.endpoint->deliver_data(payload, fin);
  }
  return advance_floor();
}

std::uint64_t Fanout::forwarded_with_offer(std::uint32_t bytes) {
  received_ += bytes;
  return advance_floor();
}

std::uint64_t Fanout::written(std::uint32_t sink, std::uint32_t bytes) {
  if (sink >= sinks_.size() || !sinks_[sink].active) return 0;
  sinks_[sink].written += bytes;
  return advance_floor();
}

std::uint64_t Fanout::done(std::uint32_t sink, Status status) {
  if (sink >= sinks_.size() || !sinks_[sink].active) return 0;
  sinks_[sink].active = false;
  sinks_[sink].endpoint.reset();
  --pending_;
  if (status == Status::ok) {
    ++delivered_;
  } else {
    ++dropped_;
  }
  // The receiver no longer holds anything back.
  return advance_floor();
}

void Fanout::reset_all(Status status, const std::string& message) {
  for (auto& sink : sinks_) {
    if (sink.active) sink.endpoint->deliver_reset(wire::Reset{status, 0, message});
    sink.active = false;
    sink.endpoint.reset();
  }
  pending_ = 0;
}

std::uint64_t Fanout::advance_floor() {
  std::uint64_t floor = received_;
  for (const auto& sink : sinks_) {
    if (sink.active) floor = std::min(floor, sink.written);
  }
  if (floor <= released_) return 0;
  const auto newly = floor - released_;
  released_ = floor;
  return newly;
}

}  // namespace switchboard::core
