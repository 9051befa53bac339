// Rendezvous placement: even spread, minimal movement when members come and go, stable values.
#include "cluster/placement.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

namespace switchboard::cluster {
namespace {

constexpr int kChannels = 100'000;

std::vector<Uuid> channels(std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<Uuid> out(kChannels);
  for (auto& channel : out) {
    for (auto& byte : channel.bytes) byte = static_cast<std::uint8_t>(random());
  }
  return out;
}

std::vector<std::string> members(int count) {
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back("relay-" + std::to_string(i));
  return out;
}

TEST(Placement, SpreadsEvenlyOverThreeToSixteenMembers) {
  const auto all = channels(1);
  for (int n = 3; n <= 16; ++n) {
    const auto nodes = members(n);
    std::map<std::string, int> load;
    for (const auto& channel : all) ++load[owner_of(channel, nodes)];
    ASSERT_EQ(load.size(), static_cast<std::size_t>(n));
    const double fair = static_cast<double>(kChannels) / n;
    for (const auto& [node, count] : load) {
      EXPECT_NEAR(count, fair, fair * 0.05) << n << " members, " << node;
    }
  }
}

TEST(Placement, AddingAMemberMovesAboutItsShareAndOnlyToIt) {
  const auto all = channels(2);
  for (int n = 3; n <= 15; ++n) {
    const auto before = members(n);
    auto after = before;
    after.push_back("relay-new");
    int moved = 0;
    for (const auto& channel : all) {
      const auto old_owner = owner_of(channel, before);
      const auto new_owner = owner_of(channel, after);
      if (old_owner == new_owner) continue;
      ++moved;
      EXPECT_EQ(new_owner, "relay-new");
    }
    const double expected = static_cast<double>(kChannels) / (n + 1);
    EXPECT_NEAR(moved, expected, expected * 0.05) << n << " -> " << n + 1 << " members";
  }
}

TEST(Placement, RemovingAMemberMovesOnlyItsChannels) {
  const auto all = channels(3);
  for (int n = 4; n <= 16; ++n) {
    const auto before = members(n);
    auto after = before;
    const auto gone = after[static_cast<std::size_t>(n / 2)];
    after.erase(after.begin() + n / 2);
    int moved = 0;
    for (const auto& channel : all) {
      const auto old_owner = owner_of(channel, before);
      const auto new_owner = owner_of(channel, after);
      if (old_owner == new_owner) continue;
      ++moved;
      EXPECT_EQ(old_owner, gone);
    }
    const double expected = static_cast<double>(kChannels) / n;
    EXPECT_NEAR(moved, expected, expected * 0.05) << n << " -> " << n - 1 << " members";
  }
}

TEST(Placement, OrderOfMembersDoesNotMatter) {
  const auto all = channels(4);
  auto nodes = members(7);
  auto reversed = std::vector<std::string>(nodes.rbegin(), nodes.rend());
  for (std::size_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(owner_of(all[i], nodes), owner_of(all[i], reversed));
  }
}

TEST(Placement, NoMembersNoOwner) { EXPECT_EQ(owner_of(Uuid::random(), {}), ""); }

// Fixed values: a change of the hash would move every channel of a running cluster whose relays
// run different builds. These pin it.
TEST(Placement, WeightsAreStableAcrossBuilds) {
  const auto channel = *Uuid::parse("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
  EXPECT_EQ(placement_weight("relay-a", channel), 18188559502507998690ULL);
  EXPECT_EQ(placement_weight("relay-b", channel), 17597368427890883220ULL);
  EXPECT_EQ(placement_weight("", Uuid{}), 2448385507222971125ULL);
  const std::vector<std::string> nodes{"relay-a", "relay-b", "relay-c"};
  EXPECT_EQ(owner_of(channel, nodes), "relay-a");
}

}  // namespace
}  // namespace switchboard::cluster
