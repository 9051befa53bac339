#!/usr/bin/env bash
# bench/cores.sh: the relay's I/O thread count against its throughput. rr-conc and fanout (the
# sizes bench/run.sh uses) against a relay with --threads 1 and --threads 2, and a third
# configuration, --threads 2 --placement round_robin (one channel's connections spread over
# both threads); then rr-conc on two channels at once (two requester processes, two responders;
# the channels chosen to hash to different threads), which is what a second thread can help.
# The configurations are interleaved within each run. Prints one JSON line per measurement and
# a summary: medians, the ratios to --threads 1 of the same run, relay CPU per request/message
# (utime + stime from /proc/PID/stat) and the share of the relay's CPU taken by its busiest
# thread (/proc/PID/task/*/stat).
#
# Usage: bench/cores.sh [--runs N] [--quick] [--configs t1,t2,t2rr] [--no-two-channels]
#   --quick   rr-conc 20,000 requests, fanout 32 MiB (smoke run)
# Env: SB_BUILD_DIR (default build/ci; the binaries are built there if missing).
# Only 127.0.0.1 is ever targeted; every process is bounded in time and ended on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=3 QUICK=0 CONFIGS=t1,t2,t2rr TWO=1
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift ;;
    --quick) QUICK=1 ;;
    --configs) CONFIGS=$2; shift ;;
    --no-two-channels) TWO=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "cores.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if ((QUICK)); then CONC_N=20000 FAN_BYTES=32M; else CONC_N=200000 FAN_BYTES=256M; fi
FAN_BYTES_N=$(numfmt --from=iec "$FAN_BYTES")

BUILD=${SB_BUILD_DIR:-$ROOT/build/ci}
SERVER=$BUILD/server/switchboard-server SB=$BUILD/bench/switchboard-bench
if [[ ! -x $SERVER || ! -x $SB ]]; then
  cmake --build "$BUILD" --target switchboard-server switchboard-bench >&2
fi
ulimit -n "$(ulimit -Hn)"
SCRIPT=cores.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_scratch
log() { echo "[cores $(date +%H:%M:%S)] $*" >&2; }

