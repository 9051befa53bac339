// The idle-time heap trim that bounds the memory the gRPC door's message buffers leave behind.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <memory>

#include "relay/relay_context.hpp"

namespace switchboard::gateway {

/// gRPC allocates and frees a read buffer and a parsed message per 64 KiB chunk on its own
/// threads. The relay process sets malloc to keep freed memory for reuse while traffic flows, in
/// one arena (server/heap_tuning.hpp: process-wide, so its owner decides); `HeapTrimmer` hands
/// that memory back to the kernel once no payload has moved for a whole period, so an idle relay
/// stays small.
class HeapTrimmer {
public:
  /// Starts the idle check on `executor`.
  static std::shared_ptr<HeapTrimmer> start(boost::asio::any_io_executor executor,
                                            const core::Counters& counters,
                                            std::chrono::milliseconds period);
  /// Stops the checks (one already running completes); safe to call more than once.
  virtual void stop() = 0;
  virtual ~HeapTrimmer() = default;
};

}  // namespace switchboard::gateway
