// The answer-now-or-later handshake with a cluster directory, shared by both doors.
#include "cluster/directory.hpp"

#include <atomic>
#include <memory>

namespace switchboard::cluster {

std::optional<Verdict> resolve_or_defer(Directory& directory, const Uuid& channel,
                                        Directory::Done later) {
  // Whichever of the two sides comes second owns the verdict: the caller if the directory
  // answered inside resolve(), the directory's thread otherwise.
  struct Resolution {
    enum Stage : std::uint8_t { asking, returned, answered };
    std::atomic<Stage> stage{asking};
    Verdict verdict;
    Directory::Done later;
  };
  auto resolution = std::make_shared<Resolution>();
  resolution->later = std::move(later);
  directory.resolve(channel, [resolution](Verdict verdict) {
    resolution->verdict = std::move(verdict);
    if (resolution->stage.exchange(Resolution::answered) == Resolution::asking) return;
    resolution->later(std::move(resolution->verdict));
  });
  if (resolution->stage.exchange(Resolution::returned) == Resolution::answered) {
    return std::move(resolution->verdict);
  }
  return std::nullopt;
}

std::string served_elsewhere(const Verdict& verdict) {
  if (verdict.kind == Verdict::Kind::unavailable) {
    return "channel unavailable on this relay: " + verdict.reason;
  }
  std::string text =
      "channel is served by relay " + verdict.owner.node_id + " (native " + verdict.owner.native;
  if (!verdict.owner.grpc.empty()) text += ", gRPC " + verdict.owner.grpc;
  return text + ")";
}

}  // namespace switchboard::cluster
