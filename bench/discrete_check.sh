#!/usr/bin/env bash
# Short correctness run of the discrete workload (ctest label bench): one relay on an ephemeral
# loopback port, both client APIs, broadcast and request modes, small and 64 KiB messages; fails
# unless every message and byte arrived. Figures are printed, not asserted.
#
# usage: bench/discrete_check.sh   (env: SB_BUILD_DIR, default build/ci; builds nothing)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SB_BUILD_DIR:-$ROOT/build/ci}
SERVER=$BUILD/server/switchboard-server SB=$BUILD/bench/switchboard-bench
for b in "$SERVER" "$SB"; do
  [[ -x $b ]] || { echo "discrete_check.sh: missing $b" >&2; exit 1; }
done
GRPC_FLAG=()
"$SERVER" --help 2>/dev/null | grep -q -- --grpc-listen && GRPC_FLAG=(--grpc-listen "")

SCRIPT=discrete_check.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_scratch

start_bg relay "$SERVER" --listen 127.0.0.1:0 "${GRPC_FLAG[@]}" --threads 2 --log-level warn \
  --drain-timeout-ms 1000 --connect-rate-per-address 0 --admin-listen 127.0.0.1:0
RELAY_PID=$BG_PID
wait_line relay '^listening core'
PORT=$(sed -n 's/^listening core 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/relay.out")

field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" <<<"$1" | head -n 1; }

FAILED=0
# check API MODE SIZE N: one discrete run on a fresh channel with its own receiver or responder.
check() {
  local api=$1 mode=$2 size=$3 n=$4 ch peer line rc=0 role
  ch=$(uuid)
  if [[ $mode == request ]]; then
    role=(responder --reply-size 16)
  else
    role=(receiver --expect-msgs "$n" --idle-report-ms 2000)
  fi
  start_bg peer "$SB" "${role[@]}" --port "$PORT" --channel "$ch" --timeout 60
  peer=$BG_PID
  wait_line peer '^ready'
  line=$(timeout -k 5 60 "$SB" discrete --port "$PORT" --channel "$ch" --api "$api" --mode "$mode" \
    --size "$size" --n "$n" --inflight 8 --relay-pid "$RELAY_PID" --timeout 45 \
    2>"$TMP/driver.err" | tail -n 1) || rc=$?
  stop_pid "$peer"
  local got bytes failed want_bytes=$((size * n))
  got=$(field "$line" received) bytes=$(field "$line" received_bytes) failed=$(field "$line" failed)
  if ((rc != 0)) || [[ $got != "$n" || $bytes != "$want_bytes" || $failed != 0 ]]; then
    echo "FAIL $api $mode ${size} B x $n: exit $rc, received ${got:-?} msgs ${bytes:-?} B" \
      "(want $n, $want_bytes), failed ${failed:-?}; $(tail -n 3 "$TMP/driver.err" | tr '\n' ' ')"
    FAILED=1
    return
  fi
  echo "ok   $api $mode ${size} B x $n: $(field "$line" msgs_s) msg/s, $(field "$line" mb_s) MB/s"
}

for api in async blocking; do
  for mode in broadcast request; do
    check "$api" "$mode" 16 5000
    check "$api" "$mode" 65536 256
  done
done
# Whole messages (broadcasts only): small ones, and the largest the relay's default frame takes.
check message broadcast 16 20000
check message broadcast 65516 256
kill -0 "$RELAY_PID" 2>/dev/null || { echo "FAIL relay exited"; FAILED=1; }
stop_pid "$RELAY_PID"
exit "$FAILED"
