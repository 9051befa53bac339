#!/usr/bin/env bash
# Installs the build into a scratch prefix, builds the example consumer against the installed
# CMake package, and runs it against the installed relay.
set -euo pipefail
build_dir=$1
source_dir=$2
scratch=$(mktemp -d)
relay_pid=
cleanup() {
  [[ -n $relay_pid ]] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
  rm -rf "$scratch"
}
trap cleanup EXIT

cmake --install "$build_dir" --prefix "$scratch/prefix" >/dev/null
for f in bin/switchboard-server bin/switchboard include/switchboard/client.hpp \
         include/switchboard/blocking.hpp include/switchboard/wire/frame.hpp \
         lib/cmake/switchboard/switchboardConfig.cmake; do
  [[ -e $scratch/prefix/$f ]] || { echo "not installed: $f"; exit 1; }
done
echo "ok - install layout"

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$source_dir/clients/cpp/examples/consumer" -B "$scratch/consumer" -G Ninja \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build "$scratch/consumer" >/dev/null
echo "ok - consumer builds with find_package(switchboard CONFIG)"

"$scratch/prefix/bin/switchboard-server" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-level warn >"$scratch/relay.out" &
relay_pid=$!
port=
for _ in $(seq 1 200); do
  port=$(sed -n 's/^listening core 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$scratch/relay.out")
  [[ -n $port ]] && break
  kill -0 "$relay_pid" 2>/dev/null || { echo "relay exited"; exit 1; }
  sleep 0.05
done
[[ -n $port ]] || { echo "relay did not report its port"; exit 1; }
output=$("$scratch/consumer/consumer" "$port")
[[ $output == "hello, consumer" ]] || { echo "unexpected output: $output"; exit 1; }
echo "ok - consumer talks through the installed relay"
echo "3 passed, 0 failed"
