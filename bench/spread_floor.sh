#!/usr/bin/env bash
# bench/spread_floor.sh: the floor under the "many channels" goal. The same 128 B requests, 16 in
# flight, between two bare epoll processes (tcp-direct spread / spread-serve, each side echoing
# bytes, no relay, no framing) over 1 connection (requests made in one turn written together, as
# a relay writes rr-conc's 16 requests to its one responder), over 16 connections (rr-conc's
# requester side) and over 1,000 (a request alone on its connection at each end, as across
# 1,000 channels); interleaved in each run. Prints each run's JSON line and a table of medians:
# req/s and the CPU each side spends per request.
#
# Usage: bench/spread_floor.sh [--runs N] [--n REQUESTS] [--conns "1 16 1000"]
# Env: SB_BUILD_DIR (default build/release; tcp-direct must exist there).
# Only 127.0.0.1 is ever targeted; every process is bounded in time and ended on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=spread_floor.sh
RUNS=3 N=200000 CONNS="1 16 1000"
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift ;;
    --n) N=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "$SCRIPT: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
BUILD=${SB_BUILD_DIR:-$ROOT/build/release}
TCP=$BUILD/bench/tcp-direct
[[ -x $TCP ]] || { echo "$SCRIPT: missing $TCP (build the release preset)" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_scratch
ulimit -n "$(ulimit -Hn)"

RAW=$TMP/spread.jsonl
FAILED=0
for ((r = 1; r <= RUNS; r++)); do
  for conns in $CONNS; do
    start_bg serve "$TCP" spread-serve --seconds 120
    serve=$BG_PID
    wait_file "$TMP/serve.out" '^listening'
    port=$(awk '/^listening/{print $2}' "$TMP/serve.out")
    line=$(timeout -k 5 120 "$TCP" spread --port "$port" --conns "$conns" --inflight 16 --n "$N" \
      --warmup $((N / 20)) --server-pid "$serve" --seconds 110 | tail -n 1) || true
    kill "$serve" 2>/dev/null || true
    wait "$serve" 2>/dev/null || true
    [[ $line == \{* ]] || { echo "$SCRIPT: run $r, $conns connections failed" >&2; FAILED=$((FAILED + 1)); continue; }
    echo "${line%\}},\"run\":$r}" | tee -a "$RAW"
  done
done

python3 - "$RAW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| connections, 16 in flight | req/s | client CPU µs/request | server CPU µs/request |")
print("|---|---|---|---|")
for conns in sorted({r["conns"] for r in rows}):
    mine = [r for r in rows if r["conns"] == conns]
    def cell(key, fmt):
        values = [r[key] for r in mine]
        return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"
    print(f"| {conns:,} | {cell('rps', lambda v: f'{v:,.0f}')} | "
          f"{cell('client_cpu_us_per_req', lambda v: f'{v:.2f}')} | "
          f"{cell('server_cpu_us_per_req', lambda v: f'{v:.2f}')} |")
PY
((FAILED == 0)) || { echo "$SCRIPT: $FAILED runs failed" >&2; exit 1; }
