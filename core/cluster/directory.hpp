// The doors' view of the cluster: which relay serves a channel. Owns nothing but the interface;
// a relay that runs alone uses LocalDirectory, a cluster relay the etcd-backed one.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "switchboard/wire/uuid.hpp"

namespace switchboard::cluster {

/// How to reach one relay of the cluster.
struct NodeAddress {
  std::string node_id;
  std::string native;  ///< advertised HOST:PORT of its native door
  std::string grpc;    ///< advertised HOST:PORT of its gRPC door; empty when it has none
};

/// Who serves a channel, as decided at one membership revision.
struct Verdict {
  enum class Kind : std::uint8_t {
    serve,        ///< this relay serves the channel; admit the peer
    redirect,     ///< `owner` serves it; send the peer there
    unavailable,  ///< nobody can serve it now (no membership view, fenced, etcd unreachable)
  };
  Kind kind = Kind::serve;
  NodeAddress owner;           ///< for redirect
  std::uint64_t revision = 0;  ///< the membership revision the verdict was made at
  std::string reason;          ///< for unavailable: a message fit for the peer
};

/// Decides, for each channel a peer wants to join, whether this relay serves it. Thread-safe:
/// doors call it from any I/O thread.
class Directory {
public:
  using Done = std::function<void(Verdict)>;
  /// Called when this relay must give a channel up (its placement moved, the relay drains, or
  /// it is fenced): the doors stop admitting peers to it, redirect its peers to `next` (or
  /// close them when `next` is unavailable) once their streams end or at the drain timeout,
  /// and call channel_emptied when the last one is gone.
  using Relinquish = std::function<void(const Uuid& channel, const Verdict& next)>;

  virtual ~Directory() = default;

  /// Decides who serves `channel` for a peer about to join it. `done` runs exactly once,
  /// inline when the answer is known locally (the channel is already served here), otherwise
  /// later on a thread of the directory's own: callers post back to their executor.
  virtual void resolve(const Uuid& channel, Done done) = 0;
  /// Who serves `channel`, from what this relay knows now, without claiming it: `serve` when
  /// this relay holds it, else `redirect` to the relay that holds or would hold it, or
  /// `unavailable`. For callers that will not add a peer (a stream from outside the channel,
  /// a presence query, a Locate).
  virtual Verdict locate(const Uuid& channel) = 0;
  /// The channel has no peer left on this relay (every door agrees): its claim may go. Called
  /// by the registry with its lock held: must not block nor call back into the registry.
  virtual void channel_emptied(const Uuid& channel) = 0;
  /// Asked by the registry, with its lock held, before a channel gets its first peer here:
  /// whether this relay still holds it (a resolve answered `serve` may be overtaken by the
  /// channel emptying and its claim going). False sends the peer back to resolve. Must not
  /// block nor call back into the registry.
  virtual bool admit(const Uuid& channel) = 0;
  /// Installs the relinquish callback before the doors start; called at most once.
  virtual void on_relinquish(Relinquish relinquish) = 0;
};

/// The directory of a relay that runs alone: it serves every channel.
class LocalDirectory final : public Directory {
public:
  void resolve(const Uuid& /*channel*/, Done done) override { done(Verdict{}); }
  Verdict locate(const Uuid& /*channel*/) override { return {}; }
  void channel_emptied(const Uuid& /*channel*/) override {}
  bool admit(const Uuid& /*channel*/) override { return true; }
  void on_relinquish(Relinquish /*relinquish*/) override {}
};

/// Asks `directory` to resolve `channel`: returns the verdict when it is known at once (the
/// common case: nothing is allocated beyond the call's own state); otherwise returns nothing
/// and `later` runs with the verdict on the directory's thread.
std::optional<Verdict> resolve_or_defer(Directory& directory, const Uuid& channel,
                                        Directory::Done later);

/// "channel is served by relay N (native A, gRPC B)": for peers told where to go.
std::string served_elsewhere(const Verdict& verdict);

}  // namespace switchboard::cluster
