#!/usr/bin/env bash
# Discrete-message benchmark: switchboard-bench discrete (one broadcast per message through the
# public client API, default options, --inflight in flight) against its baselines, run interleaved:
#   64 KiB x 16,384 (1 GiB) vs the same 1 GiB as one raw TCP stream through tcp-forwarder;
#   16 B x 1,000,000 vs nats-bench pub/sub through nats-server (as bench/run.sh runs it).
# Prints one JSON line per run and the ratios of each run (same run, same machine).
#
# usage: bench/discrete.sh [--quick] [--runs 3] [--inflight 64] [--api async|blocking|message] [--relay-threads N] [--no-build]
#                          [--profile DIR]   (after the runs, one more of each size with the relay
#                          and the sender under strace -c -f, or perf record -g with PROFILE_TOOL=perf;
#                          its figures are slowed by the tool and not ratios)
set -euo pipefail

PROFILING=0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0 RUNS=3 INFLIGHT=64 API=async RELAY_THREADS=$(nproc) BUILD_STEP=1 PROFILE=""
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --runs) RUNS=$2; shift ;;
    --inflight) INFLIGHT=$2; shift ;;
    --api) API=$2; shift ;;
    --relay-threads) RELAY_THREADS=$2; shift ;;
    --no-build) BUILD_STEP=0 ;;
    --profile) PROFILE=$2; shift ;;
    *) echo "discrete.sh: unknown flag $1" >&2; exit 2 ;;
  esac
  shift
done
if ((QUICK)); then BIG_N=2048 SMALL_N=100000; else BIG_N=16384 SMALL_N=1000000; fi
# A message (--api message) is one frame: with the relay's default 64 KiB max frame the largest
# body is 65,516 bytes, which the big case then uses.
BIG_SIZE=65536
[[ $API == message ]] && BIG_SIZE=65516
BIG_BYTES=$((BIG_N * BIG_SIZE))
log() { echo "discrete.sh: $*" >&2; }

BUILD=${SB_BUILD_DIR:-$ROOT/build/ci}
TARGETS=(switchboard-server switchboard-bench tcp-forwarder tcp-direct nats-bench)
if ((BUILD_STEP)); then
  if [[ -z ${SB_BUILD_DIR:-} ]]; then
    (cd "$ROOT" && cmake --preset ci >/dev/null && cmake --build --preset ci -j2 --target "${TARGETS[@]}") >&2
  else
    cmake --build "$BUILD" --target "${TARGETS[@]}" >&2
  fi
fi
SERVER=$BUILD/server/switchboard-server SB=$BUILD/bench/switchboard-bench
FWD=$BUILD/bench/tcp-forwarder TCP=$BUILD/bench/tcp-direct NATS=$BUILD/bench/nats-bench
for b in "$SERVER" "$SB" "$FWD" "$TCP" "$NATS"; do
  [[ -x $b ]] || { echo "discrete.sh: missing $b" >&2; exit 1; }
done
command -v nats-server >/dev/null || { echo "discrete.sh: nats-server not installed" >&2; exit 1; }
GRPC_FLAG=()
"$SERVER" --help 2>/dev/null | grep -q -- --grpc-listen && GRPC_FLAG=(--grpc-listen "")

SCRIPT=discrete.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_scratch

