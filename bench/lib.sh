# shellcheck shell=bash
# Shell helpers shared by the benchmark scripts (channels.sh, cores.sh, discrete.sh): a scratch
# directory whose background processes are stopped on exit, starting and waiting for them.
# Source it after setting SCRIPT (the name used in messages); it owns TMP and PIDS.

# bench_scratch: makes TMP and stops every process in PIDS when the script exits.
bench_scratch() {
  TMP=$(mktemp -d "/tmp/sb-${SCRIPT%.sh}.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}

# start_bg NAME CMD...: runs CMD in the background, stdout to $TMP/NAME.out, stderr to
# $TMP/NAME.err; sets BG_PID.
start_bg() {
  local name=$1
  shift
  : >"$TMP/$name.out"
  : >"$TMP/$name.err"
  "$@" >>"$TMP/$name.out" 2>>"$TMP/$name.err" &
  BG_PID=$!
  PIDS+=("$BG_PID")
}

# wait_file FILE REGEX [SECONDS]: until FILE has a line matching REGEX (15 s by default).
wait_file() {
  local tries=$((${3:-15} * 100))
  for _ in $(seq "$tries"); do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    sleep 0.01
  done
  echo "$SCRIPT: $1 never matched '$2'" >&2
  return 1
}

# wait_line NAME REGEX [SECONDS]: as wait_file on $TMP/NAME.out; prints NAME's stderr if not.
wait_line() {
  wait_file "$TMP/$1.out" "$2" "${3:-15}" && return 0
  cat "$TMP/$1.err" >&2 || true
  return 1
}

# stop_pid PID: SIGTERM, up to 4 s to exit, then SIGKILL.
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 200); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.02
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# cpu_us PID: its user + system CPU time so far, in µs (fields 14 and 15 of /proc/PID/stat).
cpu_us() {
  awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13) * 1000000 / hz}' \
    "/proc/$1/stat"
}

uuid() { cat /proc/sys/kernel/random/uuid; }
