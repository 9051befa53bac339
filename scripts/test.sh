#!/usr/bin/env bash
# Sets up what is missing, builds everything with warnings as errors (GCC, then Clang), and runs
# the whole test suite. Extra arguments go to ctest (e.g. -L unit).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
# Paths relative to the checkout, so any clone of the project shares the compiler cache.
export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
start=$(date +%s)
cmake --preset ci >/dev/null
cmake --build --preset ci
echo "build (gcc): $(( $(date +%s) - start )) s"
if [[ ${SWITCHBOARD_SKIP_CLANG:-0} != 1 ]]; then
  start=$(date +%s)
  cmake --preset clang >/dev/null
  cmake --build --preset clang
  echo "build (clang): $(( $(date +%s) - start )) s"
fi
ctest --preset ci "$@"