threads_cpu() {  # one line per thread of PID: TID and its CPU ticks so far
  local f
  for f in /proc/"$1"/task/*/stat; do
    awk '{tid = $1; sub(/.*\) /, ""); print tid, $12 + $13}' "$f" 2>/dev/null || true
  done
}
# busiest_share BEFORE AFTER: the busiest thread's share of the CPU the relay's threads used
# between the two snapshots, and how many threads used more than 5% of it.
busiest_share() {
  awk 'NR == FNR {before[$1] = $2; next} {d = $2 - before[$1]; total += d; if (d > max) max = d;
       delta[$1] = d}
       END {busy = 0; for (t in delta) if (total > 0 && delta[t] > 0.05 * total) busy++;
            printf "%.3f %d", (total > 0 ? max / total : 0), busy}' "$1" "$2"
}
# uuid_on_thread K N: a channel id that the relay's "channel" placement puts on thread K of N
# (native_door.cpp: bytes 8..15 of the id, big-endian, modulo the thread count).
uuid_on_thread() {
  local id
  for _ in $(seq 1000); do
    id=$(uuid)
    if (($(/usr/bin/python3 -c "import uuid,sys; print(int.from_bytes(uuid.UUID(sys.argv[1]).bytes[8:], 'big') % $2)" "$id") == $1)); then
      echo "$id"; return 0
    fi
  done
  return 1
}

start_relay() {  # start_relay CONFIG: as bench/run.sh starts it, with the config's threads
  local flags=()
  case "$1" in
    t1) flags=(--threads 1) ;;
    t2) flags=(--threads 2) ;;
    t2rr) flags=(--threads 2 --placement round_robin) ;;
    *) echo "cores.sh: unknown config $1" >&2; exit 2 ;;
  esac
  start_bg relay "$SERVER" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 "${flags[@]}" \
    --log-level warn --drain-timeout-ms 1000 --connect-rate-per-address 0 --admin-listen 127.0.0.1:0
  RELAY_PID=$BG_PID
  wait_line relay '^listening core'
  RELAY_PORT=$(sed -n 's/^listening core 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/relay.out")
}

# measure_begin / measure_end WORKLOAD CONFIG RUN UNITS JSON_LINE PROCS...: the relay's CPU and
# per-thread CPU over the driver's run, the other processes' CPU (the load generator), appended
# to the driver's JSON line.
measure_begin() {
  RELAY_CPU0=$(cpu_us "$RELAY_PID")
  threads_cpu "$RELAY_PID" >"$TMP/threads0"
  CLIENT_CPU0=0
  local p
  for p in "$@"; do CLIENT_CPU0=$(awk -v a="$CLIENT_CPU0" -v b="$(cpu_us "$p")" 'BEGIN {print a + b}'); done
}
measure_end() {  # measure_end UNITS DRIVER_CPU_US PROCS...: sets EXTRA
  local units=$1 driver=$2; shift 2
  local relay1 client1=0 p share
  relay1=$(cpu_us "$RELAY_PID")
  threads_cpu "$RELAY_PID" >"$TMP/threads1"
  for p in "$@"; do client1=$(awk -v a="$client1" -v b="$(cpu_us "$p")" 'BEGIN {print a + b}'); done
  read -r share busy <<<"$(busiest_share "$TMP/threads0" "$TMP/threads1")"
  EXTRA=$(awk -v r0="$RELAY_CPU0" -v r1="$relay1" -v c0="$CLIENT_CPU0" -v c1="$client1" \
    -v d="$driver" -v u="$units" -v s="$share" -v b="$busy" 'BEGIN {
      printf ",\"relay_cpu_s\":%.3f,\"relay_cpu_us_per_unit\":%.3f,\"loadgen_cpu_us_per_unit\":%.3f,\"busiest_thread_share\":%s,\"busy_threads\":%d",
        (r1 - r0) / 1e6, (r1 - r0) / u, (c1 - c0 + d) / u, s, b }')
}
# run_driver OUT CMD...: runs a driver (at most 240 s), its stdout to OUT; sets DRIVER_CPU_US.
run_driver() {
  local out=$1; shift
  TIMEFORMAT='%3U %3S'
  { time timeout -k 5 240 "$@" >"$out" 2>"$out.err"; } 2>"$TMP/driver.time" || true
  DRIVER_CPU_US=$(awk '{printf "%.0f", ($1 + $2) * 1e6}' "$TMP/driver.time")
}
record() {  # record WORKLOAD CONFIG RUN DRIVER_OUT: the driver's last JSON line plus EXTRA
  local line
  line=$(tail -n 1 "$4")
  if [[ $line != \{* ]] || [[ $line == *'"error"'* ]]; then
    log "$1/$2 run $3 FAILED: $(tail -n 3 "$4.err" | tr '\n' ' ')"
    line="{\"workload\":\"$1\",\"error\":true"
  else
    line=${line%\}}
  fi
  line+=",\"config\":\"$2\",\"run\":$3$EXTRA}"
  echo "$line" | tee -a "$RESULTS"
}

run_rr_conc() {  # rr-conc as bench/run.sh: 16 requesters, 1 responder, CONC_N after 5% warm-up
  local cfg=$1 r=$2 ch resp
  start_relay "$cfg"; ch=$(uuid)
  start_bg resp "$SB" responder --port "$RELAY_PORT" --channel "$ch" --timeout 200; resp=$BG_PID
  wait_line resp '^ready'
  measure_begin "$resp"
  run_driver "$TMP/rr.out" "$SB" rr-conc --port "$RELAY_PORT" --channel "$ch" --n "$CONC_N" --timeout 200
  measure_end $((CONC_N + CONC_N / 20)) "$DRIVER_CPU_US" "$resp"
  record rr-conc "$cfg" "$r" "$TMP/rr.out"
  stop_pid "$resp"; stop_pid "$RELAY_PID"
}

run_fanout() {  # fanout as bench/run.sh: one broadcast of FAN_BYTES in 64 KiB writes to 8
  local cfg=$1 r=$2 ch recv
  start_relay "$cfg"; ch=$(uuid)
  # The receivers' process ends by itself once it has reported, so its CPU is taken by
  # /usr/bin/time over its whole life (the joins included) rather than from /proc.
  start_bg recv /usr/bin/time -f "%U %S" -o "$TMP/recv.time" "$SB" receiver --port "$RELAY_PORT" \
    --channel "$ch" --connections 8 --expect-msgs 1 --timeout 200
  recv=$BG_PID
  wait_line recv '^ready'
  measure_begin
  run_driver "$TMP/fan.out" "$SB" fanout --port "$RELAY_PORT" --channel "$ch" --receivers 8 --bytes "$FAN_BYTES"
  for _ in $(seq 500); do kill -0 "$recv" 2>/dev/null || break; sleep 0.02; done
  wait "$recv" 2>/dev/null || true
  local recv_us=0
  [[ -s $TMP/recv.time ]] && recv_us=$(awk 'END {printf "%.0f", ($1 + $2) * 1e6}' "$TMP/recv.time")
  # The unit is one 64 KiB frame delivered to one receiver.
  measure_end $((FAN_BYTES_N / 65536 * 8)) $((DRIVER_CPU_US + recv_us))
  record fanout "$cfg" "$r" "$TMP/fan.out"
  stop_pid "$recv"; stop_pid "$RELAY_PID"
}

# rr-conc on two channels at once, each with its own responder and requester process (16
# requesters each, CONC_N / 2 requests each), the channels on different threads of a
# two-thread relay. req/s = the sum of the two drivers' rates.
run_rr_two() {
  local cfg=$1 r=$2 ch0 ch1 resp0 resp1 d0 d1
  start_relay "$cfg"; ch0=$(uuid_on_thread 0 2); ch1=$(uuid_on_thread 1 2)
  start_bg resp0 "$SB" responder --port "$RELAY_PORT" --channel "$ch0" --timeout 200; resp0=$BG_PID
  start_bg resp1 "$SB" responder --port "$RELAY_PORT" --channel "$ch1" --timeout 200; resp1=$BG_PID
  wait_line resp0 '^ready'; wait_line resp1 '^ready'
  measure_begin "$resp0" "$resp1"
  TIMEFORMAT='%3U %3S'
  { time timeout -k 5 240 "$SB" rr-conc --port "$RELAY_PORT" --channel "$ch0" --n $((CONC_N / 2)) \
      --timeout 200 >"$TMP/rr0.out" 2>"$TMP/rr0.out.err"; } 2>"$TMP/d0.time" &
  d0=$!
  { time timeout -k 5 240 "$SB" rr-conc --port "$RELAY_PORT" --channel "$ch1" --n $((CONC_N / 2)) \
      --timeout 200 >"$TMP/rr1.out" 2>"$TMP/rr1.out.err"; } 2>"$TMP/d1.time" &
  d1=$!
  wait "$d0" || true; wait "$d1" || true
  local driver
  driver=$(cat "$TMP/d0.time" "$TMP/d1.time" | awk '{s += $1 + $2} END {printf "%.0f", s * 1e6}')
  measure_end $((CONC_N + CONC_N / 20)) "$driver" "$resp0" "$resp1"
  local l0 l1 line
  l0=$(tail -n 1 "$TMP/rr0.out"); l1=$(tail -n 1 "$TMP/rr1.out")
  if [[ $l0 == \{*rps* && $l1 == \{*rps* ]]; then
    line=$(/usr/bin/python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"workload": "rr-conc-2ch", "n": a["n"] + b["n"], "rps": a["rps"] + b["rps"],
                  "p50_us": max(a["p50_us"], b["p50_us"]), "p99_us": max(a["p99_us"], b["p99_us"]),
                  "rps_each": [a["rps"], b["rps"]]}, separators=(",", ":")))' "$l0" "$l1")
    echo "$line" >"$TMP/rr2.out"
  else
    : >"$TMP/rr2.out"; cat "$TMP/rr0.out.err" "$TMP/rr1.out.err" >"$TMP/rr2.out.err"
  fi
  record rr-conc-2ch "$cfg" "$r" "$TMP/rr2.out"
  stop_pid "$resp0"; stop_pid "$resp1"; stop_pid "$RELAY_PID"
}

RESULTS=$TMP/results.jsonl
: >"$RESULTS"
SOURCE=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
log "code $SOURCE, binaries $BUILD, load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
IFS=, read -r -a CFGS <<<"$CONFIGS"
for ((r = 1; r <= RUNS; r++)); do
  for cfg in "${CFGS[@]}"; do
    log "run $r/$RUNS: $cfg rr-conc"; run_rr_conc "$cfg" "$r"
    log "run $r/$RUNS: $cfg fanout"; run_fanout "$cfg" "$r"
    if ((TWO)); then log "run $r/$RUNS: $cfg rr-conc-2ch"; run_rr_two "$cfg" "$r"; fi
  done
done
log "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"

/usr/bin/python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ok = [r for r in rows if "error" not in r]
med = statistics.median
names = {"t1": "--threads 1", "t2": "--threads 2", "t2rr": "--threads 2 --placement round_robin"}
metrics = {
    "rr-conc": [("rps", "req/s", 0), ("p50_us", "p50 µs", 0), ("p99_us", "p99 µs", 0),
                ("relay_cpu_us_per_unit", "relay CPU µs/req", 2),
                ("loadgen_cpu_us_per_unit", "load generator CPU µs/req", 2),
                ("busiest_thread_share", "busiest relay thread's share of relay CPU", 2)],
    "rr-conc-2ch": [("rps", "req/s (sum)", 0), ("p50_us", "p50 µs (worse channel)", 0),
                    ("p99_us", "p99 µs (worse channel)", 0),
                    ("relay_cpu_us_per_unit", "relay CPU µs/req", 2),
                    ("loadgen_cpu_us_per_unit", "load generator CPU µs/req", 2),
                    ("busiest_thread_share", "busiest relay thread's share of relay CPU", 2)],
    "fanout": [("aggregate_mb_s", "aggregate MB/s", 0),
               ("relay_cpu_us_per_unit", "relay CPU µs per 64 KiB frame delivered", 2),
               ("loadgen_cpu_us_per_unit", "load generator CPU µs per frame delivered", 2),
               ("busiest_thread_share", "busiest relay thread's share of relay CPU", 2)],
}
configs = [c for c in ["t1", "t2", "t2rr"] if any(r["config"] == c for r in ok)]
def cell(values, digits):
    if not values:
        return "—"
    fmt = lambda v: f"{v:,.{digits}f}"
    return f"{fmt(med(values))} ({fmt(min(values))}–{fmt(max(values))})"
for workload, wanted in metrics.items():
    mine = [r for r in ok if r["workload"] == workload]
    if not mine:
        continue
    print(f"\n### {workload}\n")
    print("| metric | " + " | ".join(names[c] for c in configs) + " |")
    print("|---|" + "---|" * len(configs))
    for key, label, digits in wanted:
        vals = [cell([r[key] for r in mine if r["config"] == c and key in r], digits) for c in configs]
        print(f"| {label} | " + " | ".join(vals) + " |")
    # Ratios to --threads 1 within each run.
    main = wanted[0][0]
    for c in configs[1:]:
        ratios, cpu = [], []
        for run in sorted({r["run"] for r in mine}):
            base = [r for r in mine if r["run"] == run and r["config"] == "t1"]
            other = [r for r in mine if r["run"] == run and r["config"] == c]
            if base and other:
                ratios.append(other[0][main] / base[0][main])
                cpu.append(other[0]["relay_cpu_us_per_unit"] / base[0]["relay_cpu_us_per_unit"])
        if ratios:
            per = ", ".join(f"{x:.2f}" for x in ratios)
            print(f"\n{workload}: {names[c]} ÷ --threads 1, same run: {main} **{med(ratios):.2f}×** "
                  f"(per run {per}); relay CPU per unit {med(cpu):.2f}× "
                  f"(per run {', '.join(f'{x:.2f}' for x in cpu)})")
failed = [r for r in rows if "error" in r]
if failed:
    print(f"\n{len(failed)} measurement(s) failed: " +
          ", ".join(f"{r['workload']}/{r['config']} run {r['run']}" for r in failed))
EOF
