#!/usr/bin/env bash
# Sets up what is missing, builds everything with warnings as errors (GCC, then Clang), runs the
# whole test suite, then the sanitizer stages: the whole suite under ASan+UBSan, the core and
# gateway tests under TSan, and a bounded run of every libFuzzer target. Extra arguments go to
# the main ctest run (e.g. -L unit). Prints each stage's wall time.
#
# Local shortcuts (CI runs everything): SWITCHBOARD_SKIP_CLANG=1, SWITCHBOARD_SKIP_SANITIZERS=1
# (ASan and TSan), SWITCHBOARD_SKIP_FUZZ=1.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
# Paths relative to the checkout, so any clone of the project shares the compiler cache.
export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1

timings=()
stage() {
  local name=$1 start
  shift
  start=$(date +%s)
  "$@"
  timings+=("$(printf '%-16s %5d s' "$name:" $(($(date +%s) - start)))")
  echo "${timings[-1]}"
}
summary() {
  echo "---- stage wall times ----"
  ((${#timings[@]})) && printf '%s\n' "${timings[@]}"
}
trap summary EXIT

configure_and_build() {
  cmake --preset "$1" >/dev/null
  cmake --build --preset "$1"
}

stage "build (gcc)" configure_and_build ci
# The ASan build is Clang with warnings as errors over the same targets as the clang preset, so
# a separate Clang build only runs when the sanitizer stages do not.
if [[ ${SWITCHBOARD_SKIP_CLANG:-0} != 1 && ${SWITCHBOARD_SKIP_SANITIZERS:-0} == 1 ]]; then
  stage "build (clang)" configure_and_build clang
fi
stage "tests (gcc)" ctest --preset ci "$@"

if [[ ${SWITCHBOARD_SKIP_SANITIZERS:-0} != 1 ]]; then
  stage "build (asan)" configure_and_build asan
  stage "tests (asan)" ctest --preset asan
  stage "build (tsan)" configure_and_build tsan
  stage "tests (tsan)" ctest --preset tsan
fi
if [[ ${SWITCHBOARD_SKIP_FUZZ:-0} != 1 ]]; then
  stage "build (fuzz)" configure_and_build fuzz
  stage "tests (fuzz)" ctest --preset fuzz
fi
