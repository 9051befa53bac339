#!/usr/bin/env bash
# bench/cluster_bench.sh: the cluster benchmarks: three relays joined over one etcd (127.0.0.1,
# .2, .3) against a relay alone; prints the "Cluster" section and writes it into bench/RESULTS.md
# (raw lines in bench/cluster_results.jsonl).
#
# Usage: bench/cluster_bench.sh [--quick] [--only rr,join,grpc,failover,storm] [--runs N]
#                               [--failover-runs N] [--no-build] [--no-write]
#   --quick      every workload much smaller (smoke run, well under a minute; the CTest
#                cluster_bench_quick runs it with --no-build --no-write)
#   --runs N     cluster-rr and the storm: each system N times, interleaved (default 3)
#   --failover-runs N  kill -9 runs (default 5)
#   --no-write   print the section only; leave bench/RESULTS.md and the raw lines alone
# Env: SB_BUILD_DIR (default build/release, built with the release preset).
# Only 127.0.0.x is ever targeted; every process and loop is bounded in count and time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0 ONLY="" RUNS=3 FAILOVER_RUNS=5 BUILD_STEP=1 WRITE=1
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --failover-runs) FAILOVER_RUNS=$2; shift ;;
    --no-build) BUILD_STEP=0 ;;
    --no-write) WRITE=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "cluster_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
want() { [[ -z $ONLY || ,$ONLY, == *,$1,* ]]; }
log() { echo "[cluster-bench $(date +%H:%M:%S)] $*" >&2; }

# ---- Sizes (full run, or --quick). ----
if ((QUICK)); then
  RUNS=1 FAILOVER_RUNS=1 SPINS="100"
  RR_CHANNELS=30 RR_SECONDS=2 RR_WARMUP_MS=500
  JOIN_N=30 GRPC_N=100 GRPC_WARMUP=20
  FO_CHANNELS=10 STORM_PEERS=600 STORM_CHANNELS=20
else
  SPINS="100 0"
  RR_CHANNELS=300 RR_SECONDS=10 RR_WARMUP_MS=2000
  JOIN_N=300 GRPC_N=2000 GRPC_WARMUP=200
  FO_CHANNELS=100 STORM_PEERS=10000 STORM_CHANNELS=100
fi
LEASE_TTL=3s      # rr, join, grpc, storm: the default TTL (a loaded machine must not fence)
FAILOVER_TTL=1s   # failover: the shortest TTL etcd allows with the timings below

# ---- Packages and build. ----
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if ! installed etcd-server; then
  # The CTest smoke run (--no-build) installs nothing: it is skipped (CTest's SKIP_RETURN_CODE).
  if ((!BUILD_STEP)); then echo "cluster_bench.sh: etcd-server is not installed" >&2; exit 77; fi
  log "installing etcd-server"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends etcd-server >&2
fi
BUILD=${SB_BUILD_DIR:-$ROOT/build/release}
TARGETS=(switchboard-server switchboard-cluster-bench)
if ((BUILD_STEP)); then
  log "building ${TARGETS[*]} in $BUILD"
  if [[ -z ${SB_BUILD_DIR:-} ]]; then
    (cd "$ROOT" && cmake --preset release >/dev/null && cmake --build --preset release --target "${TARGETS[@]}") >&2
  else
    cmake --build "$BUILD" --target "${TARGETS[@]}" >&2
  fi
fi
SERVER=$BUILD/server/switchboard-server
DRIVER=$BUILD/bench/switchboard-cluster-bench
for b in "$SERVER" "$DRIVER"; do
  [[ -x $b ]] || { echo "cluster_bench.sh: missing $b" >&2; exit 1; }
done

# ---- Processes: every background process is recorded and ended on exit. ----
ulimit -n "$(ulimit -Hn)"  # the storm: 10,000 connections in a relay and in the load generator
TMP=$(mktemp -d /tmp/sb-cluster-bench.XXXXXX)
RAW=$TMP/raw.jsonl
: >"$RAW"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bg() {  # start_bg NAME CMD...: in the background, output in $TMP/NAME.{out,err}; sets BG_PID
  local name=$1; shift
  : >"$TMP/$name.out"
  : >"$TMP/$name.err"
  "$@" >>"$TMP/$name.out" 2>>"$TMP/$name.err" &
  BG_PID=$!
  PIDS+=("$BG_PID")
}
wait_line() {  # wait_line FILE REGEX: at most 20 s
  for _ in $(seq 2000); do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    sleep 0.01
  done
  echo "cluster_bench.sh: $1 never showed '$2':" >&2; tail -n 20 "${1%.*}.err" >&2 || true
  return 1
}
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 250); do kill -0 "$1" 2>/dev/null || break; sleep 0.02; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# etcd with a 50 ms heartbeat and a 500 ms election timeout, so that a 1 s lease works.
start_etcd() {
  local client peer
  client=$(free_port) peer=$(free_port)
  ETCD_URL=http://127.0.0.1:$client
  start_bg etcd etcd --name bench --data-dir "$TMP/etcd" --listen-client-urls "$ETCD_URL" \
    --advertise-client-urls "$ETCD_URL" --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "bench=http://127.0.0.1:$peer" \
    --heartbeat-interval 50 --election-timeout 500
  ETCD_PID=$BG_PID
  wait_line "$TMP/etcd.err" 'ready to serve client requests'
}

