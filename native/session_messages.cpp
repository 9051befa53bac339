// Whole messages (MESSAGE): from our client to the channel, and from others to our client.
#include <spdlog/spdlog.h>

#include "native/session.hpp"

namespace switchboard::core::net {

bool Session::handle_message(const wire::Frame& frame) {
  if (!client_reads_messages_) {
    fail_connection(Status::protocol_error, "MESSAGE is not defined in protocol version " +
                                                std::to_string(protocol_version_));
    return false;
  }
  wire::MessageHead head;
  wire::Bytes body;
  if (wire::parse_message(frame.payload, head, body) != wire::DecodeError::none) {
    fail_connection(Status::protocol_error, "malformed MESSAGE");
    return false;
  }
  if ((head.kind == wire::StreamKind::to_peer) == head.peer.is_nil()) {
    fail_connection(Status::protocol_error,
                    "malformed MESSAGE: a message to a peer names it, a broadcast names none");
    return false;
  }
  const auto size = static_cast<std::uint32_t>(body.size());
  if (size > message_credit_) {
    fail_connection(Status::protocol_error, "message window exceeded");
    return false;
  }
  message_credit_ -= size;
  if (messages_in_flight_++ == 0) alive_for_messages_ = shared_from_this();
  ++messages_read_;
  message_bytes_read_ += size;
  auto& counters = context_.counters.native;
  const auto needed = head.kind == wire::StreamKind::broadcast ? auth::Permission::broadcast
                                                               : auth::Permission::send;
  if (observer()) {
    settle_own_messages(Settlement{size, 1, 0, 0}, 1);
    return true;
  }
  if (auto allowed = auth::require(grant_, needed); !allowed.ok()) {
    // Counted in every report; logged (and counted as an auth failure) once per connection,
    // so a client sending what it may not cannot flood the log.
    if (!message_refusal_logged_) {
      message_refusal_logged_ = true;
      record_auth_refusal(context_, allowed, "native", "message", channel_, connection_id_);
    }
    settle_own_messages(Settlement{size, 1, 0, 0}, 1);
    return true;
  }
  wire::Slice slice = reader_.share(body);
  if (head.kind == wire::StreamKind::to_peer) {
    auto target = head.peer == peer_id_ ? nullptr : context_.registry.member(channel_, head.peer);
    if (!target) {
      counters.messages_dropped.fetch_add(1, std::memory_order_relaxed);
      settle_own_messages(Settlement{size, 1, 0, 1}, 0);
      return true;
    }
    target->deliver_message(MessageDelivery{peer_id_, wire::StreamKind::to_peer, std::move(slice),
                                            TicketShare(this, size)});
    return true;
  }
  if (broadcast_targets_stale_.exchange(false, std::memory_order_acquire)) {
    context_.registry.broadcast_targets(channel_, peer_id_, broadcast_targets_);
  }
  if (broadcast_targets_.empty()) {
    settle_own_messages(Settlement{size, 1, 0, 0}, 0);
    return true;
  }
  if (broadcast_targets_.size() == 1) {
    broadcast_targets_.front().second->deliver_message(MessageDelivery{
        peer_id_, wire::StreamKind::broadcast, std::move(slice), TicketShare(this, size)});
    return true;
  }
  auto* ticket =
      MessageTicket::make(this, size, static_cast<std::uint32_t>(broadcast_targets_.size()));
  for (auto& [target_id, target] : broadcast_targets_) {
    target->deliver_message(
        MessageDelivery{peer_id_, wire::StreamKind::broadcast, slice, TicketShare(ticket)});
  }
  return true;
}

void Session::deliver_message(MessageDelivery message) {
  if (!client_reads_messages_) {
    Peer::deliver_message(std::move(message));
    return;
  }
  Delivery delivery;
  delivery.session = shared_from_this();
  delivery.what = delivery::Message{std::move(message)};
  HandoffBatch::hand_off(std::move(delivery));
}

void Session::on_message(MessageDelivery message) {
  // A closing session's client reads no more; the share settles as dropped.
  if (closing()) {
    context_.counters.native.messages_dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (messages_dropping_) {
    // Our client was found not reading: its senders are not held back again meanwhile.
    context_.counters.native.messages_dropped.fetch_add(1, std::memory_order_relaxed);
    ++report_.lost;
    return;
  }
  if (wire::kMessageHeadSize + std::size_t{message.body.size} > client_max_frame_) {
    // Larger than the frames our client accepts: it cannot be written whole.
    context_.counters.native.messages_dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  outbox_.queue_message(std::move(message));
  wake_writer();
}

void Session::messages_settled(const Settlement& settlement) {
  Delivery delivery;
  delivery.session = shared_from_this();
  delivery.what = delivery::Settled{settlement};
  HandoffBatch::hand_off(std::move(delivery));
}

void Session::on_messages_settled(const Settlement& settlement) {
  settle_own_messages(settlement, 0);
}

void Session::settle_own_messages(const Settlement& settlement, std::uint32_t refused) {
  messages_in_flight_ -= settlement.messages;
  // The last reference may be this one; the caller's delivery holds the session meanwhile.
  if (messages_in_flight_ == 0) alive_for_messages_.reset();
  report_.credit += settlement.bytes;
  report_.messages += settlement.messages;
  report_.delivered += settlement.delivered;
  report_.dropped += settlement.dropped;
  report_.refused += refused;
  // The last message in flight is reported at once, so a client waiting for all of them to
  // end is never left waiting on a report that gathers.
  if (messages_in_flight_ == 0 || wire::credit_due(report_.credit, limits_.message_window)) {
    send_message_report();
  }
}

void Session::send_message_report() {
  if (closing()) return;
  wire::append_message_report(outbox_.control(), report_);
  // Credit grows only when granted, so the client can never run ahead of what it was told.
  message_credit_ += report_.credit;
  report_ = wire::MessageReport{};
  queue_control_done();
}

void Session::judge_message_progress(Clock::time_point now) {
  const bool waiting = outbox_.has_messages() || outbox_.messages_in_flight();
  if (!waiting || messages_written_ != messages_written_seen_) {
    messages_written_seen_ = messages_written_;
    messages_moved_ = now;
    return;
  }
  if (now - messages_moved_ < limits_.slow_consumer_timeout) return;
  // None of the messages for our client has left for the slow-consumer timeout: it
  // does not read. They are dropped so that their senders get their credit back, and so are
  // those that come until our client takes a write again; the client stays (its streams have
  // their own rules) and learns how many it lost.
  // The write in flight is given up too: its messages hold their senders' windows, and a
  // write the client does not take may never complete. Should the client take it after all,
  // those messages still arrive, though their senders were told they were dropped.
  const std::uint32_t lost = outbox_.drop_messages() + outbox_.abandon_messages_in_flight();
  context_.counters.native.messages_dropped.fetch_add(lost, std::memory_order_relaxed);
  context_.counters.native.slow_consumer_drops.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("slow message receiver conn={} peer={} dropped={}", connection_id_,
               peer_id_.to_string(), lost);
  report_.lost += lost;
  messages_dropping_ = true;
  send_message_report();
  messages_moved_ = now;
}

}  // namespace switchboard::core::net
