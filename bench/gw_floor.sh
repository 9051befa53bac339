#!/usr/bin/env bash
# bench/gw_floor.sh: gw-rr's relay rows beside the baselines that take the relay apart, all in
# the same minutes. 128 B ping-pong (gw-bench rr) against: the direct gRPC server on gRPC's sync
# API and on its callback API (the relay's), the direct server whose echo first goes round a TCP
# echo peer (a gRPC leg plus a byte leg, no hand-off), the direct server behind one and behind
# three byte proxies (a thread crossing per proxy each way, as the gRPC door's HTTP/2 guard
# adds), the echoing server behind a proxy, the direct server whose echo first goes round a
# second direct server over gRPC on the call's own thread (two gRPC legs, no hand-off: the
# floor of gRPC -> relay -> gRPC), the same with a byte proxy in front of each leg (what the
# door's guard adds on each side), and the trivial gRPC forwarder; then the relay's
# Requests stream to a native responder and to a gRPC Respond peer. Prints one line of p50s (µs)
# per round and the medians.
#
# Usage: bench/gw_floor.sh [--runs N] [--n REQUESTS] [-- EXTRA RELAY FLAGS...]
# Env: SB_BUILD_DIR (default build/release; the binaries must exist there).
# Only 127.0.0.1 is ever targeted; every process is bounded in time and ended on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=gw_floor.sh
RUNS=3 N=5000 EXTRA=()
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift ;;
    --n) N=$2; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "$SCRIPT: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
BUILD=${SB_BUILD_DIR:-$ROOT/build/release}
SERVER=$BUILD/server/switchboard-server SB=$BUILD/bench/switchboard-bench GW=$BUILD/bench/gw-bench
for b in "$SERVER" "$SB" "$GW"; do
  [[ -x $b ]] || { echo "$SCRIPT: missing $b" >&2; exit 1; }
done
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_scratch

port_of() { sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/$1.out"; }
serve() {  # serve NAME GW-BENCH-ARGS...: starts a gw-bench server, waits for its port
  local name=$1
  shift
  start_bg "$name" "$GW" "$@" --timeout 600
  wait_line "$name" '^listening'
}
p50() {  # p50 PORT MODE [CHANNEL]
  "$GW" rr --port "$1" --mode "$2" ${3:+--channel "$3"} --n "$N" --warmup 500 --size 128 \
    --timeout 120 | sed -n 's/.*"p50_us":\([0-9.]*\).*/\1/p'
}
relay_row() {  # relay_row native|grpc: p50 through one Requests stream of a fresh relay
  local relay responder ch core grpc
  start_bg relay "$SERVER" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --threads 2 \
    --log-level warn --admin-listen 127.0.0.1:0 --connect-rate-per-address 0 "${EXTRA[@]}"
  relay=$BG_PID
  wait_line relay '^listening grpc' >&2
  core=$(sed -n 's/^listening core 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/relay.out")
  grpc=$(sed -n 's/^listening grpc 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/relay.out")
  ch=$(uuid)
  if [[ $1 == native ]]; then
    start_bg responder "$SB" responder --port "$core" --channel "$ch" --timeout 300
  else
    start_bg responder "$GW" respond --port "$grpc" --channel "$ch" --timeout 300
  fi
  responder=$BG_PID
  wait_line responder '^ready' 30 >&2
  p50 "$grpc" mux "$ch"
  stop_pid "$responder"
  stop_pid "$relay"
}

NAMES=(direct direct-callback direct+echo direct-proxy direct-3proxies echo-proxy two-legs
  two-legs-2proxies forwarder relay-native relay-grpc)
declare -A ALL
for ((r = 1; r <= RUNS; r++)); do
  serve direct serve-direct
  serve callback serve-direct --api callback
  serve echo serve-echo
  serve echoing serve-direct --echo-port "$(port_of echo)"
  serve proxy serve-proxy --port "$(port_of direct)"
  serve chain1 serve-proxy --port "$(port_of direct)"
  serve chain2 serve-proxy --port "$(port_of chain1)"
  serve chain3 serve-proxy --port "$(port_of chain2)"
  serve echoproxy serve-proxy --port "$(port_of echoing)"
  serve twolegs serve-direct --grpc-echo-port "$(port_of direct)"
  serve upproxy serve-proxy --port "$(port_of direct)"
  serve twolegsg serve-direct --grpc-echo-port "$(port_of upproxy)"
  serve downproxy serve-proxy --port "$(port_of twolegsg)"
  serve forward serve-forward --port "$(port_of direct)"
  row=(
    "$(p50 "$(port_of direct)" pingpong)" "$(p50 "$(port_of callback)" pingpong)"
    "$(p50 "$(port_of echoing)" pingpong)" "$(p50 "$(port_of proxy)" pingpong)"
    "$(p50 "$(port_of chain3)" pingpong)" "$(p50 "$(port_of echoproxy)" pingpong)"
    "$(p50 "$(port_of twolegs)" pingpong)" "$(p50 "$(port_of downproxy)" pingpong)"
    "$(p50 "$(port_of forward)" pingpong)"
  )
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  PIDS=()
  row+=("$(relay_row native)" "$(relay_row grpc)")
  line="run $r:"
  for i in "${!NAMES[@]}"; do
    line+=" ${NAMES[$i]} ${row[$i]:-?}"
    ALL[${NAMES[$i]}]+="${row[$i]:-} "
  done
  echo "$line"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "?"}'; }
line="median:"
for name in "${NAMES[@]}"; do line+=" $name $(echo "${ALL[$name]}" | median)"; done
echo "$line"