# start_relays COUNT TTL: relays r1..rCOUNT on 127.0.0.1..COUNT, one I/O thread each; COUNT 1
# with TTL "alone" is a relay without etcd. Each cluster gets its own etcd prefix, so that nothing
# of an earlier one (claims of a killed relay) is seen. Sets IDS HOSTS PORTS GPORTS RPIDS ADMINS.
CLUSTER_SEQ=0
RELAY_EXTRA=()
start_relays() {
  local count=$1 ttl=$2 n cluster=()
  IDS=() HOSTS=() PORTS=() GPORTS=() RPIDS=() ADMINS=()
  CLUSTER_SEQ=$((CLUSTER_SEQ + 1))
  for ((n = 1; n <= count; n++)); do
    if [[ $ttl != alone ]]; then
      cluster=(--cluster-etcd "$ETCD_URL" --node-id "r$n" --cluster-lease-ttl "$ttl"
               --cluster-prefix "/bench$CLUSTER_SEQ")
    fi
    start_bg "relay$n" "$SERVER" --listen "127.0.0.$n:0" --grpc-listen "127.0.0.$n:0" \
      --admin-listen 127.0.0.1:0 --threads 1 --log-level warn --drain-timeout-ms 1000 \
      --connect-rate-per-address 0 "${cluster[@]}" "${RELAY_EXTRA[@]}"
    RPIDS+=("$BG_PID")
    wait_line "$TMP/relay$n.out" '^listening admin'
    IDS+=("r$n") HOSTS+=("127.0.0.$n")
    PORTS+=("$(sed -n 's/^listening core [0-9.]*:\([0-9]*\).*/\1/p' "$TMP/relay$n.out")")
    GPORTS+=("$(sed -n 's/^listening grpc [0-9.]*:\([0-9]*\).*/\1/p' "$TMP/relay$n.out")")
    ADMINS+=("$(sed -n 's/^listening admin [0-9.]*:\([0-9]*\).*/\1/p' "$TMP/relay$n.out")")
  done
  # Every relay sees the whole membership before any load (at most 20 s).
  if [[ $ttl != alone ]]; then
    for ((n = 0; n < count; n++)); do
      for i in $(seq 400); do
        if curl -fsS "http://127.0.0.1:${ADMINS[n]}/metrics" 2>/dev/null |
            grep -qE "^switchboard_cluster_members $count(\.0)?$"; then
          break
        fi
        ((i == 400)) && { echo "cluster_bench.sh: r$((n + 1)) never saw $count members" >&2; return 1; }
        sleep 0.05
      done
    done
  fi
}
stop_relays() { for p in "${RPIDS[@]}"; do stop_pid "$p"; done; }
relay_args() {
  local IFS=,
  echo "--ids ${IDS[*]} --hosts ${HOSTS[*]} --ports ${PORTS[*]} --grpc-ports ${GPORTS[*]} --pids ${RPIDS[*]}"
}

# drive RUN CMD...: runs the driver (bounded by timeout); keeps every JSON line it prints, with
# the run number; a run that prints none is recorded as an error and the bench goes on.
drive() {
  local run=$1 rc=0 lines; shift
  lines=$(timeout -k 5 200 "$@" 2>"$TMP/driver.err") || rc=$?
  lines=$(grep '^{' <<<"$lines" || true)
  if [[ -z $lines ]]; then
    log "$2 FAILED (exit $rc): $(tail -n 3 "$TMP/driver.err" | tr '\n' ' ')"
    lines="{\"workload\":\"cluster-$2\",\"system\":\"?\",\"error\":\"exit $rc\"}"
  fi
  while IFS= read -r line; do
    line="${line%\}},\"run\":$run}"
    echo "$line" >>"$RAW"
    log "$line"
  done <<<"$lines"
}

