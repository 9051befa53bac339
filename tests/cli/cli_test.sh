#!/usr/bin/env bash
# End-to-end tests of the switchboard CLI against a relay of their own.
# Usage: cli_test.sh SERVER_BINARY SWITCHBOARD_BINARY
set -euo pipefail

SERVER_BIN=${1:?usage: cli_test.sh SERVER_BINARY SWITCHBOARD_BINARY}
SB=${2:?usage: cli_test.sh SERVER_BINARY SWITCHBOARD_BINARY}
README=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/README.md
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

# A closed loopback port: a port the kernel gave a listener of ours, closed again before use.
closed_port() {
  /usr/bin/python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

test_unreachable_relay() {
  local rc port command
  port=$(closed_port)
  for command in "send --channel $ECHO_CHANNEL" "listen --channel $ECHO_CHANNEL" \
    "peers --channel $ECHO_CHANNEL" "respond --echo --channel $ECHO_CHANNEL"; do
    rc=0
    # shellcheck disable=SC2086 # the command's words
    "$SB" --server "127.0.0.1:$port" $command </dev/null 2>"$WORK/unreach.err" || rc=$?
    ((rc == 4)) || fail "$command: exit $rc, expected 4 (cannot connect)"
    grep -qx "switchboard: cannot connect to 127.0.0.1:$port: .*" "$WORK/unreach.err" ||
      fail "$command: message: $(cat "$WORK/unreach.err")"
    ! grep -q PEER_GONE "$WORK/unreach.err" || fail "$command: reported as PEER_GONE"
  done
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

# peers and peers --watch observe: no member ever sees them.
test_peers_observe() {
  local channel member watcher listed
  channel=$("$SB" uuid)
  start_ready po1 respond --channel "$channel" --echo
  member=$READY_PEER
  start_ready pobs peers --channel "$channel" --watch
  watcher=$READY_PEER
  [[ $watcher != "$member" ]] || fail "the watcher reused the member's id"
  # A second observer's snapshot and a plain listing: the member only.
  start_ready pobs2 peers --channel "$channel" --watch
  wait_for "^$member\$" "$WORK/pobs2.out" || fail "the second watcher's snapshot lacks $member"
  listed=$(sb peers --channel "$channel")
  [[ $listed == "$member" ]] || fail "peers lists '$listed', expected only $member"
  # The observers' coming and going is no presence change: the first watcher sees none of it
  # (the second watcher's exit included), only the next member's join.
  kill -TERM "$BG_PID"
  wait_exit pobs2 || fail "the second watcher ignored SIGTERM"
  start_ready po2 respond --channel "$channel" --echo
  wait_for "^joined $READY_PEER version=" "$WORK/pobs.out" || fail "no joined line for $READY_PEER"
  [[ $(grep -cE '^(joined|left) ' "$WORK/pobs.out") == 1 ]] ||
    fail "the watcher saw other changes: $(cat "$WORK/pobs.out")"
  kill -TERM "$(cat "$WORK/pobs.pid")" "$(cat "$WORK/po1.pid")" "$(cat "$WORK/po2.pid")"
}

test_progress() {
  local rc=0
  head -c 3000000 /dev/urandom >"$WORK/progress.in"
  sb send --channel "$ECHO_CHANNEL" --progress <"$WORK/progress.in" >"$WORK/progress.out" \
    2>"$WORK/progress.err"
  cmp -s "$WORK/progress.in" "$WORK/progress.out" || fail "--progress changed stdout"
  grep -qE '^switchboard: sent 3000000 bytes, received 3000000 bytes in [0-9.]+ s \(.*/s\)$' \
    "$WORK/progress.err" || fail "no final progress line: $(cat "$WORK/progress.err")"
  # Not a terminal and not forced: nothing.
  sb send --channel "$ECHO_CHANNEL" <"$WORK/progress.in" >/dev/null 2>"$WORK/quiet.err"
  [[ ! -s $WORK/quiet.err ]] || fail "stderr not a terminal, yet: $(cat "$WORK/quiet.err")"
  sb send --channel "$ECHO_CHANNEL" --progress --no-progress </dev/null >/dev/null 2>&1 || rc=$?
  ((rc == 2)) || fail "--progress with --no-progress: exit $rc, expected 2"
  sb broadcast --channel "$("$SB" uuid)" --progress <"$WORK/progress.in" 2>"$WORK/bprog.err"
  grep -qE '^switchboard: sent 3000000 bytes in ' "$WORK/bprog.err" ||
    fail "broadcast: $(cat "$WORK/bprog.err")"
}

# The README's list of commands and the one in --help are the same.
test_help_lists_every_command() {
  local from_help from_readme
  from_help=$("$SB" --help | awk '/^Subcommands:/ { on = 1; next } on && NF == 0 { exit }
    on { print $1 }' | sort | tr '\n' ' ')
  # shellcheck disable=SC2016 # backquotes of Markdown, not of the shell
  from_readme=$(tr '\n' ' ' <"$README" |
    sed -n 's/.*`switchboard --help` lists every command: \([^.]*\)\..*/\1/p' |
    grep -o '`[a-z-]\+`' | tr -d '`' | sort | tr '\n' ' ')
  [[ -n $from_help ]] || fail "no Subcommands section in --help"
  [[ $from_help == "$from_readme" ]] ||
    fail "--help lists '$from_help', the README '$from_readme'"
}

# The processes of `respond -- CMD`'s process group: none may outlive the CLI.
group_members() { pgrep -g "$1" || true; }

# respond_group NAME MARKER: a responder whose command starts two sleeps and records its group;
# one request in flight. Sets GROUP.
respond_group() {
  local channel tries=200
  channel=$("$SB" uuid)
  # shellcheck disable=SC2016 # expanded by the command's shell
  start_ready "$1" respond --channel "$channel" -- \
    sh -c 'ps -o pgid= -p $$ >"$1.tmp"; mv "$1.tmp" "$1"; sleep 1000 & sleep 1000' sh "$WORK/$1.group"
  RESPOND_PID=$BG_PID
  spawn "$1-send" "$SB" --server "$ADDR" send --channel "$channel"
  while [[ ! -s $WORK/$1.group ]] && ((tries-- > 0)); do sleep 0.05; done
  GROUP=$(tr -d ' ' <"$WORK/$1.group")
  [[ -n $GROUP ]] || fail "the command did not start"
  tries=100
  while (($(group_members "$GROUP" | wc -l) < 3)) && ((tries-- > 0)); do sleep 0.05; done
  (($(group_members "$GROUP" | wc -l) >= 3)) || fail "group $GROUP: $(group_members "$GROUP")"
}

expect_group_gone() {
  local tries=200
  while [[ -n $(group_members "$1") ]] && ((tries-- > 0)); do sleep 0.05; done
  [[ -z $(group_members "$1") ]] || fail "left behind in group $1: $(ps -o pid,args -g "$1")"
}

test_respond_kill9_leaves_no_orphans() {
  respond_group orphan9
  kill -9 "$RESPOND_PID"
  expect_group_gone "$GROUP"
}

test_respond_sigterm_leaves_no_orphans() {
  respond_group orphanterm
  kill -TERM "$RESPOND_PID"
  wait_exit orphanterm || fail "respond ignored SIGTERM"
  expect_group_gone "$GROUP"
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
  local rc=0 port
  port=$(closed_port)
  "$SB" --server "127.0.0.1:$port" ping 2>"$WORK/ping.err" || rc=$?
  ((rc == 4)) || fail "exit $rc, expected 4"
  grep -qx "switchboard: cannot connect to 127.0.0.1:$port: .*" "$WORK/ping.err" ||
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
run_test "unreachable relay: 'cannot connect to', exit 4" test_unreachable_relay
run_test "broadcast reaches two listeners" test_broadcast_two_listeners
run_test "peers --watch sees joined and left (SIGTERM and kill -9)" test_peers_watch
run_test "peers and peers --watch observe without joining" test_peers_observe
run_test "--progress: final line on stderr, stdout untouched" test_progress
run_test "--help and the README list the same commands" test_help_lists_every_command
run_test "respond -- CMD: kill -9 of the CLI leaves no process of CMD's group" \
  test_respond_kill9_leaves_no_orphans
run_test "respond -- CMD: SIGTERM of the CLI leaves no process of CMD's group" \
  test_respond_sigterm_leaves_no_orphans
run_test "metadata reaches the command" test_metadata
run_test "deadline resets the request and stops the command" test_deadline_stops_command
run_test "ping prints the round-trip time" test_ping
run_test "ping an unreachable relay: exit 4" test_ping_unreachable
run_test "ping a silent listener: exit 3 after --timeout-ms" test_ping_timeout
run_test "respond exits 0 on SIGTERM" test_respond_sigterm
run_test "--reconnect survives a relay restart on the same port" test_reconnect_after_relay_restart
run_test "relay shutdown: respond exits 3" test_relay_shutdown

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
