#!/usr/bin/env bash
# Installs every Debian package Switchboard needs to build, test and run. Idempotent.
# Usage: setup.sh                    everything for development and the test suite
#        setup.sh --build-only       only what building the relay and the CLI needs (image build)
#        setup.sh --container-tools  also the container engine and rootfs tools (docker/verify.sh)
set -euo pipefail

mode=${1:-all}
case $mode in
  all | --build-only | --container-tools) ;;
  *)
    echo "usage: setup.sh [--build-only | --container-tools]" >&2
    exit 2
    ;;
esac

# Enough to build switchboard-server (with the gRPC gateway) and the switchboard CLI.
build_packages=(
  build-essential cmake ninja-build ccache
  libboost1.81-dev libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev
  protobuf-compiler libspdlog-dev libfmt-dev libcli11-dev libtomlplusplus-dev libjwt-dev
  libssl-dev grpc-proto
)
# Compilers, tools and libraries of the test suite, the benchmarks and the clients.
dev_packages=(
  clang clang-format clang-tidy libgtest-dev libgmock-dev libbenchmark-dev
  libclang-rt-14-dev python3 python3-grpcio python3-protobuf python3-jwt openssl coreutils procps
  chromium chromium-driver python3-selenium
  python3-grpc-tools python3-venv python3-setuptools python3-wheel python3-pip mypy
  # The Go client (clients/go). The protobuf -1-5 package by name: apt otherwise picks the -1-3
  # one, with which generated code compiles and then panics on the first call.
  golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
  protoc-gen-go protoc-gen-go-grpc
  # etcd for the cluster tests (docs/CLUSTER.md).
  etcd-server etcd-client
)
# A Docker engine, Compose and debootstrap for the base image (docker/verify.sh).
container_packages=(docker.io docker-compose debootstrap)

packages=("${build_packages[@]}")
if [[ $mode != --build-only ]]; then packages+=("${dev_packages[@]}"); fi
if [[ $mode == --container-tools ]]; then packages+=("${container_packages[@]}"); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# etcd's v3 API (.proto files) for the cluster directory's client, generated at build time. They
# ship only in Go source packages, and installing golang-etcd-server-dev would remove another
# package: the .debs are unpacked into a cache folder instead (CMake: SWITCHBOARD_ETCD_PROTO_DIR).
etcd_proto_dir=${SWITCHBOARD_ETCD_PROTO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/etcd-proto}
if [[ ! -f $etcd_proto_dir/go.etcd.io/etcd/etcdserver/etcdserverpb/rpc.proto ]]; then
  echo "setup: unpacking etcd's .proto files into $etcd_proto_dir"
  unpack=$(mktemp -d)
  chmod 755 "$unpack"  # apt-get download writes as user _apt
  trap 'rm -rf "$unpack"' EXIT
  if [[ $(id -u) -eq 0 ]]; then apt-get update -q; fi
  (cd "$unpack" && apt-get download -q golang-etcd-server-dev golang-github-gogo-protobuf-dev \
    golang-github-gogo-googleapis-dev)
  for deb in "$unpack"/*.deb; do dpkg -x "$deb" "$unpack/root"; done
  mkdir -p "$etcd_proto_dir"
  (cd "$unpack/root/usr/share/gocode/src" &&
    find . -name '*.proto' -exec cp --parents {} "$etcd_proto_dir" \;)
fi

if [[ $mode == --build-only ]]; then exit 0; fi

# The Node client and the interop tests need @grpc/grpc-js from the npm registry (lockfile pinned).
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
  fi
fi
# Again whenever the lockfile is newer than the installed tree (npm's node_modules/.package-lock.json):
# devDependencies (typescript) included. This also leaves every package in the npm cache, from
# which the node tests install the packed client offline.
node_lock=$root/clients/node/node_modules/.package-lock.json
if command -v npm >/dev/null && [[ -f $root/clients/node/package-lock.json ]] &&
   [[ ! -f $node_lock || $root/clients/node/package-lock.json -nt $node_lock ]]; then
  echo "setup: installing the Node client's dependencies"
  (cd "$root/clients/node" && npm ci --no-audit --no-fund --loglevel=error)
fi
# buf (lint and breaking-change check of the gRPC contract) comes from npm too (tools/).
if command -v npm >/dev/null && [[ -f $root/tools/package-lock.json ]] &&
   [[ ! -x $root/tools/node_modules/.bin/buf ]]; then
  echo "setup: installing buf"
  (cd "$root/tools" && npm ci --no-audit --no-fund --loglevel=error)
fi
