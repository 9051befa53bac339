#!/usr/bin/env bash
# bench/run.sh: builds and runs the Switchboard benchmarks and their baselines on loopback, each
# workload 3 times; prints a markdown table, writes bench/results.json and bench/RESULTS.md.
#
# Usage: bench/run.sh [--quick] [--runs N]
#                     [--only rr-lat,rr-conc,stream,small,discrete,fanout,conns,join-storm,gw-stream,gw-rr,hotpath]
#                     [--relay-threads N] [--no-grpc] [--no-build] [--no-write]
#   --quick      every workload about 10x smaller (smoke run)
#   --relay-threads N  relay I/O threads (default: nproc, the relay's own default)
#   --no-grpc    start the relay with its gRPC door off (default: on, on a random port, as shipped);
#                the gw-* workloads always turn it on (it is what they measure)
#   --no-write   print the table only; leave bench/RESULTS.md and bench/results.json alone
# Env: SB_BUILD_DIR (default build/release, built with the release preset).
# Only 127.0.0.1 is ever targeted; every process and loop is bounded in count and time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0 RUNS=3 ONLY="" RELAY_THREADS=$(nproc) GRPC=1 BUILD_STEP=1 WRITE=1
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --runs) RUNS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --relay-threads) RELAY_THREADS=$2; shift ;;
    --no-grpc) GRPC=0 ;;
    --no-build) BUILD_STEP=0 ;;
    --no-write) WRITE=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
want() { [[ -z $ONLY || ,$ONLY, == *,$1,* ]]; }
log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }

# ---- Sizes (full run, or --quick at about a tenth). ----
if ((QUICK)); then
  LAT_N=500 LAT_WARM=100 CONC_N=20000 STREAM_BYTES=128M SMALL_N=100000 FAN_BYTES=32M
  CONN_PEERS=1000 CONN_CHANNELS=10 HOT_TIME=0.05 DISC_BIG_N=2048 DISC_SMALL_N=100000
else
  LAT_N=5000 LAT_WARM=500 CONC_N=200000 STREAM_BYTES=1G SMALL_N=1000000 FAN_BYTES=256M
  CONN_PEERS=10000 CONN_CHANNELS=100 HOT_TIME=0.2 DISC_BIG_N=16384 DISC_SMALL_N=1000000
fi
# discrete: whole messages (protocol v3) of the largest body one default 64 KiB frame carries.
DISC_BIG_SIZE=65516
STREAM_MSGS=$(( $(numfmt --from=iec "$STREAM_BYTES") / 65536 ))
FAN_MSGS=$(( $(numfmt --from=iec "$FAN_BYTES") / 65536 ))

# ---- Packages: the toolchain (scripts/setup.sh), nats-server and libnats-dev, only if missing. ----
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if [[ -x $ROOT/scripts/setup.sh ]]; then "$ROOT/scripts/setup.sh" >&2; fi
missing=()
for p in nats-server libnats-dev libbenchmark-dev python3 procps coreutils; do
  installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# ---- Build. ----
BUILD=${SB_BUILD_DIR:-$ROOT/build/release}
TARGETS=(switchboard-server switchboard-bench tcp-forwarder tcp-direct nats-bench hotpath_alloc gw-bench)
if ((BUILD_STEP)); then
  log "building ${TARGETS[*]} in $BUILD"
  if [[ -z ${SB_BUILD_DIR:-} ]]; then
    (cd "$ROOT" && cmake --preset release >/dev/null && cmake --build --preset release --target "${TARGETS[@]}") >&2
  else
    cmake --build "$BUILD" --target "${TARGETS[@]}" >&2
  fi
fi
SERVER=$BUILD/server/switchboard-server
SB=$BUILD/bench/switchboard-bench FWD=$BUILD/bench/tcp-forwarder TCP=$BUILD/bench/tcp-direct
NATS=$BUILD/bench/nats-bench HOT=$BUILD/bench/hotpath_alloc GW=$BUILD/bench/gw-bench
for b in "$SERVER" "$SB" "$FWD" "$TCP" "$NATS" "$HOT" "$GW"; do
  [[ -x $b ]] || { echo "run.sh: missing $b" >&2; exit 1; }
