#!/usr/bin/env bash
# Installs every Debian package Switchboard needs to build, test and run. Idempotent.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache clang clang-format clang-tidy
  libboost1.81-dev libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev
  protobuf-compiler grpc-proto libgtest-dev libgmock-dev libbenchmark-dev libspdlog-dev
  libfmt-dev libcli11-dev libtomlplusplus-dev libclang-rt-14-dev python3 python3-grpcio
  python3-protobuf libssl-dev openssl coreutils procps
)

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

# The Node client and the interop tests need @grpc/grpc-js from the npm registry (lockfile pinned).
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
  fi
fi
if command -v npm >/dev/null && [[ -f $root/clients/node/package-lock.json ]] &&
   [[ ! -d $root/clients/node/node_modules/@grpc/grpc-js ]]; then
  echo "setup: installing the Node client's dependencies"
  (cd "$root/clients/node" && npm ci --no-audit --no-fund --loglevel=error)
fi
