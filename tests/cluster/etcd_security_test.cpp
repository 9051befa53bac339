// Relays reaching a secured etcd: over TLS with client certificates, and as an etcd user with a
// password. Real etcd, real relay processes on 127.0.0.N, real clients; the certificates come
// from the openssl command line.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cluster/etcd_client.hpp"
#include "support/clients.hpp"
#include "support/etcd_server.hpp"
#include "support/test_pki.hpp"
#include "switchboard/blocking.hpp"
#include "tests/cluster/poll.hpp"
#include "tests/cluster/relay_process.hpp"

namespace switchboard::test {
namespace {

using namespace std::chrono_literals;

// etcd's certificate (for 127.0.0.1) and the relays' client certificate, signed by the test CA.
class EtcdTls : public ::testing::Test {
protected:
  EtcdTls() {
    pki_.leaf("etcd", "serverAuth,clientAuth", "subjectAltName=IP:127.0.0.1\n");
    pki_.leaf("relay", "clientAuth", "");
  }

  EtcdOptions mutual_tls() const {
    EtcdOptions options;
    options.cert_file = pki_.file("etcd.pem");
    options.key_file = pki_.file("etcd.key");
    options.ca_file = pki_.file("ca.pem");
    options.client_cert_auth = true;
    options.ctl_cert_file = pki_.file("relay.pem");
    options.ctl_key_file = pki_.file("relay.key");
    return options;
  }
  // A relay's options: trusting `ca` ("ca.pem" or "rogue-ca.pem"), presenting `who`'s
  // certificate (none when empty).
  std::vector<std::string> relay_tls(const std::string& ca, const std::string& who) const {
    std::vector<std::string> args{"--cluster-etcd-ca-file", pki_.file(ca)};
    if (!who.empty()) {
      args.insert(args.end(), {"--cluster-etcd-cert-file", pki_.file(who + ".pem"),
                               "--cluster-etcd-key-file", pki_.file(who + ".key")});
    }
    return args;
  }

