#!/usr/bin/env bash
# bench/channels.sh: many channels in one process (client::Channels) against rr-conc in the same
# run. Per run: rr-conc (16 requesters, 1 responder, one channel) on a fresh relay; then, on
# another fresh relay, a channels-serve process (one responder per channel) and the channels
# workload (one object in all the channels, 16 requests in flight spread over them). Prints one
# JSON line per workload and a summary with the ratio and the memory per channel.
#
# Usage: bench/channels.sh [--runs N] [--channels N] [--n REQUESTS] [--max-frame BYTES]
#                          [--share 0|1] [--first K] [--tls]
#   --max-frame  ChannelsOptions::max_frame of both channel processes (default: the client's)
#   --share      ChannelsOptions::share_connections of both (default 1: the channels share TCP
#                connections, protocol versions 4 and 5; 0: a connection per channel)
#   --first      the requesting object joins from channel K on (default 0, as the responders):
#                its first MUX names another channel (with version 5 each object still keeps
#                a shared connection per relay thread, each lane on its channel's)
#   --tls        the channels run's relay has TLS on its native door (a throwaway CA and
#                certificate made with the openssl CLI), and both channel processes use it;
#                rr-conc stays on plain TCP
# Env: SB_BUILD_DIR (default build/ci; the binaries are built there if missing).
# Only 127.0.0.1 is ever targeted; every process is bounded in time and ended on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=3 CHANNELS=1000 N=200000 EXTRA=() REQUESTER=() TLS=0
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift ;;
    --channels) CHANNELS=$2; shift ;;
    --n) N=$2; shift ;;
    --max-frame) EXTRA+=(--max-frame "$2"); shift ;;
    --share) EXTRA+=(--share "$2"); shift ;;
    --first) REQUESTER+=(--first "$2"); shift ;;
    --tls) TLS=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "channels.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

BUILD=${SB_BUILD_DIR:-$ROOT/build/ci}
SERVER=$BUILD/server/switchboard-server SB=$BUILD/bench/switchboard-bench
if [[ ! -x $SERVER || ! -x $SB ]]; then
  cmake --build "$BUILD" --target switchboard-server switchboard-bench >&2
fi
ulimit -n "$(ulimit -Hn)"
SCRIPT=channels.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_scratch

