// What a relay needs to reach a secured etcd: its roots, its client certificate, its user. The
// settings only; EtcdClient turns them into gRPC credentials and tokens.
#pragma once

#include <string>

namespace switchboard::cluster {

/// How the client proves itself to etcd and checks etcd, beyond the endpoints' scheme.
struct EtcdSecurity {
  /// PEM roots that etcd's certificate must chain to (https); empty: gRPC's default roots.
  std::string ca_pem;
  /// PEM client certificate chain and key, for an etcd that asks for one
  /// (--client-cert-auth); both or neither.
  std::string cert_pem;
  std::string key_pem;
  /// etcd user (its authentication enabled); empty: calls carry no token.
  std::string user;
  std::string password;
};

}  // namespace switchboard::cluster
