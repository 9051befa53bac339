// The relay process's malloc settings: process-wide, so set once by the program that owns it.
#pragma once

#include <string>

namespace switchboard::core {

/// gRPC allocates and frees a read buffer and a parsed message per 64 KiB chunk on its own
/// threads; with glibc's defaults the freed heap top goes back to the kernel almost at once and
/// the next message faults it in again (a page fault per 4 KiB), and every thread's arena keeps
/// its own high-water mark. This makes freed memory stay for reuse while traffic flows, in one
/// arena; the gRPC door's heap trimmer hands it back once the relay is idle.
///
/// A no-op off glibc; call before the threads that allocate are started.
void tune_heap();

/// What became of the request for a heap on transparent huge pages.
struct HugePageHeap {
  bool in_use = false;  ///< malloc was started with glibc.malloc.hugetlb=1
  std::string reason;   ///< why not, when not (for the start-up log)
};

/// Every connection the relay accepts touches fresh heap, and the kernel maps it 4 KiB at a time,
/// one page fault each (10,000 peers joining at once: about 19,000 faults, a fifth of the storm's
/// CPU on a virtual machine). glibc can grow the heap in transparent huge pages instead, but only
/// when told before malloc starts (the GLIBC_TUNABLES environment variable, read by the dynamic
/// loader). So, when the kernel offers transparent huge pages and the operator has not chosen
/// glibc.malloc.hugetlb themselves, this adds glibc.malloc.hugetlb=1 to GLIBC_TUNABLES and
/// replaces the process with a fresh run of the same program and arguments (same process id).
///
/// Call first thing in main(), before any thread, file or socket exists. Returns only when the
/// process was not replaced: it then tells whether the heap is on huge pages and, if not, why.
HugePageHeap restart_on_huge_page_heap(char** argv);

/// Reports without restarting (`heap_huge_pages = false`): in use only when the operator set it.
HugePageHeap huge_page_heap_state();

}  // namespace switchboard::core