start_relay() {
  start_bg relay "$SERVER" --listen 127.0.0.1:0 "${GRPC_FLAG[@]}" --threads "$RELAY_THREADS" \
    --log-level warn --drain-timeout-ms 1000 --connect-rate-per-address 0 --admin-listen 127.0.0.1:0
  RELAY_PID=$BG_PID
  wait_file "$TMP/relay.out" '^listening core'
  RELAY_PORT=$(sed -n 's/^listening core 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/relay.out")
}
start_nats() {
  start_bg nats nats-server -a 127.0.0.1 -p -1
  NATS_PID=$BG_PID
  wait_file "$TMP/nats.err" 'Listening for client connections'
  NATS_URL=nats://127.0.0.1:$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/nats.err")
}
# json_field LINE KEY: a numeric field of a JSON line, 0 when absent.
json_field() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" <<<"$1" | head -n 1 | grep . || echo 0; }
# run_driver CMD...: runs the driver bounded in time; prints its last stdout line.
run_driver() { timeout -k 5 240 "$@" 2>"$TMP/driver.err" | tail -n 1 || true; }

# profile_on NAME PID...: strace -c -f (or perf record) on each PID while a driver runs.
PROF_PIDS=()
profile_on() {
  local name=$1; shift
  [[ -n $PROFILE ]] || return 0
  mkdir -p "$PROFILE"
  for p in "$@"; do
    if [[ ${PROFILE_TOOL:-strace} == perf ]]; then
      perf record -g -o "$PROFILE/$name-$p.perf.data" -p "$p" >/dev/null 2>"$PROFILE/$name-$p.perf.err" &
    else
      strace -c -f -o "$PROFILE/$name-$p.strace" -p "$p" 2>/dev/null &
    fi
    PROF_PIDS+=($!)
  done
  sleep 0.5  # attached before the driver starts
}
profile_off() {
  for p in "${PROF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PROF_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PROF_PIDS=()
}

# discrete_sb SIZE N: one switchboard discrete run (relay + receiver + sender); prints its line.
discrete_sb() {
  local size=$1 n=$2 ch recv line
  start_relay; ch=$(uuid)
  start_bg recv "$SB" receiver --port "$RELAY_PORT" --channel "$ch" --expect-msgs "$n" --timeout 200; recv=$BG_PID
  wait_file "$TMP/recv.out" '^ready'
  if ((PROFILING)); then
    # The relay is attached to; the sender runs under the tool from its start.
    profile_on "relay-$size" "$RELAY_PID"
    if [[ ${PROFILE_TOOL:-strace} == perf ]]; then
      line=$(timeout -k 5 240 perf record -g -o "$PROFILE/sender-$size.perf.data" "$SB" discrete \
        --port "$RELAY_PORT" --channel "$ch" --n "$n" --size "$size" --inflight "$INFLIGHT" --api "$API" \
        --relay-pid "$RELAY_PID" --timeout 200 2>"$TMP/driver.err" | tail -n 1 || true)
    else
      line=$(timeout -k 5 240 strace -c -f -o "$PROFILE/sender-$size.strace" "$SB" discrete \
        --port "$RELAY_PORT" --channel "$ch" --n "$n" --size "$size" --inflight "$INFLIGHT" --api "$API" \
        --relay-pid "$RELAY_PID" --timeout 200 2>"$TMP/driver.err" | tail -n 1 || true)
    fi
    profile_off
  else
    line=$(run_driver "$SB" discrete --port "$RELAY_PORT" --channel "$ch" --n "$n" --size "$size" \
      --inflight "$INFLIGHT" --api "$API" --relay-pid "$RELAY_PID" --timeout 200)
  fi
  stop_pid "$recv"; stop_pid "$RELAY_PID"
  [[ $line == \{* ]] || { log "discrete $size failed: $(tail -n 3 "$TMP/driver.err" | tr '\n' ' ')"; line='{}'; }
  echo "$line"
}

# forwarder_stream BYTES: the same bytes as one raw TCP stream through tcp-forwarder.
forwarder_stream() {
  local serve line fwd port
  start_bg forwarder "$FWD" --max-pairs 8 --seconds 300; fwd=$BG_PID
  wait_file "$TMP/forwarder.out" '^listening'
  port=$(awk '/^listening/{print $2}' "$TMP/forwarder.out")
  start_bg serve "$TCP" serve --connect "$port"; serve=$BG_PID
  wait_file "$TMP/serve.out" '^ready'
  line=$(run_driver "$TCP" stream --port "$port" --system forwarder --bytes "$1")
  stop_pid "$serve"; stop_pid "$fwd"
  [[ $line == \{* ]] || { log "forwarder failed"; line='{}'; }
  echo "$line"
}

# nats_small N: 16 B pub/sub through nats-server, as bench/run.sh's small workload.
nats_small() {
  local sub line
  start_nats
  start_bg sub "$NATS" sub --url "$NATS_URL" --subs 1 --expect-msgs "$1" --ack-every 4096 --seconds 200; sub=$BG_PID
  wait_file "$TMP/sub.out" '^ready'
  line=$(run_driver "$NATS" pub --url "$NATS_URL" --workload small --subs 1 --n "$1" --size 16 --window 32768)
  stop_pid "$sub"; stop_pid "$NATS_PID"
  [[ $line == \{* ]] || { log "nats failed"; line='{}'; }
  echo "$line"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }

log "api $API, inflight $INFLIGHT, relay threads $RELAY_THREADS, $RUNS runs, ${BIG_N} x 64 KiB and ${SMALL_N} x 16 B"
for RUN in $(seq "$RUNS"); do
  sb=$(discrete_sb "$BIG_SIZE" "$BIG_N"); echo "{\"run\":$RUN,\"case\":\"64k\",\"sb\":$sb}"
  fw=$(forwarder_stream "$BIG_BYTES"); echo "{\"run\":$RUN,\"case\":\"64k\",\"forwarder\":$fw}"
  echo "run $RUN 64KiB: switchboard $(json_field "$sb" mb_s) MB/s, forwarder $(json_field "$fw" mb_s) MB/s, ratio $(ratio "$(json_field "$sb" mb_s)" "$(json_field "$fw" mb_s)")"
  sb=$(discrete_sb 16 "$SMALL_N"); echo "{\"run\":$RUN,\"case\":\"16b\",\"sb\":$sb}"
  na=$(nats_small "$SMALL_N"); echo "{\"run\":$RUN,\"case\":\"16b\",\"nats\":$na}"
  echo "run $RUN 16B: switchboard $(json_field "$sb" msgs_s) msg/s, nats $(json_field "$na" msgs_s) msg/s, ratio $(ratio "$(json_field "$sb" msgs_s)" "$(json_field "$na" msgs_s)")"
done

if [[ -n $PROFILE ]]; then
  PROFILING=1
  log "profiling with ${PROFILE_TOOL:-strace} into $PROFILE"
  echo "{\"case\":\"64k\",\"profiled\":$(discrete_sb "$BIG_SIZE" "$BIG_N")}"
  echo "{\"case\":\"16b\",\"profiled\":$(discrete_sb 16 "$SMALL_N")}"
fi
