// StreamLink: the endpoint one stream of a many-stream call (Requests, Respond) gives its
// counterpart.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>

#include "registry/peer.hpp"

namespace switchboard::gateway {

/// The endpoint a stream's counterpart delivers to, on a call that carries many streams, keyed
/// by a number the call chose for the stream. Each delivery is handed to the call's Serial with
/// that number; the call never reuses one, so a late delivery for a stream that ended finds
/// nothing. `Call` has a `serial_` and, run on it, `on_stream_data(key, payload, fin)`,
/// `on_stream_end(key, end)`, `on_stream_reset(key, reset)` and `on_stream_credit(key, bytes)`.
template <class Call>
class StreamLink final : public core::Endpoint {
public:
  StreamLink(std::shared_ptr<Call> call, std::uint64_t key) : call_(std::move(call)), key_(key) {}

  void deliver_data(wire::Slice payload, bool fin) override {
    call_->serial_.deliver([call = call_, key = key_, payload = std::move(payload),
                            fin]() mutable { call->on_stream_data(key, std::move(payload), fin); },
                           call_);
  }
  void deliver_end(wire::End end) override {
    call_->serial_.deliver(
        [call = call_, key = key_, end = std::move(end)] { call->on_stream_end(key, end); }, call_);
  }
  void deliver_reset(wire::Reset reset) override {
    call_->serial_.deliver(
        [call = call_, key = key_, reset = std::move(reset)] { call->on_stream_reset(key, reset); },
        call_);
  }
  void deliver_credit(std::uint32_t bytes, std::uint32_t) override {
    call_->serial_.deliver(
        [call = call_, key = key_, bytes] { call->on_stream_credit(key, bytes); }, call_);
  }

private:
  std::shared_ptr<Call> call_;
  std::uint64_t key_;
};

}  // namespace switchboard::gateway