rss_kib() { awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
RELAY_TLS=()
if ((TLS)); then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/ca.key" \
    -out "$TMP/ca.pem" -days 1 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/relay.key" \
    -out "$TMP/relay.csr" -subj /CN=relay 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$TMP/relay.ext"
  openssl x509 -req -in "$TMP/relay.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -set_serial 1 \
    -days 1 -out "$TMP/relay.pem" -extfile "$TMP/relay.ext" 2>/dev/null
  RELAY_TLS=(--tls-native --tls-cert-file "$TMP/relay.pem" --tls-key-file "$TMP/relay.key")
  EXTRA+=(--tls-ca "$TMP/ca.pem")
fi
start_relay() {  # the relay as bench/run.sh starts it, with its default per-address throttle
  start_bg relay "$SERVER" --listen 127.0.0.1:0 --grpc-listen "" --threads "$(nproc)" \
    --log-level warn --drain-timeout-ms 1000 --admin-listen 127.0.0.1:0 "$@"
  RELAY_PID=$BG_PID
  wait_line relay '^listening core'
  RELAY_PORT=$(sed -n 's/^listening core 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/relay.out")
}

RESULTS=$TMP/results.jsonl
: >"$RESULTS"
for ((r = 1; r <= RUNS; r++)); do
  echo "[channels $(date +%H:%M:%S)] run $r: rr-conc" >&2
  start_relay; ch=$(cat /proc/sys/kernel/random/uuid)
  start_bg resp "$SB" responder --port "$RELAY_PORT" --channel "$ch" --timeout 300; resp=$BG_PID
  wait_line resp '^ready' 150
  relay_cpu=$(cpu_us "$RELAY_PID") resp_cpu=$(cpu_us "$resp")
  # CPU per request over the whole run (10,000 warm-up requests included, as in channels).
  TIMEFORMAT='%3U %3S'
  { time "$SB" rr-conc --port "$RELAY_PORT" --channel "$ch" --n "$N" --timeout 300 \
      >"$TMP/rr.out"; } 2>"$TMP/rr.time"
  read -r user sys <"$TMP/rr.time"
  total=$((N + N / 20))
  extra=$(awk -v r0="$relay_cpu" -v r1="$(cpu_us "$RELAY_PID")" -v s0="$resp_cpu" \
    -v s1="$(cpu_us "$resp")" -v u="$user" -v y="$sys" -v t="$total" 'BEGIN {
      printf ",\"relay_cpu_us_per_req\":%.3f,\"responder_cpu_us_per_req\":%.3f,\"requester_cpu_us_per_req\":%.3f",
        (r1 - r0) / t, (s1 - s0) / t, (u + y) * 1e6 / t }')
  sed "s/}\$/$extra}/" "$TMP/rr.out" | tee -a "$RESULTS"
  stop_pid "$resp"; stop_pid "$RELAY_PID"

  echo "[channels $(date +%H:%M:%S)] run $r: channels ($CHANNELS)" >&2
  start_relay "${RELAY_TLS[@]}"; ch=$(cat /proc/sys/kernel/random/uuid)
  sleep 0.2
  relay_idle=$(rss_kib "$RELAY_PID")
  start_bg serve "$SB" channels-serve --port "$RELAY_PORT" --channel "$ch" --channels "$CHANNELS" \
    "${EXTRA[@]}" --timeout 400; serve=$BG_PID
  wait_line serve '^ready' 150
  "$SB" channels --port "$RELAY_PORT" --channel "$ch" --channels "$CHANNELS" --n "$N" \
    --relay-pid "$RELAY_PID" --serve-pid "$serve" "${EXTRA[@]}" "${REQUESTER[@]}" --timeout 400 |
    sed "s/}\$/,\"relay_idle_kib\":$relay_idle,\"serve_ready\":\"$(sed -n 's/^ready //p' "$TMP/serve.out")\"}/" |
    tee -a "$RESULTS"
  stop_pid "$serve"; stop_pid "$RELAY_PID"
done

/usr/bin/python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
conc = [r for r in rows if r.get("workload") == "rr-conc" and "rps" in r]
many = [r for r in rows if r.get("workload") == "channels" and "rps" in r]
if not conc or not many:
    sys.exit("channels.sh: a workload failed; see the JSON lines above")
med = statistics.median
print("\n| run | rr-conc req/s | channels req/s | ratio | channels p50/p99 µs | relay KiB/channel: "
      "requester side, joined / after load | both sides, joined | client KiB/channel: joined / "
      "after load | join s |")
print("|---|---|---|---|---|---|---|---|---|")
ratios = []
for i, (c, m) in enumerate(zip(conc, many), 1):
    ratio = m["rps"] / c["rps"]
    ratios.append(ratio)
    both = (m["relay_rss_joined_kib"] - m["relay_idle_kib"]) / m["channels"]
    relay_loaded = (m["relay_rss_loaded_kib"] - m["relay_rss_before_kib"]) / m["channels"]
    client_loaded = (m["client_rss_loaded_kib"] - m["client_rss_before_kib"]) / m["channels"]
    print(f"| {i} | {c['rps']:,.0f} | {m['rps']:,.0f} | {ratio:.2f}× | {m['p50_us']:.0f}/{m['p99_us']:.0f} "
          f"| {m['relay_kib_per_channel']:.1f} / {relay_loaded:.1f} | {both:.1f} "
          f"| {m['client_kib_per_channel']:.1f} / {client_loaded:.1f} | {m['join_seconds']:.1f} |")
print(f"\nmedian ratio channels/rr-conc: {med(ratios):.2f}× over {len(ratios)} runs")
keys = ["relay_cpu_us_per_req", "responder_cpu_us_per_req", "requester_cpu_us_per_req"]
if all(k in r for r in conc + many for k in keys):
    print("\nCPU µs per request (medians; warm-up included): | | rr-conc | channels | ratio |")
    print("|---|---|---|---|")
    for k in keys:
        a, b = med([r[k] for r in conc]), med([r[k] for r in many])
        print(f"| {k.split('_')[0]} | {a:.1f} | {b:.1f} | {b / a:.2f}× |")
EOF
