// What a relay needs to reach a secured etcd: its roots, its client certificate, its user. The
// settings only; EtcdClient turns them into gRPC credentials and tokens.
#pragma once

#include <string>

namespace switchboard::cluster {

/// How the client proves itself to etcd and checks etcd, beyond the endpoints' scheme.
struct EtcdSecurity {
  /// PEM file of the roots etcd's certificate must chain to (https); empty: the system's.
  std::string ca_file;
  /// PEM files of the client certificate chain and its key, for an etcd that asks for one
  /// (--client-cert-auth); both or neither.
  std::string cert_file;
  std::string key_file;
  /// How often the files are read again: a renewed certificate is used from the next
  /// connection to etcd on, without a restart.
  unsigned refresh_seconds = 60;
  /// etcd user (its authentication enabled); empty: calls carry no token.
  std::string user;
  std::string password;
  /// The file `password` was read from (its first line), or empty. The client reads it again
  /// each time it logs in to etcd, so a password changed in etcd and in this file is used from
  /// the next login on (etcd drops a user's tokens when its password changes), with no
  /// restart. A file that cannot be read then, or starts with an empty line, leaves the last
  /// password in use.
  std::string password_file;
};

}  // namespace switchboard::cluster
