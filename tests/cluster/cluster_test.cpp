// Relays as real switchboard-server processes on 127.0.0.1, .2 and .3 around a real etcd:
// membership views, a killed relay, a frozen relay's fence, an etcd outage, a drain, and a lane
// of a shared connection whose join waits for etcd.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>

#include "support/child_server.hpp"
#include "support/clients.hpp"
#include "support/cut_proxy.hpp"
#include "support/etcd_server.hpp"
#include "support/raw_shared.hpp"
#include "tests/cluster/poll.hpp"
#include "tests/cluster/relay_process.hpp"

namespace switchboard::test {
namespace {

using namespace std::chrono_literals;

std::size_t member_keys(const EtcdServer& etcd) {
  return etcd.get_prefix("/switchboard/members/").size();
}

TEST(Cluster, ThreeRelaysSeeEachOtherAndAKilledOneDisappears) {
  EtcdServer etcd;
  Relay r1(etcd, 1, "1s");
  Relay r2(etcd, 2, "1s");
  Relay r3(etcd, 3, "1s");
  ASSERT_TRUE(eventually([&] {
    return r1.members() == 3 && r2.members() == 3 && r3.members() == 3 &&
           r1.revision() == r2.revision() && r2.revision() == r3.revision();
  })) << r1.cluster_json();
  const auto view = r2.cluster_json();
  for (const auto* relay : {&r1, &r2, &r3}) {
    EXPECT_NE(view.find("\"node_id\":\"" + relay->id() + "\",\"native\":\"" + relay->native()),
              std::string::npos)
        << view;
    EXPECT_EQ(relay->health().status, 200);
  }
  EXPECT_EQ(member_keys(etcd), 3U);

  r3.process().signal(SIGKILL);
  ASSERT_TRUE(r3.process().wait_exit());
  // Its lease expires after its TTL; the others' views follow etcd's.
  ASSERT_TRUE(eventually([&] { return r1.members() == 2 && r2.members() == 2; }));
  EXPECT_EQ(r1.revision(), r2.revision());
  EXPECT_EQ(member_keys(etcd), 2U);
  EXPECT_EQ(r1.cluster_json().find("\"r3\""), std::string::npos);
}

TEST(Cluster, AFrozenRelayIsFencedItsClaimsGoAndItRegistersAgain) {
  EtcdServer etcd;
  Relay r1(etcd, 1, "1s");
  Relay r2(etcd, 2, "1s");
  ASSERT_TRUE(eventually([&] { return r1.members() == 2 && r2.members() == 2; }));
  // A claim on r2's lease, as its directory makes them.
  const auto lease = r2.lease();
  ASSERT_FALSE(lease.empty());
  const std::string claim = "/switchboard/channels/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
  etcd.etcdctl({"put", "--lease=" + lease, claim, "r2"});
  ASSERT_EQ(etcd.get_prefix(claim).size(), 1U);

  r2.process().signal(SIGSTOP);
  // Past its lease: the others see it go, and its claim goes with the lease.
  ASSERT_TRUE(eventually([&] { return r1.members() == 1; }));
  EXPECT_TRUE(etcd.get_prefix(claim).empty());
  r2.process().signal(SIGCONT);

  // It notices it cannot trust its lease, serves nothing, and registers with a new one.
  EXPECT_TRUE(r2.process().wait_for_output("cluster relay fenced node=r2"));
  ASSERT_TRUE(eventually(
      [&] { return r2.health().status == 200 && r1.members() == 2 && r2.members() == 2; }));
  EXPECT_EQ(r2.metric("switchboard_cluster_lease_grants_total"), 2.0);
  EXPECT_EQ(r2.metric("switchboard_cluster_fenced"), 0.0);
  EXPECT_NE(r2.lease(), lease);
  EXPECT_TRUE(etcd.get_prefix(claim).empty());
}

TEST(Cluster, RelaysStayHealthyThroughAnEtcdOutageUntilTheFence) {
  EtcdServer etcd;
  // Renewed every 2 s and fenced 4 s after the last renewal: the check right after the outage
  // begins is inside the lease.
  Relay r1(etcd, 1, "6s");
  Relay r2(etcd, 2, "6s");
  ASSERT_TRUE(eventually([&] { return r1.members() == 2 && r2.members() == 2; }));

  etcd.stop();
  EXPECT_EQ(r1.health().status, 200);
  EXPECT_EQ(r2.health().status, 200);
  // Then the fence: not ready, with the reason, until etcd is back.
  for (auto* relay : {&r1, &r2}) {
    ASSERT_TRUE(eventually([&] { return relay->health().status == 503; }, 20s));
    EXPECT_EQ(relay->health().body, "not ready: relay fenced: cannot renew its lease\n");
    EXPECT_EQ(relay->metric("switchboard_cluster_fenced"), 1.0);
  }

  etcd.start();
  ASSERT_TRUE(eventually(
      [&] {
        return r1.health().status == 200 && r2.health().status == 200 && r1.members() == 2 &&
               r2.members() == 2;
      },
      30s));
  EXPECT_EQ(r1.metric("switchboard_cluster_lease_grants_total"), 2.0);
  EXPECT_EQ(member_keys(etcd), 2U);
}

TEST(Cluster, ADrainingRelayLeavesAtOnce) {
  EtcdServer etcd;
  // A lease far longer than the wait below: only the revoke at the drain explains the leave.
  Relay r1(etcd, 1, "60s");
  Relay r2(etcd, 2, "60s");
  ASSERT_TRUE(eventually([&] { return r1.members() == 2 && r2.members() == 2; }));
  r2.process().signal(SIGTERM);
  ASSERT_EQ(r2.process().wait_exit(), 0);
  EXPECT_TRUE(r2.process().wait_for_output("cluster left node=r2"));
  ASSERT_TRUE(eventually([&] { return r1.members() == 1; }, 20s));
  EXPECT_EQ(member_keys(etcd), 1U);
}

TEST(Cluster, EveryDocumentedClusterMetricIsExposedAndViceVersa) {
  EtcdServer etcd;
  Relay r1(etcd, 1, "1s");
  std::set<std::string> exposed;
  std::istringstream lines(http_request(r1.admin(), "GET", "/metrics").body);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("# TYPE switchboard_cluster_")) {
      exposed.insert(line.substr(7, line.find(' ', 7) - 7));
    }
  }
  std::set<std::string> documented;
  std::ifstream doc(SWITCHBOARD_SOURCE_DIR "/docs/OPERATIONS.md");
  ASSERT_TRUE(doc);
  bool inside = false;
  for (std::string line; std::getline(doc, line);) {
    if (line.starts_with("<!-- BEGIN CLUSTER METRICS")) inside = true;
    if (line.starts_with("<!-- END CLUSTER METRICS")) inside = false;
    if (inside && line.starts_with("| `")) documented.insert(line.substr(3, line.find('`', 3) - 3));
  }
  EXPECT_FALSE(documented.empty());
  EXPECT_EQ(documented, exposed);
}