  TestPki pki_;
};

// Two relays reach an etcd that asks every client for a certificate: both register, see each
// other, and a channel joined through one is claimed in etcd.
TEST_F(EtcdTls, RelaysReachEtcdOverMutualTls) {
  EtcdServer etcd(mutual_tls());
  ASSERT_TRUE(etcd.url().starts_with("https://"));
  Relay r1(etcd, 1, "3s", relay_tls("ca.pem", "relay"));
  Relay r2(etcd, 2, "3s", relay_tls("ca.pem", "relay"));
  ASSERT_TRUE(eventually([&] { return r1.members() == 2 && r2.members() == 2; }))
      << r1.process().err();
  EXPECT_EQ(r1.health().status, 200);
  EXPECT_EQ(r2.health().status, 200);
  EXPECT_EQ(etcd.get_prefix("/switchboard/members/").size(), 2U);

  // Whichever relay the channel is placed on claims it through its TLS connection to etcd.
  const auto channel = Uuid::random();
  client::BlockingClient peer(options_for(r1.port(), channel));
  const auto claims = etcd.get_prefix("/switchboard/channels/" + channel.to_string());  // held
  ASSERT_EQ(claims.size(), 1U);
  EXPECT_TRUE(claims.front().second == "r1" || claims.front().second == "r2")
      << claims.front().second;
}

// A relay etcd refuses (no client certificate), and one that does not trust etcd's certificate,
// stay out of the cluster, not ready, each with the reason in its log once; the relay etcd
// accepts is unaffected.
TEST_F(EtcdTls, RelaysEtcdRefusesOrDoesNotTrustStayOutAndSayWhy) {
  EtcdServer etcd(mutual_tls());
  Relay r1(etcd, 1, "3s", relay_tls("ca.pem", "relay"));
  ASSERT_TRUE(eventually([&] { return r1.members() == 1 && r1.health().status == 200; }));

  Relay anonymous(etcd, 2, "3s", relay_tls("ca.pem", ""));
  Relay distrustful(etcd, 3, "3s", relay_tls("rogue-ca.pem", "relay"));
  for (auto* relay : {&anonymous, &distrustful}) {
    EXPECT_TRUE(relay->process().wait_for_output("cluster etcd call failed node=" + relay->id()))
        << relay->process().err();
    EXPECT_EQ(relay->health().status, 503);
    EXPECT_EQ(relay->members(), 0);
  }
  // The log line gives the connection's error, not only the call's timeout.
  const auto reason = [](Relay& relay) {
    const auto err = relay.process().err();
    const auto at = err.find("cluster etcd call failed node=" + relay.id());
    return err.substr(at, err.find('\n', at) - at);
  };
  EXPECT_NE(reason(distrustful).find("certificate verify failed"), std::string::npos)
      << reason(distrustful);
  // Over TLS 1.3 etcd's refusal of a client without a certificate comes as the first read
  // failing, which is all gRPC reports.
  EXPECT_NE(reason(anonymous).find("; connection: failed to connect"), std::string::npos)
      << reason(anonymous);
  EXPECT_EQ(r1.members(), 1);
  EXPECT_EQ(etcd.get_prefix("/switchboard/members/").size(), 1U);
}

// etcd's certificate must name the host the endpoint names: one issued for 127.0.0.2, served on
// 127.0.0.1, is refused though the CA signed it.
TEST_F(EtcdTls, AnEtcdCertificateForAnotherHostIsRefused) {
  pki_.leaf("elsewhere", "serverAuth", "subjectAltName=IP:127.0.0.2\n");
  auto options = mutual_tls();
  options.cert_file = pki_.file("elsewhere.pem");
  options.key_file = pki_.file("elsewhere.key");
  options.client_cert_auth = false;
  options.ca_file.clear();  // etcdctl would refuse it too
  EtcdServer etcd(options);
  Relay relay(etcd, 1, "3s", relay_tls("ca.pem", "relay"));
  ASSERT_TRUE(relay.process().wait_for_output("cluster etcd call failed node=r1"))
      << relay.process().err();
  EXPECT_EQ(relay.health().status, 503);
  EXPECT_EQ(relay.members(), 0);
}

// The relay reads its certificate files again while it runs: started with a certificate etcd
// does not accept, it stays out; once the files hold one etcd accepts, it registers, without a
// restart.
TEST_F(EtcdTls, ARenewedClientCertificateIsPickedUpWithoutARestart) {
  pki_.leaf("impostor", "clientAuth", "", "rogue-ca");
  const auto copy = [&](const std::string& from, const std::string& to) {
    std::filesystem::copy_file(pki_.file(from), pki_.file(to),
                               std::filesystem::copy_options::overwrite_existing);
  };
  copy("impostor.pem", "live.pem");
  copy("impostor.key", "live.key");
  EtcdServer etcd(mutual_tls());
  Relay relay(etcd, 1, "3s",
              {"--cluster-etcd-ca-file", pki_.file("ca.pem"), "--cluster-etcd-cert-file",
               pki_.file("live.pem"), "--cluster-etcd-key-file", pki_.file("live.key"),
               "--cluster-etcd-tls-refresh-seconds", "1"});
  ASSERT_TRUE(relay.process().wait_for_output("cluster etcd call failed node=r1"))
      << relay.process().err();
  EXPECT_EQ(relay.members(), 0);

  copy("relay.key", "live.key");
  copy("relay.pem", "live.pem");
  ASSERT_TRUE(eventually([&] { return relay.members() == 1 && relay.health().status == 200; }, 30s))
      << relay.process().err();
  EXPECT_EQ(etcd.get_prefix("/switchboard/members/").size(), 1U);
}

TEST_F(EtcdTls, AnEtcdCertificateWithoutHttpsIsAConfigurationError) {
  EtcdServer etcd;  // http
  ChildServer relay(SWITCHBOARD_SERVER_BINARY,
                    {"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--cluster-etcd",
                     etcd.url(), "--node-id", "r1", "--cluster-etcd-ca-file", pki_.file("ca.pem")});
  ASSERT_TRUE(relay.wait_exit().has_value());
  EXPECT_NE(relay.err().find("etcd CA or client certificate given, but the endpoints are http://"),
            std::string::npos)
      << relay.err();
}

TEST(EtcdEndpoints, OneSchemeForAllAndHttpByDefault) {
  const auto secure = cluster::parse_etcd_endpoints("https://10.0.0.1:2379,https://etcd-2:2379/");
  EXPECT_TRUE(secure.tls);
  EXPECT_EQ(secure.hosts, (std::vector<std::string>{"10.0.0.1:2379", "etcd-2:2379"}));
  const auto plain = cluster::parse_etcd_endpoints("http://a:1,b:2");
  EXPECT_FALSE(plain.tls);
  EXPECT_EQ(plain.hosts, (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_THROW(cluster::parse_etcd_endpoints("https://a:1,http://b:2"), std::invalid_argument);
  EXPECT_THROW(cluster::parse_etcd_endpoints("unix:///run/etcd.sock"), std::invalid_argument);
  EXPECT_THROW(cluster::parse_etcd_endpoints(","), std::invalid_argument);
  // A client certificate needs its key, and TLS settings need https.
  cluster::EtcdSecurity half;
  half.cert_file = "relay.pem";
  EXPECT_THROW(cluster::EtcdClient(secure, half), std::invalid_argument);
  cluster::EtcdSecurity roots;
  roots.ca_file = "ca.pem";
  EXPECT_THROW(cluster::EtcdClient(plain, roots), std::invalid_argument);
}

// Turns etcd's authentication on, with a root user for etcdctl and the user "relay" (password
// "relay-secret") whose role may read and write the cluster's prefix.
void enable_etcd_auth(EtcdServer& etcd) {
  etcd.etcdctl({"user", "add", "root:root-secret"});
  etcd.etcdctl({"user", "grant-role", "root", "root"});
  etcd.etcdctl({"user", "add", "relay:relay-secret"});
  etcd.etcdctl({"role", "add", "switchboard"});
  etcd.etcdctl(
      {"role", "grant-permission", "switchboard", "--prefix=true", "readwrite", "/switchboard/"});
  etcd.etcdctl({"user", "grant-role", "relay", "switchboard"});
  etcd.etcdctl({"auth", "enable"});
  etcd.set_etcdctl_user("root:root-secret");
}

// A password file for --cluster-etcd-password-file: `password` and a newline; removed with it.
class PasswordFile {
public:
  explicit PasswordFile(const std::string& password) {
    char pattern[] = "/tmp/switchboard-etcd-password-XXXXXX";
    const int fd = ::mkstemp(pattern);
    if (fd < 0) throw std::runtime_error("mkstemp failed");
    ::close(fd);
    path_ = pattern;
    write(password);
  }
  PasswordFile(const PasswordFile&) = delete;
  PasswordFile& operator=(const PasswordFile&) = delete;
  ~PasswordFile() { ::unlink(path_.c_str()); }

  // Replaces the file's content whole (a new file renamed over it, as an operator's tools do).
  void write(const std::string& password) const {
    const std::string next = path_ + ".next";
    std::ofstream(next) << password << "\n";
    std::filesystem::rename(next, path_);
  }
  const std::string& path() const { return path_; }

private:
  std::string path_;
};

// etcd with its authentication on: a relay that logs in as a user whose role may write the
// cluster's prefix serves; one with a wrong password stays out and says why; when etcd forgets
// the tokens it issued (authentication turned off and on), the relay logs in again at its next
// call and keeps serving on its lease.
TEST(EtcdAuth, RelaysAuthenticateAsAnEtcdUser) {
  EtcdServer etcd;
  enable_etcd_auth(etcd);
  const PasswordFile right("relay-secret");
  const PasswordFile wrong("not-the-secret");

  Relay r1(etcd, 1, "3s",
           {"--cluster-etcd-user", "relay", "--cluster-etcd-password-file", right.path()});
  ASSERT_TRUE(eventually([&] { return r1.members() == 1 && r1.health().status == 200; }))
      << r1.process().err();
  EXPECT_EQ(r1.metric("switchboard_cluster_etcd_authentications_total"), 1.0);
  const auto lease = r1.lease();

  Relay impostor(etcd, 2, "3s",
                 {"--cluster-etcd-user", "relay", "--cluster-etcd-password-file", wrong.path()});
  EXPECT_TRUE(impostor.process().wait_for_output("etcd authentication as relay failed"))
      << impostor.process().err();
  EXPECT_EQ(impostor.health().status, 503);
  EXPECT_EQ(impostor.members(), 0);
  EXPECT_EQ(r1.members(), 1);

  // A channel claim writes under the prefix with the relay's token.
  const auto first = Uuid::random();
  {
    client::BlockingClient peer(options_for(r1.port(), first));
    EXPECT_EQ(etcd.get_prefix("/switchboard/channels/" + first.to_string()).size(), 1U);
  }

  // etcd drops every token it issued; the relay's next write is refused once, and it logs in
  // again: the claim of a new channel still succeeds, on the same lease.
  etcd.etcdctl({"auth", "disable"});
  etcd.etcdctl({"auth", "enable"});
  const auto second = Uuid::random();
  {
    client::BlockingClient peer(options_for(r1.port(), second));
    EXPECT_EQ(etcd.get_prefix("/switchboard/channels/" + second.to_string()).size(), 1U);
  }
  EXPECT_EQ(r1.metric("switchboard_cluster_etcd_authentications_total"), 2.0);
  EXPECT_EQ(r1.lease(), lease);
  EXPECT_EQ(r1.health().status, 200);
}

// Changes etcd's password of the user "relay" as an operator does, which makes etcd drop the
// tokens it issued to that user.
void change_relay_password(const EtcdServer& etcd, const std::string& password) {
  const auto result = run_server("/bin/sh",
                                 {"-c",
                                  "printf '%s\\n' \"$1\" | /usr/bin/etcdctl --endpoints=\"$2\" "
                                  "--user=root:root-secret user passwd relay --interactive=false",
                                  "sh", password, etcd.url()},
                                 {{"ETCDCTL_API", "3"}});
  ASSERT_EQ(result.exit_code, 0) << result.err;
}

// A claim of a new channel: the relay writes it in etcd with its token while a peer is there.
bool claims_a_new_channel(EtcdServer& etcd, Relay& relay) {
  const auto channel = Uuid::random();
  try {
    client::BlockingClient peer(options_for(relay.port(), channel));
    return etcd.get_prefix("/switchboard/channels/" + channel.to_string()).size() == 1U;
  } catch (const std::exception&) {
    return false;
  }
}

// A password rotated as docs/CLUSTER.md says: the file first, then etcd, which drops the relay's
// token; the relay's next call logs in with the file's new password, on the same lease. Changed
// the other way round (etcd first), the relay is refused until the file has the new password,
// and then serves again without a restart.
TEST(EtcdAuth, ARotatedPasswordIsReadFromTheFileAtTheNextLogin) {
  EtcdServer etcd;
  enable_etcd_auth(etcd);
  const PasswordFile password("relay-secret");
  Relay relay(etcd, 1, "3s",
              {"--cluster-etcd-user", "relay", "--cluster-etcd-password-file", password.path()});
  ASSERT_TRUE(eventually([&] { return relay.members() == 1 && relay.health().status == 200; }))
      << relay.process().err();
  const auto lease = relay.lease();
  EXPECT_TRUE(claims_a_new_channel(etcd, relay));
  EXPECT_EQ(relay.metric("switchboard_cluster_etcd_authentications_total"), 1.0);

  password.write("relay-rotated");
  // Until etcd changes it, the relay's token stays good and it does not log in again.
  EXPECT_TRUE(claims_a_new_channel(etcd, relay));
  EXPECT_EQ(relay.metric("switchboard_cluster_etcd_authentications_total"), 1.0);
  change_relay_password(etcd, "relay-rotated");
  EXPECT_TRUE(claims_a_new_channel(etcd, relay)) << relay.process().err();
  EXPECT_EQ(relay.metric("switchboard_cluster_etcd_authentications_total"), 2.0);

  EXPECT_EQ(relay.lease(), lease);

  change_relay_password(etcd, "rotated-again");
  EXPECT_FALSE(claims_a_new_channel(etcd, relay));
  password.write("rotated-again");
  // Refused meanwhile, the relay may have lost its lease and registers again: either way it
  // serves once it has logged in with the file's password.
  EXPECT_TRUE(eventually([&] {
    return relay.health().status == 200 && claims_a_new_channel(etcd, relay);
  })) << relay.process().err();
  EXPECT_GE(relay.metric("switchboard_cluster_etcd_authentications_total"), 3.0);
}

}  // namespace
}  // namespace switchboard::test
