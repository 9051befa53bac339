#!/usr/bin/env bash
# End-to-end tests of the switchboard CLI against a relay of their own.
# Usage: cli_test.sh SERVER_BINARY SWITCHBOARD_BINARY
set -euo pipefail

SERVER_BIN=${1:?usage: cli_test.sh SERVER_BINARY SWITCHBOARD_BINARY}
SB=${2:?usage: cli_test.sh SERVER_BINARY SWITCHBOARD_BINARY}
unset SWITCHBOARD_SERVER
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-cli-test.XXXXXX")
: >"$WORK/pids"
RELAY_PID=
PASSED=0
FAILED=0

# Kills whatever is still running (only our own processes: checked by command line), then
# removes the scratch directory.
cleanup() {
  local pid
  while read -r pid; do
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q switchboard; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done <"$WORK/pids"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }

# fail MESSAGE: ends the current test (it runs in a subshell) with a clear message.
fail() {
  echo "not ok - $TEST: $*" >&2
  exit 1
}

# wait_for REGEX FILE [SECONDS]: bounded polling until a line of FILE matches.
wait_for() {
  local regex=$1 file=$2 tries=$((${3:-10} * 20))
  while ((tries-- > 0)); do
    grep -qE -- "$regex" "$file" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# spawn NAME COMMAND...: runs COMMAND in the background, output in $WORK/NAME.{out,err}; a
# wrapper records its exit code in $WORK/NAME.rc (readable from any subshell). Sets BG_PID.
spawn() {
  local name=$1 tries=200
  shift
  rm -f "$WORK/$name.pid" "$WORK/$name.rc"
  (
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    echo $! >"$WORK/$name.pid.tmp"
    mv "$WORK/$name.pid.tmp" "$WORK/$name.pid"
    rc=0
    wait $! || rc=$?
    echo $rc >"$WORK/$name.rc"
  ) 2>/dev/null &
  while [[ ! -s $WORK/$name.pid ]] && ((tries-- > 0)); do sleep 0.01; done
  BG_PID=$(cat "$WORK/$name.pid")
  echo "$BG_PID" >>"$WORK/pids"
}

# wait_exit NAME [SECONDS]: bounded wait for a spawned process to end; sets EXIT_RC.
wait_exit() {
  local tries=$((${2:-10} * 20))
  while [[ ! -s $WORK/$1.rc ]] && ((tries-- > 0)); do sleep 0.05; done
  [[ -s $WORK/$1.rc ]] || return 1
  EXIT_RC=$(cat "$WORK/$1.rc")
}

sb() { "$SB" --server "$ADDR" "$@"; }

# start_bg NAME ARGS...: switchboard ARGS in the background (see spawn).
start_bg() {
  local name=$1
  shift
  spawn "$name" "$SB" --server "$ADDR" "$@"
}

# start_ready NAME ARGS...: start_bg, then wait for its "ready" line; sets READY_PEER.
start_ready() {
  start_bg "$@"
  wait_for '^ready peer=' "$WORK/$1.err" ||
    fail "'$*' never printed its ready line: $(cat "$WORK/$1.err")"
  READY_PEER=$(sed -n 's/^ready peer=\([^ ]*\) channel=.*/\1/p' "$WORK/$1.err")
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# run_test NAME FUNCTION: runs the test in a subshell with errexit, counts the result.
run_test() {
  local rc=0
  TEST=$1
  set +e
  (
    set -e
    "$2"
  )
  rc=$?
  set -e
  if ((rc == 0)); then
    echo "ok - $1"
    PASSED=$((PASSED + 1))
  else
    echo "not ok - $1 (exit $rc)"
    FAILED=$((FAILED + 1))
  fi
}

# --- the relay -----------------------------------------------------------------------------

spawn relay "$SERVER_BIN" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
RELAY_PID=$BG_PID
if ! wait_for '^listening core ' "$WORK/relay.out"; then
  echo "relay did not start: $(cat "$WORK/relay.err")" >&2
  exit 1
fi
PORT=$(sed -n 's/^listening core .*:\([0-9]*\)$/\1/p' "$WORK/relay.out")
ADDR=127.0.0.1:$PORT

# One echo responder shared by several tests.
ECHO_CHANNEL=$("$SB" uuid)
TEST=setup
start_ready echo respond --channel "$ECHO_CHANNEL" --echo

# --- the tests -----------------------------------------------------------------------------

test_uuid() {
  local id
  id=$("$SB" uuid)
  [[ $id =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] ||
    fail "not a random UUID: '$id'"
  [[ $("$SB" uuid) != "$id" ]] || fail "two runs printed the same UUID"
}

test_usage_errors() {
  local rc=0
  sb send --channel not-a-uuid </dev/null 2>"$WORK/usage.err" || rc=$?
  ((rc == 2)) || fail "bad --channel: exit $rc, expected 2"
  grep -q "not a UUID" "$WORK/usage.err" || fail "no clear message: $(cat "$WORK/usage.err")"
  rc=0
  sb respond --channel "$ECHO_CHANNEL" 2>/dev/null || rc=$?
  ((rc == 2)) || fail "respond without --echo or command: exit $rc, expected 2"
  rc=0
  sb send --channel "$ECHO_CHANNEL" --meta novalue </dev/null 2>/dev/null || rc=$?
  ((rc == 2)) || fail "--meta without '=': exit $rc, expected 2"
}

test_echo_round_trip() {
  local out
  out=$(printf 'hello, switchboard' | sb send --channel "$ECHO_CHANNEL")
  [[ $out == 'hello, switchboard' ]] || fail "got '$out'"
}

test_empty_body() {
  sb send --channel "$ECHO_CHANNEL" </dev/null >"$WORK/empty.out"
  [[ ! -s $WORK/empty.out ]] || fail "expected no bytes, got $(wc -c <"$WORK/empty.out")"
}

test_10mib_checksum() {
  head -c 10485760 /dev/urandom >"$WORK/10mib.in"
  sb send --channel "$ECHO_CHANNEL" <"$WORK/10mib.in" >"$WORK/10mib.out"
  [[ $(sha "$WORK/10mib.in") == "$(sha "$WORK/10mib.out")" ]] ||
    fail "checksums differ ($(wc -c <"$WORK/10mib.out") bytes came back)"
}

test_command_tr() {
  local channel out
  channel=$("$SB" uuid)
  start_ready tr respond --channel "$channel" -- tr a-z A-Z
  out=$(printf 'shout this' | sb send --channel "$channel")
  [[ $out == 'SHOUT THIS' ]] || fail "got '$out'"
  kill "$BG_PID"
}

test_command_failure() {
  local channel rc=0
  channel=$("$SB" uuid)
  start_ready fails respond --channel "$channel" -- sh -c 'cat >/dev/null; echo oops >&2; exit 3'
  echo data | sb send --channel "$channel" >/dev/null 2>"$WORK/fails.send.err" || rc=$?
  ((rc == 23)) || fail "exit $rc, expected 23 (APPLICATION)"
  grep -q 'APPLICATION(3)' "$WORK/fails.send.err" ||
    fail "no APPLICATION(3) in: $(cat "$WORK/fails.send.err")"
  wait_for '^oops$' "$WORK/fails.err" 2 || fail "the command's stderr did not reach the responder's"
  kill "$BG_PID"
}

test_no_responders_at_once() {
  local channel start elapsed rc=0
  channel=$("$SB" uuid)
  start=$(now_ms)
  # Input that stays open for 3 s: the answer must not wait for it.
  sb send --channel "$channel" < <(sleep 3) >/dev/null 2>"$WORK/nr.err" || rc=$?
  elapsed=$(($(now_ms) - start))
  ((rc == 11)) || fail "exit $rc, expected 11 (NO_RESPONDERS): $(cat "$WORK/nr.err")"
  ((elapsed < 2000)) || fail "took ${elapsed} ms"
  grep -q 'send failed: NO_RESPONDERS' "$WORK/nr.err" || fail "message: $(cat "$WORK/nr.err")"
}

test_to_unknown_peer() {
  local rc=0
  echo hi | sb send --channel "$ECHO_CHANNEL" --to "$("$SB" uuid)" >/dev/null 2>&1 || rc=$?
  ((rc == 11)) || fail "exit $rc, expected 11"
}

test_to_known_peer() {
  local out
  out=$(echo direct | sb send --channel "$ECHO_CHANNEL" --to "$ECHO_PEER")
  [[ $out == direct ]] || fail "got '$out'"
}

test_server_from_env() {
  local out
  out=$(printf 'via env' | SWITCHBOARD_SERVER=$ADDR "$SB" send --channel "$ECHO_CHANNEL")
  [[ $out == 'via env' ]] || fail "got '$out'"
}

test_unreachable_relay() {
  local rc=0
  "$SB" --server 127.0.0.1:1 send --channel "$ECHO_CHANNEL" </dev/null 2>"$WORK/unreach.err" ||
    rc=$?
  ((rc == 3)) || fail "exit $rc, expected 3"
  grep -q 'cannot join' "$WORK/unreach.err" || fail "message: $(cat "$WORK/unreach.err")"
}

test_broadcast_two_listeners() {
  local channel name
  channel=$("$SB" uuid)
  start_ready listen1 listen --channel "$channel" --count 1
  start_ready listen2 listen --channel "$channel" --count 1
  printf 'news for all' | sb broadcast --channel "$channel" 2>"$WORK/bcast.err"
  grep -q '^delivered=2 dropped=0$' "$WORK/bcast.err" || fail "summary: $(cat "$WORK/bcast.err")"
  for name in listen1 listen2; do
    wait_exit "$name" || fail "listen --count 1 did not exit"
    ((EXIT_RC == 0)) || fail "listen exited $EXIT_RC"
  done
  [[ $(cat "$WORK/listen1.out") == 'news for all' ]] || fail "listen1 got '$(cat "$WORK/listen1.out")'"
  [[ $(cat "$WORK/listen2.out") == 'news for all' ]] || fail "listen2 got '$(cat "$WORK/listen2.out")'"
}

test_peers_watch() {
  local channel watcher first second third
  channel=$("$SB" uuid)
  start_ready pw1 respond --channel "$channel" --echo
  first=$READY_PEER
  [[ $(sb peers --channel "$channel") == "$first" ]] || fail "peers does not list the responder"
  start_ready watch peers --channel "$channel" --watch
  watcher=$BG_PID
  wait_for "^$first\$" "$WORK/watch.out" || fail "the snapshot lacks $first: $(cat "$WORK/watch.out")"
  start_ready pw2 respond --channel "$channel" --echo
  second=$READY_PEER
  wait_for "^joined $second version=[0-9]+\$" "$WORK/watch.out" || fail "no joined line for $second"
  kill -TERM "$BG_PID"
  wait_for "^left $second version=[0-9]+\$" "$WORK/watch.out" || fail "no left line after SIGTERM"
  start_ready pw3 respond --channel "$channel" --echo
  third=$READY_PEER
  wait_for "^joined $third version=" "$WORK/watch.out" || fail "no joined line for $third"
  kill -9 "$BG_PID"
  wait_for "^left $third version=" "$WORK/watch.out" || fail "no left line after kill -9"
  # Versions go up by one per change.
  awk '{ split($3, v, "="); if (NR > 1 && v[2] != prev + 1) exit 1; prev = v[2] }' \
    <(grep -E '^(joined|left) ' "$WORK/watch.out") || fail "versions: $(cat "$WORK/watch.out")"
  kill -TERM "$watcher"
  wait_exit watch || fail "peers --watch ignored SIGTERM"
  ((EXIT_RC == 0)) || fail "peers --watch exited $EXIT_RC after SIGTERM"
}

test_metadata() {
  local channel out
  channel=$("$SB" uuid)
  # shellcheck disable=SC2016 # expanded by the command's shell
  start_ready meta respond --channel "$channel" -- sh -c 'printf %s "$SWITCHBOARD_META_k"'
  out=$(echo body | sb send --channel "$channel" --meta k=v)
  [[ $out == v ]] || fail "got '$out'"
  out=$(echo body | sb send --channel "$channel" --meta 'k=two words')
  [[ $out == 'two words' ]] || fail "got '$out'"
  kill "$BG_PID"
}

test_deadline_stops_command() {
  local channel rc=0 pid
  channel=$("$SB" uuid)
  # shellcheck disable=SC2016 # expanded by the command's shell
  start_ready slow respond --channel "$channel" -- \
    sh -c 'echo $$ >"$1"; echo "deadline=$SWITCHBOARD_DEADLINE_MS" >&2; exec sleep 30' sh \
    "$WORK/slow.pid"
  echo x | sb send --channel "$channel" --deadline-ms 300 >/dev/null 2>"$WORK/slow.send.err" ||
    rc=$?
  ((rc == 13)) || fail "exit $rc, expected 13 (DEADLINE_EXCEEDED): $(cat "$WORK/slow.send.err")"
  grep -qE '^deadline=[0-9]+$' "$WORK/slow.err" || fail "no deadline in the command's environment"
  pid=$(cat "$WORK/slow.pid")
  for _ in $(seq 100); do [[ -e /proc/$pid ]] || break; sleep 0.05; done
  [[ ! -e /proc/$pid ]] || fail "the command of a reset request is still running"
  kill "$BG_PID"
}

test_ping() {
  local out
  out=$(sb ping --timeout-ms 5000)
  [[ $out =~ ^pong\ from\ $ADDR:\ time=[0-9]+\.[0-9]{3}\ ms ]] || fail "got '$out'"
  # A probe on a busy channel leaves its responder serving.
  sb ping --channel "$ECHO_CHANNEL" >/dev/null || fail "ping on a channel failed"
  out=$(printf 'after ping' | sb send --channel "$ECHO_CHANNEL")
  [[ $out == 'after ping' ]] || fail "echo after ping got '$out'"
}

test_ping_unreachable() {
  local rc=0
  "$SB" --server 127.0.0.1:1 ping 2>"$WORK/ping.err" || rc=$?
  ((rc == 3)) || fail "exit $rc, expected 3"
  grep -q 'ping 127.0.0.1:1 failed: cannot connect' "$WORK/ping.err" ||
    fail "message: $(cat "$WORK/ping.err")"
}

# A listener that accepts and never answers (it exits when the probe hangs up, or after 20 s).
test_ping_timeout() {
  local port start elapsed rc=0
  spawn silent /usr/bin/python3 -c '
import socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
print(listener.getsockname()[1], flush=True)
listener.settimeout(20)
connection, _ = listener.accept()
connection.settimeout(20)
while connection.recv(4096):
    pass
'
  wait_for '^[0-9]+$' "$WORK/silent.out" || fail "the silent listener did not start"
  port=$(cat "$WORK/silent.out")
  start=$(now_ms)
  "$SB" --server "127.0.0.1:$port" ping --timeout-ms 400 2>"$WORK/ping.err" || rc=$?
  elapsed=$(($(now_ms) - start))
  ((rc == 3)) || fail "exit $rc, expected 3"
  grep -q 'no answer within 400 ms (waiting for WELCOME)' "$WORK/ping.err" ||
    fail "message: $(cat "$WORK/ping.err")"
  ((elapsed < 5000)) || fail "took ${elapsed} ms with --timeout-ms 400"
  wait_exit silent || fail "the probe did not hang up"
}

test_respond_sigterm() {
  kill -TERM "$(cat "$WORK/echo.pid")"
  wait_exit echo || fail "respond ignored SIGTERM"
  ((EXIT_RC == 0)) || fail "respond exited $EXIT_RC after SIGTERM"
}

# A relay of its own, killed and restarted on the same port: --reconnect keeps the responder
# (same peer id) and the watcher going; the watcher reports who left during the outage.
test_reconnect_after_relay_restart() {
  local channel port addr responder gone rc=0 out
  spawn relay2 "$SERVER_BIN" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
  wait_for '^listening core ' "$WORK/relay2.out" || fail "second relay did not start"
  port=$(sed -n 's/^listening core .*:\([0-9]*\)$/\1/p' "$WORK/relay2.out")
  addr=127.0.0.1:$port
  channel=$("$SB" uuid)
  "$SB" --server "$addr" peers --channel "$channel" --reconnect >/dev/null 2>&1 || rc=$?
  ((rc == 2)) || fail "peers --reconnect without --watch exited $rc, expected 2"
  spawn rr "$SB" --server "$addr" respond --channel "$channel" --echo --reconnect
  wait_for '^ready peer=' "$WORK/rr.err" || fail "respond --reconnect not ready: $(cat "$WORK/rr.err")"
  responder=$(sed -n 's/^ready peer=\([^ ]*\) .*/\1/p' "$WORK/rr.err")
  spawn gone "$SB" --server "$addr" respond --channel "$channel" --echo
  wait_for '^ready peer=' "$WORK/gone.err" || fail "plain respond not ready"
  gone=$(sed -n 's/^ready peer=\([^ ]*\) .*/\1/p' "$WORK/gone.err")
  spawn rw "$SB" --server "$addr" peers --channel "$channel" --watch --reconnect
  wait_for '^ready peer=' "$WORK/rw.err" || fail "peers --watch --reconnect not ready"
  wait_for "^$gone\$" "$WORK/rw.out" || fail "the watcher's snapshot lacks $gone"

  kill -9 "$(cat "$WORK/relay2.pid")"
  wait_for 'relay connection lost: .*; reconnecting' "$WORK/rr.err" ||
    fail "respond --reconnect did not report the loss: $(cat "$WORK/rr.err")"
  wait_for 'relay connection lost: .*; reconnecting' "$WORK/rw.err" ||
    fail "peers --watch --reconnect did not report the loss"
  wait_exit gone || fail "respond without --reconnect still running"
  ((EXIT_RC == 3)) || fail "respond without --reconnect exited $EXIT_RC, expected 3"

  spawn relay3 "$SERVER_BIN" --listen "$addr" --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
  wait_for '^listening core ' "$WORK/relay3.out" || fail "relay did not restart on $addr"
  wait_for "^reconnected peer=$responder version=" "$WORK/rr.err" ||
    fail "respond did not rejoin as $responder: $(cat "$WORK/rr.err")"
  wait_for '^reconnected peer=' "$WORK/rw.err" || fail "the watcher did not rejoin"
  wait_for "^left $gone version=[0-9]+\$" "$WORK/rw.out" ||
    fail "the watcher did not report $gone as gone: $(cat "$WORK/rw.out")"
  out=$(echo "after the restart" | "$SB" --server "$addr" send --channel "$channel")
  [[ $out == 'after the restart' ]] || fail "got '$out' after the restart"

  kill -TERM "$(cat "$WORK/rr.pid")" "$(cat "$WORK/rw.pid")"
  wait_exit rr || fail "respond --reconnect ignored SIGTERM"
  ((EXIT_RC == 0)) || fail "respond --reconnect exited $EXIT_RC after SIGTERM"
  wait_exit rw || fail "peers --watch --reconnect ignored SIGTERM"
  ((EXIT_RC == 0)) || fail "peers --watch --reconnect exited $EXIT_RC after SIGTERM"
  kill -TERM "$(cat "$WORK/relay3.pid")"
}

test_relay_shutdown() {
  start_ready last respond --channel "$("$SB" uuid)" --echo
  kill -TERM "$RELAY_PID"
  wait_exit last || fail "respond still running after the relay shut down"
  ((EXIT_RC == 3)) || fail "respond exited $EXIT_RC when the relay went away, expected 3"
  wait_exit relay || fail "relay did not drain"
  ((EXIT_RC == 0)) || fail "relay exited $EXIT_RC"
}

ECHO_PEER=$READY_PEER
run_test "uuid prints random UUIDs" test_uuid
run_test "usage errors exit 2" test_usage_errors
run_test "echo round trip" test_echo_round_trip
run_test "0-byte body" test_empty_body
run_test "10 MiB random file echoes intact" test_10mib_checksum
run_test "respond -- tr a-z A-Z uppercases" test_command_tr
run_test "failing command gives APPLICATION(3), exit 23" test_command_failure
run_test "no responder: exit 11 at once" test_no_responders_at_once
run_test "--to an unknown peer: exit 11" test_to_unknown_peer
run_test "--to a known peer" test_to_known_peer
run_test "SWITCHBOARD_SERVER replaces --server" test_server_from_env
run_test "unreachable relay: exit 3" test_unreachable_relay
run_test "broadcast reaches two listeners" test_broadcast_two_listeners
run_test "peers --watch sees joined and left (SIGTERM and kill -9)" test_peers_watch
run_test "metadata reaches the command" test_metadata
run_test "deadline resets the request and stops the command" test_deadline_stops_command
run_test "ping prints the round-trip time" test_ping
run_test "ping an unreachable relay: exit 3" test_ping_unreachable
run_test "ping a silent listener: exit 3 after --timeout-ms" test_ping_timeout
run_test "respond exits 0 on SIGTERM" test_respond_sigterm
run_test "--reconnect survives a relay restart on the same port" test_reconnect_after_relay_restart
run_test "relay shutdown: respond exits 3" test_relay_shutdown

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
