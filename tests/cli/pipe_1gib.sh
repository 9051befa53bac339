#!/usr/bin/env bash
# Large-transfer test of the switchboard CLI: 1 GiB of random data through `send` to
# `respond --echo` and back, checksummed, with throughput and peak memory figures.
# Usage: pipe_1gib.sh SERVER_BINARY SWITCHBOARD_BINARY
set -euo pipefail

SERVER_BIN=${1:?usage: pipe_1gib.sh SERVER_BINARY SWITCHBOARD_BINARY}
SB=${2:?usage: pipe_1gib.sh SERVER_BINARY SWITCHBOARD_BINARY}
unset SWITCHBOARD_SERVER
SIZE=1073741824
# Far below the body size: a process that buffered the body would exceed it.
MAX_RSS_KIB=$((256 * 1024))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-1gib.XXXXXX")
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "not ok - 1 GiB echo: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

# wait_for REGEX FILE: bounded polling (10 s) until a line of FILE matches.
wait_for() {
  local tries=200
  while ((tries-- > 0)); do
    grep -qE -- "$1" "$2" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# hwm_kib PID: the process's peak resident set size (VmHWM) in KiB.
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

"$SERVER_BIN" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$WORK/relay.out" 2>"$WORK/relay.err" &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
wait_for '^listening core ' "$WORK/relay.out" || fail "relay did not start: $(cat "$WORK/relay.err")"
ADDR=127.0.0.1:$(sed -n 's/^listening core .*:\([0-9]*\)$/\1/p' "$WORK/relay.out")
CHANNEL=$("$SB" uuid)

"$SB" --server "$ADDR" respond --channel "$CHANNEL" --echo 2>"$WORK/respond.err" &
RESPOND_PID=$!
PIDS+=("$RESPOND_PID")
wait_for '^ready peer=' "$WORK/respond.err" || fail "respond not ready: $(cat "$WORK/respond.err")"

dd if=/dev/urandom of="$WORK/input" bs=1M count=$((SIZE / 1048576)) status=none
expected=$(sha256sum "$WORK/input" | cut -d' ' -f1)

# The sender's peak RSS, where GNU time is installed.
MEASURE=()
if [[ -x /usr/bin/time ]]; then MEASURE=(/usr/bin/time -f %M -o "$WORK/send.rss"); fi

# The echo is checksummed as it streams: nothing but the input touches the disk.
start=$(date +%s%N)
set +e
"${MEASURE[@]}" "$SB" --server "$ADDR" send --channel "$CHANNEL" <"$WORK/input" \
  2>"$WORK/send.err" | sha256sum >"$WORK/output.sha"
status=("${PIPESTATUS[@]}")
set -e
end=$(date +%s%N)
((status[0] == 0)) || fail "send exited ${status[0]}: $(cat "$WORK/send.err")"
actual=$(cut -d' ' -f1 "$WORK/output.sha")
[[ $actual == "$expected" ]] || fail "checksum mismatch: sent $expected, got back $actual"

relay_hwm=$(hwm_kib "$RELAY_PID")
respond_hwm=$(hwm_kib "$RESPOND_PID")
elapsed_ns=$((end - start))
awk -v ns="$elapsed_ns" -v bytes="$SIZE" -v relay="$relay_hwm" -v respond="$respond_hwm" 'BEGIN {
  s = ns / 1e9
  printf "1 GiB echoed in %.2f s: %.1f MB/s each way (%.1f MiB/s)\n", s, bytes / s / 1e6,
         bytes / s / 1048576
  printf "relay peak RSS (VmHWM): %.1f MiB; respond peak RSS: %.1f MiB\n", relay / 1024,
         respond / 1024
}'
if [[ -s $WORK/send.rss ]]; then echo "send peak RSS: $(($(cat "$WORK/send.rss") / 1024)) MiB"; fi
((relay_hwm < MAX_RSS_KIB)) || fail "relay peak RSS ${relay_hwm} KiB: the body was buffered"
((respond_hwm < MAX_RSS_KIB)) || fail "respond peak RSS ${respond_hwm} KiB: the body was buffered"
kill -TERM "$RESPOND_PID" "$RELAY_PID"
wait "$RESPOND_PID" || fail "respond exited $? on SIGTERM"
wait "$RELAY_PID" || fail "relay exited $? on SIGTERM"
PIDS=()
echo "ok - 1 GiB echo, sha256 equal"
echo "1 passed, 0 failed"
