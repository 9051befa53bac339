// Test support: a loopback TCP proxy in front of a relay that a test can cut (RST), freeze or
// make refuse connections, to produce the network failures a reconnecting client must survive.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace switchboard::test {

/// Listens on 127.0.0.1:0 and forwards each connection to 127.0.0.1:`upstream_port`. Every
/// method is thread-safe and returns once the proxy has acted.
class CutProxy {
public:
  /// What happens to a newly accepted connection.
  enum class NewConnections {
    forward,  ///< proxied to the relay
    reset,    ///< closed at once with RST (like a relay that is down)
    hold,     ///< accepted and left silent (like a relay that hangs)
  };

  explicit CutProxy(std::uint16_t upstream_port);
  ~CutProxy();
  CutProxy(const CutProxy&) = delete;
  CutProxy& operator=(const CutProxy&) = delete;

  std::uint16_t port() const { return port_; }
  /// Resets every proxied connection on both sides: client and relay each see a RST.
  void cut();
  /// Resets the client side only. The relay side stays open and silent, as after a network
  /// loss the relay has not noticed yet, until release_held() resets it.
  void cut_client_side();
  void release_held();
  /// Existing connections stop forwarding both ways (a black hole); new ones are unaffected.
  void freeze();
  void set_new_connections(NewConnections mode);
  /// Connections accepted so far (whatever happened to them).
  std::size_t accepted() const { return accepted_.load(); }

  struct State;

private:
  std::shared_ptr<State> state_;
  std::uint16_t port_ = 0;
  std::atomic<std::size_t> accepted_{0};
};

}  // namespace switchboard::test
