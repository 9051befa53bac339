// Test support: a throwaway certificate authority in a temporary folder, made with the openssl
// command line: "ca" and "rogue-ca" (a CA nobody trusts), leaf certificates signed by "ca". The
// folder and its files go with the object.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace switchboard::test {

class TestPki {
public:
  /// The two CAs, "server" (serverAuth for IP 127.0.0.1), "alice" and "bob" (clientAuth).
  TestPki() {
    char pattern[] = "/tmp/switchboard-pki-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    make_ca("ca");
    make_ca("rogue-ca");
    leaf("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n");
    leaf("alice", "clientAuth", "");
    leaf("bob", "clientAuth", "");
  }
  ~TestPki() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  /// NAME.pem (certificate) and NAME.key, signed by `signer` ("ca" or "rogue-ca"): `usage` is
  /// the extendedKeyUsage list ("serverAuth", "clientAuth", or both comma-separated),
  /// `extensions` more lines of them (a subjectAltName).
  void leaf(const std::string& name, const std::string& usage, const std::string& extensions,
            const std::string& signer = "ca") {
    run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
        file(name + ".key") + " -out " + file(name + ".csr") + " -subj /CN=" + name);
    std::ofstream(dir_ / (name + ".ext")) << extensions << "extendedKeyUsage=" << usage << "\n";
    run("openssl x509 -req -in " + file(name + ".csr") + " -CA " + file(signer + ".pem") +
        " -CAkey " + file(signer + ".key") + " -set_serial " + std::to_string(1000 + serial_++) +
        " -days 2 -out " + file(name + ".pem") + " -extfile " + file(name + ".ext"));
  }

  /// The path of `name` in the folder ("ca.pem", "alice.key").
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

private:
  static void run(const std::string& command) {
    if (std::system((command + " >/dev/null 2>&1").c_str()) != 0) {
      throw std::runtime_error("failed: " + command);
    }
  }
  void make_ca(const std::string& name) {
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
        file(name + ".key") + " -out " + file(name + ".pem") + " -days 2 -subj /CN=" + name +
        " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign");
  }

  std::filesystem::path dir_;
  int serial_ = 0;
};

}  // namespace switchboard::test
