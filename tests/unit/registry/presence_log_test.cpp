// Unit tests for a channel's shared presence log (presence_log.hpp) and how the registry hands
// it to members: every change a member is told of can be read back from the first chunk it was
// given, across chunks, and a channel whose members hold nothing keeps nothing.
#include "registry/presence_log.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "registry/peer.hpp"
#include "registry/registry.hpp"

namespace switchboard::core {
namespace {

PresenceRecord record(std::uint64_t version) {
  Uuid subject = Uuid::random();
  return PresenceRecord{version % 3 == 0 ? wire::PresenceEvent::left : wire::PresenceEvent::joined,
                        version, subject};
}

// Walks the chain from `chunk` as a member's writer does.
const PresenceRecord& read(std::shared_ptr<PresenceLogChunk>& chunk, std::uint64_t version) {
  while (!chunk->holds(version)) chunk = chunk->next();
  return chunk->at(version);
}

TEST(PresenceLog, AReaderOfTheFirstChunkReadsEveryLaterChangeAcrossChunks) {
  PresenceLog log;
  std::vector<PresenceRecord> written;
  std::shared_ptr<PresenceLogChunk> first;
  for (std::uint64_t version = 7; version < 7 + 1000; ++version) {
    written.push_back(record(version));
    auto chunk = log.append(written.back());
    ASSERT_TRUE(chunk->holds(version));
    if (!first) first = chunk;
  }
  auto cursor = first;
  for (const auto& expected : written) {
    const auto& got = read(cursor, expected.version);
    EXPECT_EQ(got.version, expected.version);
    EXPECT_EQ(got.event, expected.event);
    EXPECT_EQ(got.subject, expected.subject);
  }
  EXPECT_NE(cursor, first) << "a thousand changes fit in one chunk: the walk was not tested";
}

TEST(PresenceLog, AChannelWhoseMembersHoldNothingKeepsNothing) {
  PresenceLog log;
  std::weak_ptr<PresenceLogChunk> dropped;
  {
    auto chunk = log.append(record(1));
    dropped = chunk;
    log.append(record(2));
  }
  EXPECT_TRUE(dropped.expired());
  // The next change starts a chain of its own, at its version.
  auto chunk = log.append(record(3));
  EXPECT_EQ(chunk->first_version(), 3u);
}

TEST(PresenceLog, VersionsThatStartOverStartANewChain) {
  PresenceLog log;
  auto old_chain = log.append(record(5));
  auto fresh = log.append(record(1));
  EXPECT_EQ(fresh->first_version(), 1u);
  EXPECT_EQ(old_chain->next(), nullptr);
  EXPECT_EQ(old_chain->at(5).version, 5u);
}

// A member that keeps the first chunk it is given and the last version it was told of.
class LoggingPeer final : public Peer {
public:
  void on_presence(const wire::Presence& /*event*/) override { ++unlogged; }
  void on_logged_presence(const wire::Presence& event,
                          const std::shared_ptr<PresenceLogChunk>& logged) override {
    std::lock_guard lock(mutex);
    if (!first) first = logged;
    told.push_back(event);
  }
  std::shared_ptr<Endpoint> accept_stream(StreamOffer /*offer*/) override { return nullptr; }
  bool has_capacity() const override { return true; }
  void relocate(const cluster::Verdict& /*next*/) override {}

  std::mutex mutex;
  std::shared_ptr<PresenceLogChunk> first;
  std::vector<wire::Presence> told;
  int unlogged = 0;
};

TEST(PresenceLog, TheRegistryLogsEveryChangeItTellsAMember) {
  Limits limits;
  Registry registry(limits);
  const auto channel = Uuid::random();
  auto watcher = std::make_shared<LoggingPeer>();
  ASSERT_EQ(registry.join(channel, Uuid{}, false, watcher).status, Status::ok);
  std::vector<Uuid> others;
  for (int i = 0; i < 300; ++i) {
    auto other = std::make_shared<LoggingPeer>();
    const auto joined = registry.join(channel, Uuid{}, false, other);
    ASSERT_EQ(joined.status, Status::ok);
    others.push_back(joined.peer_id);
  }
  for (std::size_t i = 0; i < others.size(); i += 2) registry.leave(channel, others[i]);

  ASSERT_EQ(watcher->told.size(), 450u);
  EXPECT_EQ(watcher->unlogged, 0);
  auto cursor = watcher->first;
  for (const auto& event : watcher->told) {
    while (!cursor->holds(event.version)) cursor = cursor->next();
    const auto& logged = cursor->at(event.version);
    EXPECT_EQ(logged.event, event.event);
    EXPECT_EQ(logged.subject, event.peers.front());
  }
}

}  // namespace
}  // namespace switchboard::core
