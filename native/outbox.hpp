// Outbox: a session's outbound frames: control bytes, ready streams, and the gathered write
// composed from them.
#pragma once

#include <boost/asio/buffer.hpp>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "native/fifo.hpp"
#include "native/session_stream.hpp"
#include "registry/message.hpp"
#include "relay/relay_context.hpp"

namespace switchboard::core::net {

/// Composes one gathered write at a time: control frames first, then ready streams round-robin,
/// each within its credit and a quantum, the whole within a byte and a piece budget. Payload is
/// not copied: the write points into the senders' read blocks, which it holds until complete.
/// Used only on its session's executor.
class Outbox {
public:
  explicit Outbox(RelayContext& context) noexcept : context_(context) {}

  /// Frames for the client that go out before any stream's (append with the wire encoders).
  std::vector<std::uint8_t>& control() noexcept { return control_; }
  /// Queues what the socket did not take of a write made outside the writer: `rest` begins with
  /// the last `unfinished` bytes of a frame already begun on the wire, then whole frames. Only
  /// while nothing is queued.
  void queue_rest(std::span<const std::uint8_t> rest, std::size_t unfinished);
  /// Drops the queued control frames, all but the end of a frame already begun on the wire (see
  /// queue_rest): what is appended next starts where the client expects a frame.
  void discard_control() noexcept { control_.resize(control_unfinished_); }
  /// Whether anything waits for the next write.
  bool has_queued() const noexcept {
    return !ready_.empty() || !control_.empty() || !messages_.empty();
  }

  /// Queues a whole message for the client, written before ready streams' data; its share
  /// settles (delivered) once the write that carries it is done.
  void queue_message(MessageDelivery message);
  bool has_messages() const noexcept { return !messages_.empty(); }
  /// Drops every queued message (their shares settle as dropped); returns how many.
  std::uint32_t drop_messages() noexcept;
  /// Whether the write in flight carries messages.
  bool messages_in_flight() const noexcept { return !sent_messages_.empty(); }
  /// Gives up on the messages of the write in flight: their shares settle as dropped (the bytes
  /// stay with the write, which may still complete). Returns how many.
  std::uint32_t abandon_messages_in_flight() noexcept;
  /// After the write: the shares of the messages it carried, to settle.
  std::vector<TicketShare>& sent_messages() noexcept { return sent_messages_; }

  /// Puts `stream` in line if it has something to send; returns whether it was put.
  bool schedule(const StreamPtr& stream);

  /// Composes the next write (empty() when there is nothing to send); while `closing`, control
  /// frames only. Returns whether a stream went back in line with more to send.
  bool compose(std::uint32_t client_max_frame, bool closing);
  bool empty() const noexcept { return pieces_.empty(); }
  /// The composed write as buffers, without its first `skip` bytes (sent already).
  const std::vector<boost::asio::const_buffer>& gather(std::size_t skip);
  std::size_t gathered_bytes() const noexcept;

  /// After the write: each stream that sent payload, with how much.
  std::vector<std::pair<StreamPtr, std::uint32_t>>& written() noexcept { return written_; }
  /// After the write: the streams whose last frame it carried.
  std::vector<StreamPtr>& finished() noexcept { return finished_out_; }
  /// The socket took the whole write: the payload it pointed into may go.
  void release_payload() noexcept { in_flight_.clear(); }

  /// Between writes on a connection with no stream open: buffers grown by a burst (a presence
  /// snapshot) go back now.
  void shrink_when_quiet() noexcept;
  /// A connection that wrote nothing for a while keeps no buffers.
  void release_idle() noexcept;
  /// A connection with streams open: its byte buffers take at once the size a quiet
  /// connection may keep, rather than doubling from nothing each time a write happens to
  /// gather more frames than any before it (a late write of a steady flow would allocate).
  void size_for_streams();
  /// Forgets every stream (they would keep the session alive through their back-pointer).
  void drop_streams() noexcept;

private:
  struct Piece {
    const std::uint8_t* data;  // nullptr: arena_ + offset
    std::size_t offset;
    std::size_t size;
  };

  void emit_stream(const StreamPtr& stream, std::uint32_t client_max_frame, std::size_t& budget);
  void emit_messages(std::size_t& budget);

  RelayContext& context_;
  std::vector<std::uint8_t> control_;
  std::size_t control_unfinished_ = 0;  // control_'s first bytes end a frame begun on the wire
  Fifo<StreamPtr> ready_;
  Fifo<MessageDelivery> messages_;
  std::vector<TicketShare> sent_messages_;
  std::vector<std::uint8_t> arena_;
  std::vector<Piece> pieces_;
  std::vector<boost::asio::const_buffer> gather_;
  std::vector<wire::Slice> in_flight_;
  std::vector<std::pair<StreamPtr, std::uint32_t>> written_;
  std::vector<StreamPtr> finished_out_;
};

}  // namespace switchboard::core::net
