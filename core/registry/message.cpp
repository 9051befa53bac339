// A message handed to a peer whose client reads streams only: a one-frame broadcast whose end
// settles the message's ticket.
#include "registry/message.hpp"

#include "registry/peer.hpp"

namespace switchboard::core {
namespace {

// The broadcast source a message-as-stream receiver reports to: settles the share when the
// receiver got the whole body (OK) or left it; anything else the receiver says is moot.
class MessageAsStream final : public Endpoint {
public:
  explicit MessageAsStream(TicketShare share) noexcept : share_(std::move(share)) {}

  void deliver_data(wire::Slice /*payload*/, bool /*fin*/) override {}
  void deliver_end(wire::End /*end*/) override {}
  void deliver_reset(wire::Reset /*reset*/) override { share_.settle(false); }
  void deliver_sink_done(std::uint32_t /*sink*/, Status status) override {
    share_.settle(status == Status::ok);
  }

private:
  // Settled once, from the receiver's thread; the destructor settles it (dropped) if the
  // receiver let the stream go without a word.
  TicketShare share_;
};

}  // namespace

void Peer::deliver_message(MessageDelivery message) {
  StreamOffer offer;
  offer.kind = wire::StreamKind::broadcast;
  offer.sender = message.sender;
  offer.first_chunk = std::move(message.body);
  offer.fin = true;
  offer.counterpart = std::make_shared<MessageAsStream>(std::move(message.share));
  // A refusal drops the offer and with it the only reference to the endpoint, which settles.
  (void)accept_stream(std::move(offer));
}

}  // namespace switchboard::core
