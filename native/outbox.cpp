// Composing a session's gathered writes: control frames first, then bulk streams round-robin.
#include "native/outbox.hpp"

#include <cstring>

#include "switchboard/wire/codec.hpp"

namespace switchboard::core::net {
namespace {

// One write carries at most this much payload and this many pieces, so control frames queued
// meanwhile wait at most one write, and iovec stays within IOV_MAX.
constexpr std::size_t kMaxWriteBytes = 512 * 1024;
constexpr std::size_t kMaxPieces = 512;
// A write of this many pieces marks a bulk connection (see compose).
constexpr std::size_t kBulkPieces = 8;
// Bytes one stream may put in a write before the next ready stream gets its turn.
constexpr std::uint32_t kQuantum = 64 * 1024;
// Control bytes a bulk connection's buffers are sized for; up to this much queued control is
// copied into the write's arena, and more (a presence snapshot) is swapped in instead.
constexpr std::size_t kBulkControlBytes = 4096;
// Streams whose bytes or end one write of a bulk connection carries, sized for up front.
constexpr std::size_t kBulkStreamsPerWrite = 64;
// A writer going idle keeps byte buffers up to this size; a burst (a presence snapshot of a big
// channel) does not stay allocated on a quiet connection.
constexpr std::size_t kIdleBufferBytes = 1024;

}  // namespace

bool Outbox::schedule(const StreamPtr& stream) {
  SessionStream& s = *stream;
  if (s.in_ready_list_ || s.removed_) return false;
  const bool has_data = s.outbound_queued() > 0 && s.outbound_credit() > 0;
  const bool has_tail =
      s.outbound_queued() == 0 && (s.out_fin_pending_ || s.out_end_pending_.has_value());
  if (!(has_data || has_tail || s.open_pending_)) return false;
  s.in_ready_list_ = true;
  ready_.push_back(stream);
  return true;
}

void Outbox::queue_rest(std::span<const std::uint8_t> rest, std::size_t unfinished) {
  control_.assign(rest.begin(), rest.end());
  control_unfinished_ = unfinished;
}

bool Outbox::compose(std::uint32_t client_max_frame, bool closing) {
  control_unfinished_ = 0;  // whatever control_ holds goes out whole with this write
  arena_.clear();
  pieces_.clear();
  in_flight_.clear();
  written_.clear();
  finished_out_.clear();
  if (pieces_.capacity() >= kBulkPieces && pieces_.capacity() < kMaxPieces) {
    // Writes have begun to gather many frames: size the per-piece buffers for the largest write
    // once, rather than growing them each time a write gathers more than any before it.
    pieces_.reserve(kMaxPieces);
    gather_.reserve(kMaxPieces);
    in_flight_.reserve(kMaxPieces);
    arena_.reserve(kBulkControlBytes + kMaxPieces * wire::kHeaderSize);
    control_.reserve(kBulkControlBytes);
    written_.reserve(kBulkStreamsPerWrite);
    finished_out_.reserve(kBulkStreamsPerWrite);
  }
  if (control_.size() > kBulkControlBytes) {
    arena_.swap(control_);  // not copied; the buffers' capacities change places this once
    pieces_.push_back(Piece{nullptr, 0, arena_.size()});
  } else if (!control_.empty()) {
    // Copied rather than swapped, so that each buffer keeps the capacity it grew to.
    arena_.insert(arena_.end(), control_.begin(), control_.end());
    control_.clear();
    pieces_.push_back(Piece{nullptr, 0, arena_.size()});
  }
  if (closing) {
    ready_.clear();
    return false;
  }
  bool requeued = false;
  std::size_t budget = kMaxWriteBytes;
  if (!messages_.empty()) {
    // Messages go first but leave ready streams at least half of the write.
    std::size_t message_budget = ready_.empty() ? budget : budget / 2;
    const std::size_t before = message_budget;
    emit_messages(message_budget);
    budget -= before - message_budget;
  }
  std::size_t turns = ready_.size();
  while (turns-- > 0 && budget > 0 && pieces_.size() + 8 < kMaxPieces && !ready_.empty()) {
    auto stream = std::move(ready_.front());
    ready_.pop_front();
    stream->in_ready_list_ = false;
    if (stream->removed_) continue;
    emit_stream(stream, client_max_frame, budget);
    requeued |= schedule(stream);  // back of the line if it still has something to send
    if (!ready_.empty() && turns == 0 && budget > 0) turns = ready_.size();
  }
  return requeued;
}

void Outbox::queue_message(MessageDelivery message) { messages_.push_back(std::move(message)); }

std::uint32_t Outbox::drop_messages() noexcept {
  const auto count = static_cast<std::uint32_t>(messages_.size());
  messages_.clear();  // each share settles as dropped
  return count;
}

std::uint32_t Outbox::abandon_messages_in_flight() noexcept {
  const auto count = static_cast<std::uint32_t>(sent_messages_.size());
  sent_messages_.clear();  // each share settles as dropped
  return count;
}

void Outbox::emit_messages(std::size_t& budget) {
  constexpr std::size_t kHead = wire::kHeaderSize + wire::kMessageHeadSize;
  // Bodies up to this size are copied next to their heads, so that a write of many small
  // messages is a few contiguous pieces rather than two per message; larger ones are pointed to.
  constexpr std::uint32_t kCopiedBody = 256;
  auto add_arena_piece = [this](std::size_t at, std::size_t size) {
    if (!pieces_.empty() && pieces_.back().data == nullptr &&
        pieces_.back().offset + pieces_.back().size == at) {
      pieces_.back().size += size;
    } else {
      pieces_.push_back(Piece{nullptr, at, size});
    }
  };
  std::uint64_t bytes = 0;
  while (!messages_.empty() && budget > 0 && pieces_.size() + 2 < kMaxPieces) {
    MessageDelivery& message = messages_.front();
    const std::uint32_t size = message.body.size;
    const bool copied = size <= kCopiedBody;
    const std::size_t at = arena_.size();
    arena_.resize(at + kHead + (copied ? size : 0));
    wire::encode_message_head(wire::MessageHead{message.kind, message.sender}, size,
                              arena_.data() + at);
    if (copied) {
      if (size > 0) std::memcpy(arena_.data() + at + kHead, message.body.data, size);
      add_arena_piece(at, kHead + size);
    } else {
      add_arena_piece(at, kHead);
      pieces_.push_back(Piece{message.body.data, 0, size});
      in_flight_.push_back(std::move(message.body));
    }
    bytes += size;
    budget -= std::min<std::size_t>(budget, kHead + size);
    sent_messages_.push_back(std::move(message.share));
    messages_.pop_front();
  }
  context_.counters.native.payload_bytes_out.fetch_add(bytes, std::memory_order_relaxed);
}

void Outbox::emit_stream(const StreamPtr& stream, std::uint32_t client_max_frame,
                         std::size_t& budget) {
  SessionStream& s = *stream;
  std::uint32_t sent = 0;
  auto add_header = [&](wire::FrameType type, std::uint8_t frame_flags, std::uint32_t length) {
    const std::size_t at = arena_.size();
    arena_.resize(at + wire::kHeaderSize);
    wire::encode_header(wire::FrameHeader{type, frame_flags, s.id_, length}, arena_.data() + at);
    pieces_.push_back(Piece{nullptr, at, wire::kHeaderSize});
  };
  auto add_payload = [&](std::uint32_t n) {
    wire::Slice slice = s.take_outbound(n);
    pieces_.push_back(Piece{slice.data, 0, slice.size});
    in_flight_.push_back(std::move(slice));
    sent += n;
  };

  if (s.open_pending_) {
    const std::size_t prefix = wire::open_prefix_size(*s.open_pending_);
    const std::size_t room = client_max_frame > prefix ? client_max_frame - prefix : 0;
    std::uint32_t body = 0;
    if (!s.queue_empty()) {
      body = static_cast<std::uint32_t>(
          std::min<std::size_t>({s.sendable(sent, kQuantum), s.front_size(), room}));
    }
    const bool fin = s.out_fin_pending_ && body == s.outbound_queued() && !s.out_end_pending_;
    const std::size_t at = arena_.size();
    wire::append_open(arena_, s.id_, *s.open_pending_, {}, fin);
    // append_open wrote the length without the body; patch it to include the gathered body.
    wire::encode_header(
        wire::FrameHeader{wire::FrameType::open, fin ? wire::flags::kFin : std::uint8_t{0}, s.id_,
                          static_cast<std::uint32_t>(prefix + body)},
        arena_.data() + at);
    pieces_.push_back(Piece{nullptr, at, arena_.size() - at});
    if (body > 0) add_payload(body);
    s.open_pending_.reset();
    if (fin) {
      s.out_fin_pending_ = false;
      finished_out_.push_back(stream);
    }
  }
  while (s.outbound_queued() > 0 && pieces_.size() + 2 < kMaxPieces) {
    const std::uint32_t n = std::min<std::uint32_t>(
        {s.sendable(sent, kQuantum), s.front_size(), client_max_frame,
         static_cast<std::uint32_t>(std::min<std::size_t>(budget, UINT32_MAX))});
    if (n == 0) break;
    const bool last = n == s.outbound_queued();
    const bool fin = last && s.out_fin_pending_ && !s.out_end_pending_;
    add_header(wire::FrameType::data, fin ? wire::flags::kFin : 0, n);
    add_payload(n);
    budget -= std::min<std::size_t>(budget, n);
    if (fin) {
      s.out_fin_pending_ = false;
      finished_out_.push_back(stream);
    }
  }
  if (s.outbound_queued() == 0 && !s.out_done_) {
    if (s.out_end_pending_) {
      wire::End end = std::move(*s.out_end_pending_);
      s.out_end_pending_.reset();
      if (s.role_ == StreamRole::requester) s.outcome_ = end.status;
      s.out_fin_pending_ = false;
      const std::size_t at = arena_.size();
      wire::append_end(arena_, s.id_, end);
      pieces_.push_back(Piece{nullptr, at, arena_.size() - at});
      finished_out_.push_back(stream);
    } else if (s.out_fin_pending_) {
      s.out_fin_pending_ = false;
      add_header(wire::FrameType::data, wire::flags::kFin, 0);
      finished_out_.push_back(stream);
    }
  }
  if (sent > 0) {
    context_.counters.native.payload_bytes_out.fetch_add(sent, std::memory_order_relaxed);
    if (s.outbound_queued() > 0 && s.outbound_credit() <= 0) {
      context_.counters.native.credit_stalls.fetch_add(1, std::memory_order_relaxed);
    }
    written_.emplace_back(stream, sent);
    context_.counters.queued_bytes.fetch_sub(sent, std::memory_order_relaxed);
  }
}

const std::vector<boost::asio::const_buffer>& Outbox::gather(std::size_t skip) {
  gather_.clear();
  for (const auto& piece : pieces_) {
    const std::uint8_t* base = piece.data ? piece.data : arena_.data() + piece.offset;
    if (skip >= piece.size) {
      skip -= piece.size;
      continue;
    }
    gather_.emplace_back(base + skip, piece.size - skip);
    skip = 0;
  }
  return gather_;
}

std::size_t Outbox::gathered_bytes() const noexcept {
  std::size_t total = 0;
  for (const auto& buffer : gather_) total += buffer.size();
  return total;
}

void Outbox::shrink_when_quiet() noexcept {
  if (arena_.capacity() > kIdleBufferBytes) std::vector<std::uint8_t>().swap(arena_);
  if (control_.capacity() > kIdleBufferBytes && control_.empty()) {
    std::vector<std::uint8_t>().swap(control_);
  }
}

void Outbox::release_idle() noexcept {
  // Buffers grown by a burst (a presence snapshot, a batch of frames) are not kept by a
  // connection that has gone quiet: thousands of idle peers must stay cheap.
  std::vector<std::uint8_t>().swap(arena_);
  if (control_.empty()) std::vector<std::uint8_t>().swap(control_);
  std::vector<Piece>().swap(pieces_);
  std::vector<boost::asio::const_buffer>().swap(gather_);
  std::vector<wire::Slice>().swap(in_flight_);
  std::vector<std::pair<StreamPtr, std::uint32_t>>().swap(written_);
  std::vector<StreamPtr>().swap(finished_out_);
  std::vector<TicketShare>().swap(sent_messages_);
  if (ready_.empty()) ready_.release();
  if (messages_.empty()) messages_.release();
}

void Outbox::size_for_streams() {
  if (arena_.capacity() < kIdleBufferBytes) arena_.reserve(kIdleBufferBytes);
  if (control_.capacity() < kIdleBufferBytes) control_.reserve(kIdleBufferBytes);
}

void Outbox::drop_streams() noexcept {
  ready_.clear();
  messages_.clear();
  sent_messages_.clear();
  written_.clear();
  finished_out_.clear();
  in_flight_.clear();
}

}  // namespace switchboard::core::net