done
GRPC_FLAG=()
if "$SERVER" --help 2>/dev/null | grep -q -- --grpc-listen; then
  if ((GRPC)); then GRPC_FLAG=(--grpc-listen 127.0.0.1:0); else GRPC_FLAG=(--grpc-listen ""); fi
fi

# ---- Processes: every background process is recorded and ended on exit. ----
ulimit -n "$(ulimit -Hn)"  # conns: 10,000 connections in the relay and in the load generator
TMP=$(mktemp -d /tmp/sb-bench.XXXXXX)
RAW=$TMP/raw.jsonl
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg NAME CMD...: runs CMD in the background (stdout to $TMP/NAME.out); sets BG_PID.
start_bg() {
  local name=$1; shift
  : >"$TMP/$name.out"  # truncated now, so no reader sees a previous process's lines
  : >"$TMP/$name.err"
  "$@" >>"$TMP/$name.out" 2>>"$TMP/$name.err" &
  BG_PID=$!
  PIDS+=("$BG_PID")
}
# wait_line NAME REGEX: waits (at most 15 s) until NAME's stdout has a line matching REGEX.
wait_line() {
  for _ in $(seq 1500); do
    grep -qE "$2" "$TMP/$1.out" 2>/dev/null && return 0
    sleep 0.01
  done
  echo "run.sh: $1 never printed '$2'; stderr:" >&2; cat "$TMP/$1.err" >&2 || true
  return 1
}
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$1" 2>/dev/null || break; sleep 0.02; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
proc_kib() {  # proc_kib PID FIELD: a /proc/PID/status field in KiB, 0 if gone
  local v; v=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || true)
  echo "${v:-0}"
}
hwm_kib() { proc_kib "$1" VmHWM; }
rss_kib() { proc_kib "$1" VmRSS; }
uuid() { cat /proc/sys/kernel/random/uuid; }

