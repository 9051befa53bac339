// A channel's shared presence log: chunk allocation and release.
#include "registry/presence_log.hpp"

#include <algorithm>
#include <utility>

namespace switchboard::core {
namespace {

// A channel of a few peers changes a few times at once; a storm of joins fills chunk after
// chunk. Chunks start small and double up to this.
constexpr std::uint32_t kFirstCapacity = 4;
constexpr std::uint32_t kLargestCapacity = 128;

}  // namespace

PresenceLogChunk::PresenceLogChunk(std::uint64_t first_version, std::uint32_t capacity)
    : first_version_(first_version),
      capacity_(capacity),
      records_(std::make_unique<PresenceRecord[]>(capacity)) {}

std::shared_ptr<PresenceLogChunk> PresenceLog::append(const PresenceRecord& record) {
  auto tail = tail_.lock();
  if (!tail || tail->first_version_ + tail->size_ != record.version) {
    // No member holds the chain (or the versions start over): a fresh one.
    tail = std::make_shared<PresenceLogChunk>(record.version, kFirstCapacity);
    tail_ = tail;
  } else if (tail->size_ == tail->capacity_) {
    const auto capacity = std::min(kLargestCapacity, 2 * tail->capacity_);
    tail->next_ = std::make_shared<PresenceLogChunk>(record.version, capacity);
    tail = tail->next_;
    tail_ = tail;
  }
  tail->records_[tail->size_++] = record;
  return tail;
}

}  // namespace switchboard::core