# ---- Workloads. ----
# The same load on a relay alone, on a cluster of one relay (etcd membership and claims, no
# second relay), on three independent relays without etcd that the load generator splits the
# channels over (the same processes as the cluster, without it) and on three relays,
# interleaved; with the relays' default idle polling (100 µs after the last event, as shipped)
# and without it (--idle-spin-us 0: CPU time is then work and wake-ups, not polling while waiting).
run_rr() {
  local r spin system count ttl extra
  for ((r = 1; r <= RUNS; r++)); do
    for spin in $SPINS; do
      RELAY_EXTRA=(--idle-spin-us "$spin")
      for system in 1-relay 1-relay-cluster 3-relays-apart 3-relays; do
        case $system in
          1-relay) count=1 ttl=alone extra=() ;;
          1-relay-cluster) count=1 ttl=$LEASE_TTL extra=(--etcd-pid "$ETCD_PID") ;;
          3-relays-apart) count=3 ttl=alone extra=(--direct) ;;
          3-relays) count=3 ttl=$LEASE_TTL extra=(--etcd-pid "$ETCD_PID") ;;
        esac
        start_relays "$count" "$ttl"
        # shellcheck disable=SC2046
        drive "$r" "$DRIVER" rr $(relay_args) --system "$system" --spin-us "$spin" \
          --channels "$RR_CHANNELS" --seconds "$RR_SECONDS" --warmup-ms "$RR_WARMUP_MS" \
          "${extra[@]}" --timeout 120
        stop_relays
      done
    done
  done
  RELAY_EXTRA=()
}
run_join() {
  start_relays 1 alone
  # shellcheck disable=SC2046
  drive 1 "$DRIVER" join $(relay_args) --system 1-relay --n "$JOIN_N" --timeout 120
  stop_relays
  start_relays 3 "$LEASE_TTL"
  # shellcheck disable=SC2046
  drive 1 "$DRIVER" join $(relay_args) --system 3-relays --n "$JOIN_N" --timeout 120
  stop_relays
}
run_grpc() {
  start_relays 3 "$LEASE_TTL"
  # shellcheck disable=SC2046
  drive 1 "$DRIVER" grpc $(relay_args) --system 3-relays --n "$GRPC_N" --warmup "$GRPC_WARMUP" \
    --timeout 120
  stop_relays
}
run_failover() {
  local r
  for ((r = 1; r <= FAILOVER_RUNS; r++)); do
    start_relays 3 "$FAILOVER_TTL"
    # The driver kills r1 itself (SIGKILL) at the moment it measures from.
    # shellcheck disable=SC2046
    drive "$r" "$DRIVER" failover $(relay_args) --system 3-relays --kill-index 0 \
      --channels "$FO_CHANNELS" --per-channel 3 --ttl-ms 1000 --timeout 90
    stop_relays
  done
}
run_storm() {
  local r
  for ((r = 1; r <= RUNS; r++)); do
    start_relays 1 alone
    # shellcheck disable=SC2046
    drive "$r" "$DRIVER" storm $(relay_args) --system 1-relay --peers "$STORM_PEERS" \
      --channels "$STORM_CHANNELS" --timeout 150
    stop_relays
    start_relays 3 "$LEASE_TTL"
    # shellcheck disable=SC2046
    drive "$r" "$DRIVER" storm $(relay_args) --system 3-relays --peers "$STORM_PEERS" \
      --channels "$STORM_CHANNELS" --timeout 150
    stop_relays
  done
}

# ---- Main. ----
SOURCE=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- core cluster server native grpc_gateway clients 2>/dev/null) ]]; then
  SOURCE+=" + uncommitted changes"
fi
START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
start_etcd
for w in rr join grpc failover storm; do
  if want "$w"; then log "$w"; "run_$w"; fi
done
stop_pid "$ETCD_PID"
ELAPSED=$(( $(date +%s) - START ))

report_args=(--raw "$RAW" --elapsed "$ELAPSED" --load "$LOAD_BEFORE"
             --load-end "$(cut -d' ' -f1-3 /proc/loadavg)" --source "$SOURCE")
((QUICK)) && report_args+=(--quick)
if ((WRITE)); then
  report_args+=(--markdown "$ROOT/bench/RESULTS.md")
  cp "$RAW" "$ROOT/bench/cluster_results.jsonl"
fi
/usr/bin/python3 "$ROOT/bench/cluster_report.py" "${report_args[@]}"
log "done in ${ELAPSED}s"
# A smoke run fails when a workload failed.
if grep -q '"error"' "$RAW"; then exit 1; fi
