// A channel's presence changes, recorded once for all its members. Owns the records, in chunks
// shared by the channel (weakly, its newest) and by every member that still owes its client a
// change in them.
#pragma once

#include <cstdint>
#include <memory>

#include "switchboard/wire/frame.hpp"

namespace switchboard::core {

struct PresenceRecord {
  wire::PresenceEvent event = wire::PresenceEvent::joined;
  std::uint64_t version = 0;
  Uuid subject;
};

/// Consecutive versions of one channel's changes. The registry appends under its lock; a
/// reader reads only versions it was told of (through a lock that orders it after the append),
/// and each record is written once, so readers and the appender never touch the same memory.
/// `next` is set once, before the first record it holds is announced.
class PresenceLogChunk {
public:
  PresenceLogChunk(std::uint64_t first_version, std::uint32_t capacity);
  PresenceLogChunk(const PresenceLogChunk&) = delete;
  PresenceLogChunk& operator=(const PresenceLogChunk&) = delete;

  std::uint64_t first_version() const noexcept { return first_version_; }
  /// The record of `version`, which this chunk holds.
  const PresenceRecord& at(std::uint64_t version) const noexcept {
    return records_[version - first_version_];
  }
  bool holds(std::uint64_t version) const noexcept {
    return version >= first_version_ && version - first_version_ < capacity_;
  }
  const std::shared_ptr<PresenceLogChunk>& next() const noexcept { return next_; }

private:
  friend class PresenceLog;

  std::uint64_t first_version_;
  std::uint32_t capacity_;
  std::uint32_t size_ = 0;  // the appender's alone
  std::unique_ptr<PresenceRecord[]> records_;
  std::shared_ptr<PresenceLogChunk> next_;
};

/// The appending end of a channel's log. Held weakly: once every member has written what it
/// owed, the chunks are freed and a quiet channel keeps none.
class PresenceLog {
public:
  /// Appends the change (versions consecutive, under the registry's lock) and returns the
  /// chunk that holds it, which stays alive while the caller or a reader holds it.
  std::shared_ptr<PresenceLogChunk> append(const PresenceRecord& record);

private:
  std::weak_ptr<PresenceLogChunk> tail_;
};

}  // namespace switchboard::core