start_relay() {  # start_relay [EXTRA RELAY FLAGS...]
  # conns joins 10,000 peers from one address; the admin port is ephemeral so that a relay
  # already running on this machine does not stop the run.
  start_bg relay "$SERVER" --listen 127.0.0.1:0 "${GRPC_FLAG[@]}" --threads "$RELAY_THREADS" \
    --log-level warn --drain-timeout-ms 1000 --connect-rate-per-address 0 --admin-listen 127.0.0.1:0 "$@"
  RELAY_PID=$BG_PID
  wait_line relay '^listening core'
  RELAY_PORT=$(sed -n 's/^listening core 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/relay.out")
  GRPC_PORT=""
  if ((${#GRPC_FLAG[@]})) && [[ -n ${GRPC_FLAG[1]} ]]; then
    wait_line relay '^listening grpc'
    GRPC_PORT=$(sed -n 's/^listening grpc 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/relay.out")
  fi
  SERVER_IDLE_KIB=$(rss_kib "$RELAY_PID")
  SERVER_PID=$RELAY_PID
}
start_nats() {
  start_bg nats nats-server -a 127.0.0.1 -p -1
  SERVER_PID=$BG_PID
  for _ in $(seq 1500); do
    grep -q 'Listening for client connections' "$TMP/nats.err" && break
    sleep 0.01
  done
  NATS_URL=nats://127.0.0.1:$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/nats.err")
  SERVER_IDLE_KIB=$(rss_kib "$SERVER_PID")
}
start_forwarder() {
  start_bg forwarder "$FWD" --max-pairs 8 --seconds 300
  SERVER_PID=$BG_PID
  wait_line forwarder '^listening'
  FWD_PORT=$(awk '/^listening/{print $2}' "$TMP/forwarder.out")
  SERVER_IDLE_KIB=$(rss_kib "$SERVER_PID")
}
# start_grpc_direct: the direct gRPC server (no relay), the gw-* baseline; sets DIRECT_GRPC_PORT.
start_grpc_direct() {
  start_bg grpcdirect "$GW" serve-direct --timeout 300
  SERVER_PID=$BG_PID
  wait_line grpcdirect '^listening'
  DIRECT_GRPC_PORT=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/grpcdirect.out")
  SERVER_IDLE_KIB=$(rss_kib "$SERVER_PID")
}
# start_grpc_forward: the trivial gRPC forwarder in front of the direct server started last (two
# gRPC legs and nothing else); sets GRPC_FORWARD_PORT. The caller stops the direct server.
start_grpc_forward() {
  start_bg grpcforward "$GW" serve-forward --port "$DIRECT_GRPC_PORT" --timeout 300
  SERVER_PID=$BG_PID
  wait_line grpcforward '^listening'
  GRPC_FORWARD_PORT=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/grpcforward.out")
  SERVER_IDLE_KIB=$(rss_kib "$SERVER_PID")
}
# stop_server: notes the server's peak RSS (SERVER_HWM_KIB) and ends it.
stop_server() {
  SERVER_HWM_KIB=$(hwm_kib "$SERVER_PID")
  stop_pid "$SERVER_PID"
}

# drive WORKLOAD SYSTEM RUN CMD...: runs a driver (bounded by timeout) and records its JSON line
# with the server's peak RSS; a failure is recorded as an error, and the run goes on.
drive() {
  local workload=$1 system=$2 run=$3; shift 3
  local line rc=0
  line=$(timeout -k 5 240 "$@" 2>"$TMP/driver.err" | tail -n 1) || rc=$?
  stop_server
  if ((${RELABEL:-0})) && [[ $line == \{* ]]; then
    # A baseline driver that prints another workload's name (tcp-direct stream, nats small).
    line=$(sed -e "s/\"workload\":\"[^\"]*\"/\"workload\":\"$workload\"/" \
               -e "s/\"system\":\"[^\"]*\"/\"system\":\"$system\"/" <<<"$line")
  fi
  if [[ $line != \{* ]] || [[ $line == *'"error"'* ]]; then
    log "$workload/$system run $run FAILED (exit $rc): $(tail -n 3 "$TMP/driver.err" | tr '\n' ' ')"
    line="{\"workload\":\"$workload\",\"system\":\"$system\",\"error\":\"exit $rc\"}"
  fi
  line="${line%\}},\"run\":$run"
  if ((${SERVER_HWM_KIB:-0} > 0)); then
    line+=",\"server_hwm_kib\":$SERVER_HWM_KIB,\"server_idle_kib\":${SERVER_IDLE_KIB:-0}"
  fi
  line+="}"
  echo "$line" >>"$RAW"
  log "$workload/$system run $run: $line"
}
stop_roles() { for p in "$@"; do stop_pid "$p"; done; }

# ---- Workloads. ----
run_rr_lat() {
  local r=$1 ch resp serve
  start_relay; ch=$(uuid)
  start_bg resp "$SB" responder --port "$RELAY_PORT" --channel "$ch" --timeout 200; resp=$BG_PID
  wait_line resp '^ready'
  drive rr-lat switchboard "$r" "$SB" rr-lat --port "$RELAY_PORT" --channel "$ch" --n "$LAT_N" --warmup "$LAT_WARM"
  stop_roles "$resp"

  start_forwarder
  start_bg serve "$TCP" serve --connect "$FWD_PORT"; serve=$BG_PID
  wait_line serve '^ready'
  drive rr-lat forwarder "$r" "$TCP" rr-lat --port "$FWD_PORT" --system forwarder --n "$LAT_N" --warmup "$LAT_WARM"
  stop_roles "$serve"

  start_bg serve "$TCP" serve; serve=$BG_PID SERVER_PID=$BG_PID SERVER_IDLE_KIB=0
  wait_line serve '^listening'
  drive rr-lat direct "$r" "$TCP" rr-lat --port "$(awk '/^listening/{print $2}' "$TMP/serve.out")" --system direct --n "$LAT_N" --warmup "$LAT_WARM"

  start_nats
  start_bg resp "$NATS" responder --url "$NATS_URL" --seconds 200; resp=$BG_PID
  wait_line resp '^ready'
  drive rr-lat nats "$r" "$NATS" rr-lat --url "$NATS_URL" --n "$LAT_N" --warmup "$LAT_WARM"
  stop_roles "$resp"
}

run_rr_conc() {
  local r=$1 responders ch p pids
  for responders in 1 2; do
    start_relay; ch=$(uuid); pids=()
    for ((i = 0; i < responders; i++)); do
      start_bg "resp$i" "$SB" responder --port "$RELAY_PORT" --channel "$ch" --timeout 200; pids+=("$BG_PID")
      wait_line "resp$i" '^ready'
    done
    drive "$( ((responders > 1)) && echo rr-conc-any || echo rr-conc)" switchboard "$r" \
      "$SB" rr-conc --port "$RELAY_PORT" --channel "$ch" --n "$CONC_N" --responders "$responders" --timeout 200
    stop_roles "${pids[@]}"

    start_nats; pids=()
    for ((i = 0; i < responders; i++)); do
      start_bg "resp$i" "$NATS" responder --url "$NATS_URL" --queue q --seconds 200; pids+=("$BG_PID")
      wait_line "resp$i" '^ready'
    done
    drive "$( ((responders > 1)) && echo rr-conc-any || echo rr-conc)" nats "$r" \
      "$NATS" rr-conc --url "$NATS_URL" --n "$CONC_N" --responders "$responders" --seconds 200
    stop_roles "${pids[@]}"
  done
}

run_stream() {
  local r=$1 ch resp serve
  start_relay; ch=$(uuid)
  start_bg resp "$SB" responder --port "$RELAY_PORT" --channel "$ch" --timeout 200; resp=$BG_PID
  wait_line resp '^ready'
  drive stream switchboard "$r" "$SB" stream --port "$RELAY_PORT" --channel "$ch" --bytes "$STREAM_BYTES"
  stop_roles "$resp"

  start_forwarder
  start_bg serve "$TCP" serve --connect "$FWD_PORT"; serve=$BG_PID
  wait_line serve '^ready'
  drive stream forwarder "$r" "$TCP" stream --port "$FWD_PORT" --system forwarder --bytes "$STREAM_BYTES"
  stop_roles "$serve"

  start_bg serve "$TCP" serve; serve=$BG_PID SERVER_PID=$BG_PID SERVER_IDLE_KIB=0
  wait_line serve '^listening'
  drive stream direct "$r" "$TCP" stream --port "$(awk '/^listening/{print $2}' "$TMP/serve.out")" --system direct --bytes "$STREAM_BYTES"

  start_nats
  start_bg sub "$NATS" sub --url "$NATS_URL" --subs 1 --expect-msgs "$STREAM_MSGS" --ack-every 32 --seconds 200; resp=$BG_PID
  wait_line sub '^ready'
  drive stream nats "$r" "$NATS" pub --url "$NATS_URL" --workload stream --subs 1 --n "$STREAM_MSGS" --size 65536 --window 128 --asap
  stop_roles "$resp"
}

run_small() {
  local r=$1 ch recv
  # Each broadcast in flight is a stream: the window (1,000 messages; NATS's is 32,768) needs the
  # relay's per-connection stream limit raised from its default of 256.
  start_relay --max-streams-per-connection 1024; ch=$(uuid)
  start_bg recv "$SB" receiver --port "$RELAY_PORT" --channel "$ch" --expect-msgs "$SMALL_N" --timeout 200; recv=$BG_PID
  wait_line recv '^ready'
  drive small switchboard "$r" "$SB" small --port "$RELAY_PORT" --channel "$ch" --n "$SMALL_N" --inflight 1000 --timeout 200
  stop_roles "$recv"

  start_nats
  start_bg sub "$NATS" sub --url "$NATS_URL" --subs 1 --expect-msgs "$SMALL_N" --ack-every 4096 --seconds 200; recv=$BG_PID
  wait_line sub '^ready'
  drive small nats "$r" "$NATS" pub --url "$NATS_URL" --workload small --subs 1 --n "$SMALL_N" --size 16 --window 32768
  stop_roles "$recv"
}

# discrete: one public-API call per message (Connection::publish, whole messages, default options
# and window) to one receiver; 64 KiB-frame messages against the same bytes as one raw stream
# through tcp-forwarder, 16 B messages against nats-server pub/sub as in small.
run_discrete() {
  local r=$1 ch recv serve size n baseline
  for size in 64k 16b; do
    if [[ $size == 64k ]]; then n=$DISC_BIG_N; baseline=forwarder; else n=$DISC_SMALL_N; baseline=nats; fi
    start_relay; ch=$(uuid)
    start_bg recv "$SB" receiver --port "$RELAY_PORT" --channel "$ch" --expect-msgs "$n" --timeout 200; recv=$BG_PID
    wait_line recv '^ready'
    RELABEL=1 drive "discrete-$size" switchboard "$r" "$SB" discrete --port "$RELAY_PORT" --channel "$ch" \
      --n "$n" --size "$([[ $size == 64k ]] && echo "$DISC_BIG_SIZE" || echo 16)" --api message \
      --relay-pid "$RELAY_PID" --timeout 200
    stop_roles "$recv"

    if [[ $baseline == forwarder ]]; then
      start_forwarder
      start_bg serve "$TCP" serve --connect "$FWD_PORT"; serve=$BG_PID
      wait_line serve '^ready'
      RELABEL=1 drive "discrete-$size" forwarder "$r" "$TCP" stream --port "$FWD_PORT" --system forwarder \
        --bytes $((n * DISC_BIG_SIZE))
      stop_roles "$serve"
    else
      start_nats
      start_bg sub "$NATS" sub --url "$NATS_URL" --subs 1 --expect-msgs "$n" --ack-every 4096 --seconds 200; recv=$BG_PID
      wait_line sub '^ready'
      RELABEL=1 drive "discrete-$size" nats "$r" "$NATS" pub --url "$NATS_URL" --workload small --subs 1 \
        --n "$n" --size 16 --window 32768
      stop_roles "$recv"
    fi
  done
}

run_fanout() {
  local r=$1 ch recv
  start_relay; ch=$(uuid)
  start_bg recv "$SB" receiver --port "$RELAY_PORT" --channel "$ch" --connections 8 --expect-msgs 1 --timeout 200; recv=$BG_PID
  wait_line recv '^ready'
  drive fanout switchboard "$r" "$SB" fanout --port "$RELAY_PORT" --channel "$ch" --receivers 8 --bytes "$FAN_BYTES"
  stop_roles "$recv"

  start_nats
  start_bg sub "$NATS" sub --url "$NATS_URL" --subs 8 --expect-msgs "$FAN_MSGS" --ack-every 32 --seconds 200; recv=$BG_PID
  wait_line sub '^ready'
  drive fanout nats "$r" "$NATS" pub --url "$NATS_URL" --workload fanout --subs 8 --n "$FAN_MSGS" --size 65536 --window 128
  stop_roles "$recv"
}

run_conns() {
  local r=$1
  start_relay
  drive conns switchboard "$r" "$SB" conns --port "$RELAY_PORT" --relay-pid "$RELAY_PID" \
    --peers "$CONN_PEERS" --channels "$CONN_CHANNELS" --timeout 200
  start_nats
  drive conns nats "$r" "$NATS" conns --url "$NATS_URL" --server-pid "$SERVER_PID" \
    --peers "$CONN_PEERS" --channels "$CONN_CHANNELS" --seconds 200
}

# join-storm: every peer connects at once (1,024 connects in flight) until each sees its whole
# channel; the NATS baseline is the same client storming nats-server with raw connects. The
# join-storm-raw row is the same storm of the relay from peers on raw sockets (HELLO, then each
# PRESENCE frame applied, no client library), as the NATS storm's are: the client's share.
run_join_storm() {
  local r=$1
  start_relay
  drive join-storm switchboard "$r" "$SB" join-storm --port "$RELAY_PORT" --relay-pid "$RELAY_PID" \
    --peers "$CONN_PEERS" --channels "$CONN_CHANNELS" --concurrency 1024 --timeout 200
  start_relay
  RELABEL=1 drive join-storm-raw switchboard "$r" "$SB" join-storm --port "$RELAY_PORT" \
    --relay-pid "$RELAY_PID" --peers "$CONN_PEERS" --channels "$CONN_CHANNELS" --concurrency 1024 \
    --raw 1 --timeout 200
  start_nats
  drive join-storm nats "$r" "$SB" join-storm --system nats --nats-url "$NATS_URL" \
    --server-pid "$SERVER_PID" --peers "$CONN_PEERS" --channels "$CONN_CHANNELS" \
    --concurrency 1024 --timeout 200
}

run_hotpath() {
  log "hotpath_alloc (Google Benchmark, counting allocator)"
  timeout -k 5 300 "$HOT" --benchmark_min_time="$HOT_TIME" --benchmark_repetitions="$RUNS" \
    --benchmark_format=json --benchmark_out="$TMP/hotpath.json" >/dev/null 2>"$TMP/hotpath.err" ||
    log "hotpath_alloc FAILED: $(tail -n 3 "$TMP/hotpath.err" | tr '\n' ' ')"
}

# Gateway workloads: a gRPC sender (gw-bench) through the relay's gRPC door to a native responder
# (gw-native) and to a gRPC Respond peer (gw-grpc); the baseline is a direct gRPC stream between
# gw-bench and its own server, no relay (grpc-direct).
run_gw_stream() {
  local r=$1 ch resp GRPC_FLAG=(--grpc-listen 127.0.0.1:0)
  start_relay; ch=$(uuid)
  start_bg resp "$SB" responder --port "$RELAY_PORT" --channel "$ch" --timeout 200; resp=$BG_PID
  wait_line resp '^ready'
  drive gw-stream gw-native "$r" "$GW" stream --port "$GRPC_PORT" --channel "$ch" \
    --bytes "$STREAM_BYTES" --system gw-native --timeout 200
  stop_roles "$resp"

  start_relay; ch=$(uuid)
  start_bg gwresp "$GW" respond --port "$GRPC_PORT" --channel "$ch" --timeout 200; resp=$BG_PID
  wait_line gwresp '^ready'
  drive gw-stream gw-grpc "$r" "$GW" stream --port "$GRPC_PORT" --channel "$ch" \
    --bytes "$STREAM_BYTES" --system gw-grpc --timeout 200
  stop_roles "$resp"

  start_grpc_direct
  drive gw-stream grpc-direct "$r" "$GW" stream --port "$DIRECT_GRPC_PORT" \
    --bytes "$STREAM_BYTES" --system grpc-direct --timeout 200

  # The floor of any relay between two gRPC legs: the same stream through a trivial forwarder.
  local direct
  start_grpc_direct; direct=$SERVER_PID
  start_grpc_forward
  drive gw-stream grpc-forward "$r" "$GW" stream --port "$GRPC_FORWARD_PORT" \
    --bytes "$STREAM_BYTES" --system grpc-forward --timeout 200
  stop_pid "$direct"
}

# gRPC requests through the gateway, each its own Send RPC and all on one Requests stream (-mux);
# the baseline is ping-pong on one direct stream (grpc-direct), and one direct RPC per request is
# measured beside it (grpc-direct-rpc), and ping-pong through a trivial gRPC forwarder
# (grpc-forward).
run_gw_rr() {
  local r=$1 ch resp mode suffix GRPC_FLAG=(--grpc-listen 127.0.0.1:0)
  local sizes=(--n "$LAT_N" --warmup "$LAT_WARM" --size 128 --timeout 200)
  for mode in rpc mux; do
    suffix=""; [[ $mode == mux ]] && suffix="-mux"
    start_relay; ch=$(uuid)
    start_bg resp "$SB" responder --port "$RELAY_PORT" --channel "$ch" --timeout 200; resp=$BG_PID
    wait_line resp '^ready'
    drive gw-rr "gw-native$suffix" "$r" "$GW" rr --port "$GRPC_PORT" --channel "$ch" \
      --mode "$mode" --system "gw-native$suffix" "${sizes[@]}"
    stop_roles "$resp"

    start_relay; ch=$(uuid)
    start_bg gwresp "$GW" respond --port "$GRPC_PORT" --channel "$ch" --timeout 200; resp=$BG_PID
    wait_line gwresp '^ready'
    drive gw-rr "gw-grpc$suffix" "$r" "$GW" rr --port "$GRPC_PORT" --channel "$ch" \
      --mode "$mode" --system "gw-grpc$suffix" "${sizes[@]}"
    stop_roles "$resp"
  done

  start_grpc_direct
  drive gw-rr grpc-direct "$r" "$GW" rr --port "$DIRECT_GRPC_PORT" --mode pingpong \
    --system grpc-direct "${sizes[@]}"
  start_grpc_direct
  drive gw-rr grpc-direct-rpc "$r" "$GW" rr --port "$DIRECT_GRPC_PORT" --mode rpc \
    --system grpc-direct-rpc "${sizes[@]}"

  # The floor of two gRPC legs: ping-pong through a trivial forwarder to the direct server.
  local direct
  start_grpc_direct; direct=$SERVER_PID
  start_grpc_forward
  drive gw-rr grpc-forward "$r" "$GW" rr --port "$GRPC_FORWARD_PORT" \
    --mode pingpong --system grpc-forward "${sizes[@]}"
  stop_pid "$direct"
}

# ---- rr-lat floors (--only rr-lat-floor; not in the default set): bench/LATENCY_PROFILE.md. ----
# The rr-lat round trip through the relay with the client library at both ends, at one end, or at
# neither (raw frames on blocking sockets), through tcp-forwarder as shipped (a blocking thread
# per direction) and as one epoll thread that sleeps at once, polls 100 µs first, or never
# sleeps, and direct; interleaved in each run. Printed as its own table (median (min–max) of the
# runs, ratios to the blocking forwarder's median); the main table is not touched.
FLOOR_RAW=$TMP/floor.jsonl
floor_drive() {  # floor_drive SYSTEM CMD...: one driver run, recorded as "floor":SYSTEM
  local system=$1 line; shift
  line=$(timeout -k 5 240 "$@" 2>"$TMP/driver.err" | tail -n 1) || true
  stop_pid "$SERVER_PID"
  if [[ $line != \{* ]]; then
    log "rr-lat-floor/$system FAILED: $(tail -n 3 "$TMP/driver.err" | tr '\n' ' ')"
    return
  fi
  line="${line%\}},\"floor\":\"$system\"}"
  echo "$line" >>"$FLOOR_RAW"
  log "rr-lat-floor/$system: $line"
}
run_rr_lat_floor() {
  local ends ch resp serve spin port lat=(--n "$LAT_N" --warmup "$LAT_WARM")
  for ends in lib raw-requester raw-responder raw; do
    start_relay; ch=$(uuid)
    if [[ $ends == raw || $ends == raw-responder ]]; then
      start_bg resp "$SB" rr-lat --raw-serve 1 --port "$RELAY_PORT" --channel "$ch" --timeout 200
    else
      start_bg resp "$SB" responder --port "$RELAY_PORT" --channel "$ch" --timeout 200
    fi
    resp=$BG_PID
    wait_line resp '^ready'
    local raw=()
    [[ $ends == raw || $ends == raw-requester ]] && raw=(--raw 1)
    floor_drive "switchboard-$ends" "$SB" rr-lat "${raw[@]}" --port "$RELAY_PORT" --channel "$ch" "${lat[@]}"
    stop_roles "$resp"
  done
  for spin in threads 0 100 -1; do
    if [[ $spin == threads ]]; then
      start_bg forwarder "$FWD" --max-pairs 8 --seconds 300
    else
      start_bg forwarder "$FWD" --max-pairs 8 --seconds 300 --mode epoll --spin-us "$spin"
    fi
    SERVER_PID=$BG_PID
    wait_line forwarder '^listening'
    port=$(awk '/^listening/{print $2}' "$TMP/forwarder.out")
    start_bg serve "$TCP" serve --connect "$port"; serve=$BG_PID
    wait_line serve '^ready'
    case $spin in
      threads) floor_drive forwarder "$TCP" rr-lat --port "$port" --system f "${lat[@]}" ;;
      -1) floor_drive forwarder-epoll-spin "$TCP" rr-lat --port "$port" --system f "${lat[@]}" ;;
      *) floor_drive "forwarder-epoll-$spin" "$TCP" rr-lat --port "$port" --system f "${lat[@]}" ;;
    esac
    stop_roles "$serve"
  done
  start_bg serve "$TCP" serve; SERVER_PID=$BG_PID
  wait_line serve '^listening'
  floor_drive direct "$TCP" rr-lat --port "$(awk '/^listening/{print $2}' "$TMP/serve.out")" \
    --system d "${lat[@]}"
}
floor_summary() {
  python3 - "$FLOOR_RAW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
systems = []
for r in rows:
    if r["floor"] not in systems:
        systems.append(r["floor"])
def cell(values):
    m = statistics.median(values)
    return f"{m:.1f} ({min(values):.1f}–{max(values):.1f})", m
base = {k: statistics.median([r[k] for r in rows if r["floor"] == "forwarder"] or [0])
        for k in ("p50_us", "p99_us", "p999_us")}
print("| rr-lat floor: system | p50 µs | p99 µs | p99.9 µs | p50 ÷ fwd | p99.9 ÷ fwd |")
print("|---|---|---|---|---|---|")
for s in systems:
    cells, meds = [], {}
    for k in ("p50_us", "p99_us", "p999_us"):
        c, meds[k] = cell([r[k] for r in rows if r["floor"] == s])
        cells.append(c)
    ratio = lambda k: f"{meds[k] / base[k]:.2f}×" if base[k] else "—"
    print(f"| {s} | {' | '.join(cells)} | {ratio('p50_us')} | {ratio('p999_us')} |")
PY
}

# ---- Main: each run goes through every workload, the systems interleaved. ----
# The code measured: commit, and whether core/ or clients/ had uncommitted changes (read-only git).
SOURCE=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- core clients 2>/dev/null) ]]; then
  SOURCE+=" + uncommitted changes in core/ or clients/"
fi
START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$RAW"
for ((r = 1; r <= RUNS; r++)); do
  for w in rr-lat rr-conc stream small discrete fanout conns join-storm gw-stream gw-rr; do
    if want "$w"; then log "run $r/$RUNS: $w"; "run_${w//-/_}" "$r"; fi
  done
done
if want hotpath; then run_hotpath; fi
if [[ ,$ONLY, == *,rr-lat-floor,* ]]; then
  for ((r = 1; r <= RUNS; r++)); do log "run $r/$RUNS: rr-lat-floor"; run_rr_lat_floor "$r"; done
  floor_summary
fi
ELAPSED=$(( $(date +%s) - START ))

report_args=(--raw "$RAW" --elapsed "$ELAPSED" --runs "$RUNS" --load "$LOAD_BEFORE"
             --load-end "$(cut -d' ' -f1-3 /proc/loadavg)" --source "$SOURCE"
             --relay-threads "$RELAY_THREADS" --grpc "$GRPC")
[[ -f $TMP/hotpath.json ]] && report_args+=(--hotpath "$TMP/hotpath.json")
((QUICK)) && report_args+=(--quick)
if ((WRITE)); then
  report_args+=(--json "$ROOT/bench/results.json" --markdown "$ROOT/bench/RESULTS.md")
fi
python3 "$ROOT/bench/report.py" "${report_args[@]}"
log "done in ${ELAPSED}s"
