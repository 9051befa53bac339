#!/usr/bin/env bash
# Sets up what is missing, builds the release programs, and runs the relay on 127.0.0.1:7400.
# Extra arguments go to switchboard-server (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target switchboard-server switchboard
exec ./build/release/server/switchboard-server "$@"
