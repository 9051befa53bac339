// CarriedRequest: a Requests call's request carried to the relay that serves its channel.
#include "grpc_gateway/carried_request.hpp"

#include <charconv>

#include "grpc_gateway/mapping.hpp"

namespace switchboard::gateway {
namespace {

std::string trailer(const grpc::ClientContext& context, std::string_view key) {
  const auto& trailers = context.GetServerTrailingMetadata();
  const auto found = trailers.find(grpc::string_ref(key.data(), key.size()));
  return found == trailers.end() ? std::string{}
                                 : std::string(found->second.data(), found->second.size());
}

// The Switchboard status the owner ended the Send with: its trailer, or what the gRPC status
// says when the owner could not be reached at all.
wire::End end_of(const grpc::ClientContext& context, const grpc::Status& status) {
  wire::End end;
  end.message = status.error_message();
  const auto name = trailer(context, "switchboard-status");
  bool named = false;
  for (std::uint16_t value = 0; value <= kMaxStatusValue; ++value) {
    if (status_name(static_cast<Status>(value)) == name) {
      end.status = static_cast<Status>(value);
      named = true;
      break;
    }
  }
  if (!named) {
    switch (status.error_code()) {
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        end.status = Status::deadline_exceeded;
        break;
      case grpc::StatusCode::CANCELLED:
        end.status = Status::cancelled;
        break;
      case grpc::StatusCode::UNAVAILABLE:
        end.status = Status::peer_gone;
        end.message = "lost the relay serving the channel: " + end.message;
        break;
      default:
        end.status = Status::internal;
    }
  }
  const auto app_code = trailer(context, "switchboard-app-code");
  std::from_chars(app_code.data(), app_code.data() + app_code.size(), end.app_code);
  return end;
}

}  // namespace

std::shared_ptr<CarriedRequest> CarriedRequest::start(
    OwnerChannels& channels, boost::asio::any_io_executor executor,
    const grpc::CallbackServerContext& caller, const std::string& address, pb::SendOpen open,
    bool last, std::chrono::system_clock::time_point deadline,
    std::shared_ptr<core::Endpoint> counterpart) {
  auto request =
      std::make_shared<CarriedRequest>(channels, std::move(executor), std::move(counterpart));
  request->self_ = request;
  request->dispatch(
      [request, caller = &caller, address, open = std::move(open), last, deadline]() mutable {
        request->begin(*caller, address, std::move(open), last, deadline);
      });
  return request;
}

CarriedRequest::CarriedRequest(OwnerChannels& channels, boost::asio::any_io_executor executor,
                               std::shared_ptr<core::Endpoint> counterpart)
    : channels_(channels), serial_(std::move(executor)), counterpart_(std::move(counterpart)) {}

void CarriedRequest::begin(const grpc::CallbackServerContext& caller, const std::string& address,
                           pb::SendOpen open, bool last,
                           std::chrono::system_clock::time_point deadline) {
  serial_.assert_here();
  auto& counters = channels_.counters();
  counters.carried_calls_total.fetch_add(1, std::memory_order_relaxed);
  counters.carried_calls_open.fetch_add(1, std::memory_order_relaxed);
  stub_ = channels_.stub(address);
  prepare_upstream(upstream_, caller, channels_.options());
  if (deadline < upstream_.deadline()) upstream_.set_deadline(deadline);
  writing_bytes_ = static_cast<std::uint32_t>(open.data().size());
  up_.mutable_open()->Swap(&open);
  counters.carried_bytes_to_owner.fetch_add(up_.ByteSizeLong(), std::memory_order_relaxed);
  body_fin_ = last;
  stub_->async()->Send(&upstream_, this);
  // The upstream call ends only once its reads have: the response's last bytes and its status
  // reach the call in order.
  hold_ = true;
  AddHold();
  writing_ = true;
  StartWrite(&up_);
  reading_ = true;
  StartRead(&down_);
  StartCall();
}

void CarriedRequest::deliver_data(wire::Slice payload, bool fin) {
  serial_.deliver(
      [self = shared_from_this(), payload = std::move(payload), fin]() mutable {
        if (payload.size > 0) self->body_.push_back(std::move(payload));
        if (fin) self->body_fin_ = true;
        self->write_next();
      },
      shared_from_this());
}

void CarriedRequest::deliver_reset(wire::Reset /*reset*/) {
  serial_.deliver(
      [self = shared_from_this()] {
        if (self->gone_ || self->done_) return;
        self->gone_ = true;
        self->body_.clear();
        self->upstream_.TryCancel();
        if (!self->reading_ && self->hold_) {
          self->hold_ = false;
          self->RemoveHold();
        }
      },
      shared_from_this());
}

void CarriedRequest::deliver_credit(std::uint32_t bytes, std::uint32_t /*sink*/) {
  serial_.deliver(
      [self = shared_from_this(), bytes] {
        self->unacknowledged_ -= bytes;
        self->read_next();
      },
      shared_from_this());
}

void CarriedRequest::OnWriteDone(bool ok) {
  dispatch([this, ok] {
    serial_.assert_here();
    writing_ = false;
    if (!ok || gone_ || done_) return;  // a failed write: the upstream call is ending
    if (writing_bytes_ > 0) counterpart_->deliver_credit(writing_bytes_, 0);
    writing_bytes_ = 0;
    write_next();
  });
}

void CarriedRequest::OnWritesDoneDone(bool /*ok*/) {}

void CarriedRequest::write_next() {
  serial_.assert_here();
  if (writing_ || writes_done_ || gone_ || done_) return;
  if (!body_.empty()) {
    auto slice = std::move(body_.front());
    body_.pop_front();
    writing_bytes_ = static_cast<std::uint32_t>(slice.size);
    up_.mutable_chunk()->set_data(reinterpret_cast<const char*>(slice.data), slice.size);
    channels_.counters().carried_bytes_to_owner.fetch_add(up_.ByteSizeLong(),
                                                          std::memory_order_relaxed);
    writing_ = true;
    StartWrite(&up_);
    return;
  }
  if (body_fin_) {
    writes_done_ = true;
    StartWritesDone();
  }
}

void CarriedRequest::OnReadDone(bool ok) {
  dispatch([this, ok] {
    serial_.assert_here();
    reading_ = false;
    if (!ok || gone_) {
      reads_over_ = true;
      if (hold_) {
        hold_ = false;
        RemoveHold();
      }
      return;
    }
    channels_.counters().carried_bytes_from_owner.fetch_add(down_.ByteSizeLong(),
                                                            std::memory_order_relaxed);
    auto& data = *down_.mutable_chunk()->mutable_data();
    if (!data.empty()) {
      unacknowledged_ += static_cast<std::int64_t>(data.size());
      counterpart_->deliver_data(take_slice(data), false);
    }
    read_next();
  });
}

// One response message at a time: the next is read once the call's client took the last.
void CarriedRequest::read_next() {
  serial_.assert_here();
  if (reading_ || reads_over_ || gone_ || done_ || unacknowledged_ > 0) return;
  reading_ = true;
  StartRead(&down_);
}

void CarriedRequest::OnDone(const grpc::Status& status) {
  dispatch([this, status] { upstream_done(status); });
}

void CarriedRequest::upstream_done(const grpc::Status& status) {
  serial_.assert_here();
  done_ = true;
  channels_.counters().carried_calls_open.fetch_sub(1, std::memory_order_relaxed);
  if (!gone_) {
    if (status.ok()) {
      counterpart_->deliver_data(wire::Slice{}, true);
    } else {
      counterpart_->deliver_end(end_of(upstream_, status));
    }
  }
  body_.clear();
  self_.reset();
}

}  // namespace switchboard::gateway
