// The relay process's malloc settings: process-wide, so set once by the program that owns it.
#pragma once

namespace switchboard::core {

/// gRPC allocates and frees a read buffer and a parsed message per 64 KiB chunk on its own
/// threads; with glibc's defaults the freed heap top goes back to the kernel almost at once and
/// the next message faults it in again (a page fault per 4 KiB), and every thread's arena keeps
/// its own high-water mark. This makes freed memory stay for reuse while traffic flows, in one
/// arena; the gRPC door's heap trimmer hands it back once the relay is idle.
///
/// A no-op off glibc; call before the threads that allocate are started.
void tune_heap();

}  // namespace switchboard::core
