// Malloc settings for the gRPC door's message buffers, and the idle-time trim that bounds them.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <memory>

#include "relay/relay_context.hpp"

namespace switchboard::gateway {

/// gRPC allocates and frees a read buffer and a parsed message per 64 KiB chunk on its own
/// threads; with glibc's defaults the freed heap top goes back to the kernel almost at once and
/// the next message faults it in again (a page fault per 4 KiB), and every thread's arena keeps
/// its own high-water mark. `tune_heap` makes freed memory stay for reuse while traffic flows,
/// in one arena; `HeapTrimmer` hands it back to the kernel once no payload has moved for a whole
/// period, so an idle relay stays small.
///
/// Process-wide and a no-op off glibc; call before the threads that allocate are started.
void tune_heap();

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