TEST(Cluster, SettingsComeFromFlagsAndEnvironmentAndAreChecked) {
  const auto printed =
      run_server(SWITCHBOARD_SERVER_BINARY, {"--print-config", "--node-id", "relay-7"},
                 {{"SWITCHBOARD_CLUSTER_ETCD", "http://127.0.0.1:2379"},
                  {"SWITCHBOARD_CLUSTER_LEASE_TTL", "5s"}});
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  EXPECT_NE(printed.out.find("cluster_etcd = \"http://127.0.0.1:2379\""), std::string::npos);
  EXPECT_NE(printed.out.find("node_id = \"relay-7\""), std::string::npos);
  EXPECT_NE(printed.out.find("cluster_lease_ttl = \"5s\""), std::string::npos);
  EXPECT_NE(printed.out.find("cluster_prefix = \"/switchboard\""), std::string::npos);

  const auto fractional =
      run_server(SWITCHBOARD_SERVER_BINARY, {"--print-config", "--cluster-lease-ttl", "1500ms"});
  EXPECT_EQ(fractional.exit_code, 2);
  EXPECT_NE(fractional.err.find("cluster_lease_ttl"), std::string::npos) << fractional.err;

  const auto bad_id =
      run_server(SWITCHBOARD_SERVER_BINARY,
                 {"--listen", "127.0.0.1:0", "--grpc-listen", "", "--admin-listen", "",
                  "--cluster-etcd", "http://127.0.0.1:1", "--node-id", "no/slashes"});
  EXPECT_EQ(bad_id.exit_code, 2);
  EXPECT_NE(bad_id.err.find("node id \"no/slashes\""), std::string::npos) << bad_id.err;
}

// A lane's session does not read while its HELLO waits for the cluster directory (a claim in
// etcd); once the lane holds 256 KiB unread, the shared connection stops reading, so the lanes
// behind it wait too (their bytes are read later, not lost). Here etcd stops answering (a
// frozen proxy in front of it): lane 1's claim fails after its call timeout, and only then does
// lane 2, whose channel the relay already serves, get its WELCOME.
TEST(Cluster, ALaneWaitingForTheDirectoryHoldsUpItsSharedConnection) {
  EtcdServer etcd;
  const auto etcd_port =
      static_cast<std::uint16_t>(std::stoi(etcd.url().substr(etcd.url().rfind(':') + 1)));
  CutProxy to_etcd(etcd_port);
  // Renewals every 10 s, fenced 20 s after the last one: far beyond this test's wait.
  Relay relay("http://127.0.0.1:" + std::to_string(to_etcd.port()), 1, "30s");
  ASSERT_TRUE(eventually([&] { return relay.members() == 1; }));
  const auto served = Uuid::random();
  auto member = options_for(relay.port(), served);
  member.host = relay.host();
  client::BlockingClient already_there(member);  // the relay claims `served` now

  to_etcd.freeze();
  RawShared shared(relay.port(), 0, relay.host());
  ASSERT_GT(shared.open(), 0u);
  std::vector<std::uint8_t> bytes = RawShared::lane(1, RawShared::hello(Uuid::random()));
  // PINGs for after the join: 320 KiB, more than a lane may hold unread (256 KiB).
  std::vector<std::uint8_t> pings;
  for (std::uint64_t i = 0; pings.size() < 64 * 1024 - 32; ++i) wire::append_ping(pings, i, false);
  for (int chunk = 0; chunk < 5; ++chunk) {
    const auto piece = RawShared::lane(1, pings);
    bytes.insert(bytes.end(), piece.begin(), piece.end());
  }
  const auto second = RawShared::lane(2, RawShared::hello(served));
  bytes.insert(bytes.end(), second.begin(), second.end());
  shared.send(bytes);

  const auto refused = shared.expect(1, wire::FrameType::error);
  ASSERT_TRUE(refused.has_value());
  wire::Error error;
  ASSERT_EQ(wire::parse_error(refused->bytes(), error), wire::DecodeError::none);
  EXPECT_EQ(error.status, Status::refused);
  EXPECT_NE(error.message.find("etcd unreachable"), std::string::npos) << error.message;
  EXPECT_TRUE(shared.expect_lane_end(1));
  ASSERT_TRUE(shared.expect(2, wire::FrameType::welcome).has_value());
  EXPECT_EQ(shared.arrival_order(), (std::vector<std::uint32_t>{1, 2}));
  // Lane 2 is a member like any other.
  EXPECT_TRUE(eventually([&] { return already_there.peers().size() == 1; }));
}

}  // namespace
}  // namespace switchboard::test
