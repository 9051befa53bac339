#!/usr/bin/env bash
# Builds the Switchboard image with a Docker engine of its own and smoke-tests a container of it
# from the host: health check, native and gRPC traffic through published loopback ports, and a
# draining `docker stop`. Idempotent; cleans up its containers and engine. Needs root.
# Usage: docker/verify.sh [SWITCHBOARD_CLI]   (a host build of the CLI; default build/ci's)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cli=${1:-$root/build/ci/clients/cpp/switchboard}
image=${SWITCHBOARD_IMAGE:-switchboard:verify}
# Kept between runs: the engine's images and build cache (warm builds), the base rootfs, the linter.
data_root=${SWITCHBOARD_DOCKER_DATA:-/var/lib/switchboard-docker}
rootfs_cache=${SWITCHBOARD_ROOTFS_CACHE:-/var/cache/switchboard-rootfs}
tools_dir=${SWITCHBOARD_TOOLS_DIR:-/var/cache/switchboard-tools}
dockerfilelint_version=1.8.0
# The Debian client talks to the Debian engine and has BuildKit built in (no buildx plugin).
docker_bin=/usr/bin/docker

run_dir=
dockerd_pid=
created_bridge=0
host_pids=()
containers=()
phases=()
image_size_mb=0
compose_started=0

log() { echo "verify: $*"; }
die() {
  echo "verify: FAILED: $*" >&2
  exit 1
}

# phase NAME COMMAND...: runs COMMAND, records its wall time for the summary.
phase() {
  local name=$1 start elapsed
  shift
  start=$(date +%s%3N)
  log "--- $name"
  "$@"
  elapsed=$(($(date +%s%3N) - start))
  phases+=("$(printf '%-14s %5d.%d s' "$name" $((elapsed / 1000)) $((elapsed % 1000 / 100)))")
}

dk() { DOCKER_HOST=unix://$run_dir/docker.sock "$docker_bin" "$@"; }

cleanup() {
  local rc=$? pid name
  set +e
  for pid in "${host_pids[@]}"; do kill "$pid" 2>/dev/null; done
  if [[ -n $dockerd_pid ]]; then
    ((compose_started)) && compose down --timeout 10 >/dev/null 2>&1
    for name in "${containers[@]}"; do dk rm -f "$name" >/dev/null 2>&1; done
    kill "$dockerd_pid" 2>/dev/null
    for _ in $(seq 150); do running "$dockerd_pid" || break; sleep 0.2; done
    if running "$dockerd_pid"; then
      echo "verify: the engine ignored SIGTERM for 30 s; killing it" >&2
      kill -9 "$dockerd_pid" 2>/dev/null
    fi
  fi
  if ((created_bridge)); then ip link delete docker0 2>/dev/null; fi
  [[ -n $run_dir ]] && rm -rf "$run_dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ---------------------------------------------------------------------------------

install_tools() {
  [[ $(id -u) -eq 0 ]] || die "needs root (it starts a Docker engine)"
  "$root/scripts/setup.sh" --container-tools
  command -v npm >/dev/null || die "npm is missing (scripts/setup.sh installs Node)"
  if [[ ! -x $tools_dir/node_modules/.bin/dockerfilelint ]]; then
    mkdir -p "$tools_dir"
    npm install --prefix "$tools_dir" --no-audit --no-fund --loglevel=error \
      "dockerfilelint@$dockerfilelint_version"
  fi
  [[ -x $cli ]] || die "no host CLI at $cli (build the 'switchboard' target first)"
}

lint() {
  "$tools_dir/node_modules/.bin/dockerfilelint" "$root/docker/Dockerfile" ||
    die "dockerfilelint found issues in docker/Dockerfile"
}

# --- base image: Debian bookworm from the mirror apt already uses ----------------------------

apt_mirror() {
  local uri
  uri=$(grep -hoE '^(URIs:|deb) +(\[[^]]*\] +)?https?://[^ ]+/debian/?( |$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    2>/dev/null | grep -oE 'https?://[^ ]+' | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

make_rootfs() {
  local tarball=$rootfs_cache/bookworm-minbase.tar mirror tmp
  if [[ -s $tarball ]]; then
    log "rootfs cached: $tarball"
    return
  fi
  mirror=$(apt_mirror)
  mirror=${mirror%/}
  log "debootstrap from $mirror"
  mkdir -p "$rootfs_cache"
  tmp=$rootfs_cache/bookworm.tmp
  rm -rf "$tmp"
  debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$rootfs_cache/debootstrap.log" 2>&1 ||
    die "debootstrap failed: $(tail -5 "$rootfs_cache/debootstrap.log")"
  cat >"$tmp/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror}-security bookworm-security main
EOF
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
  tar -C "$tmp" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$tmp"
}

# --- the engine ----------------------------------------------------------------------------

start_engine() {
  run_dir=$(mktemp -d /tmp/sbdock.XXXXXX)
  mkdir -p "$data_root"
  ip link show docker0 >/dev/null 2>&1 || created_bridge=1
  # No iptables rules on the host: published ports go through docker-proxy, and the image build
  # uses the host's network.
  dockerd --data-root "$data_root" --exec-root "$run_dir/exec" --pidfile "$run_dir/dockerd.pid" \
    -H "unix://$run_dir/docker.sock" --iptables=false --ip-masq=false \
    >"$run_dir/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 300); do
    dk version >/dev/null 2>&1 && break
    running "$dockerd_pid" || die "dockerd exited: $(tail -5 "$run_dir/dockerd.log")"
    sleep 0.1
  done
  dk version >/dev/null 2>&1 || die "dockerd did not answer within 30 s"
  log "engine $(dk version -f '{{.Server.Version}}') pid $dockerd_pid, socket $run_dir/docker.sock"
}

import_base() {
  if dk image inspect debian:bookworm >/dev/null 2>&1; then
    log "debian:bookworm present"
    return
  fi
  dk import "$rootfs_cache/bookworm-minbase.tar" debian:bookworm >/dev/null
}

build_image() {
  DOCKER_BUILDKIT=1 DOCKER_HOST=unix://$run_dir/docker.sock "$docker_bin" build --progress=plain \
    --network host -f "$root/docker/Dockerfile" -t "$image" "$root" >"$run_dir/build.log" 2>&1 ||
    die "image build failed: $(tail -30 "$run_dir/build.log")"
  grep -E '^#[0-9]+ (DONE|CACHED)' "$run_dir/build.log" | tail -3 || true
  local bytes
  bytes=$(dk image inspect -f '{{.Size}}' "$image")
  image_size_mb=$((bytes / 1000000))
  log "image $image: $image_size_mb MB"
}

# --- the container -------------------------------------------------------------------------

# start_container NAME [docker run options] -- [relay args]: runs the image detached with every
# port published on an ephemeral loopback port, and a quick health-check interval.
start_container() {
  local name=$1
  shift
  containers+=("$name")
  dk run -d --name "$name" --health-interval 1s --health-start-period 2s \
    -p 127.0.0.1::7400 -p 127.0.0.1::7401 -p 127.0.0.1::7402 "$@" >/dev/null
}

published_port() { dk port "$1" "$2/tcp" | head -1 | sed 's/.*://'; }

# wait_healthy NAME: bounded wait (60 s) for the health check to pass.
wait_healthy() {
  local status
  for _ in $(seq 240); do
    status=$(dk inspect -f '{{.State.Health.Status}} {{.State.Running}}' "$1")
    [[ $status == "healthy true" ]] && return 0
    [[ $status == *false ]] && die "container $1 exited: $(dk logs "$1" 2>&1 | tail -20)"
    sleep 0.25
  done
  die "container $1 not healthy after 60 s ($status): $(dk inspect -f '{{json .State.Health}}' "$1")"
}

# wait_line REGEX FILE: bounded wait (10 s) for a line of FILE to match.
wait_line() {
  for _ in $(seq 200); do
    grep -qE -- "$1" "$2" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# running PID: the process exists and is not a zombie (bash may not have reaped it yet).
running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
  [[ -n $state && $state != Z ]]
}

# start_responder NAME ARGS...: a native `switchboard respond` on the host; waits for "ready".
start_responder() {
  local name=$1
  shift
  "$cli" "$@" >"$run_dir/$name.out" 2>"$run_dir/$name.err" &
  host_pids+=($!)
  wait_line '^ready peer=' "$run_dir/$name.err" ||
    die "responder $name not ready: $(cat "$run_dir/$name.err")"
}

run_container() {
  start_container sbverify-relay "$image"
  wait_healthy sbverify-relay
  core_port=$(published_port sbverify-relay 7400)
  grpc_port=$(published_port sbverify-relay 7401)
  log "healthy; core on 127.0.0.1:$core_port, gRPC on 127.0.0.1:$grpc_port"
  log "health check said: $(dk inspect -f '{{(index .State.Health.Log 0).Output}}' sbverify-relay)"
}

smoke_test() {
  local channel out
  "$cli" --server "127.0.0.1:$core_port" ping --timeout-ms 5000 || die "ping from the host failed"
  channel=$("$cli" uuid)
  start_responder upper --server "127.0.0.1:$core_port" respond --channel "$channel" -- tr a-z A-Z
  out=$(printf 'native through the container' | "$cli" --server "127.0.0.1:$core_port" send \
    --channel "$channel" --deadline-ms 10000)
  [[ $out == 'NATIVE THROUGH THE CONTAINER' ]] || die "native send got '$out'"
  log "native send -> native respond: '$out'"
  out=$(printf 'python through the container' | SWITCHBOARD_GRPC=127.0.0.1:$grpc_port \
    /usr/bin/python3 "$root/clients/python/examples/send.py" --channel "$channel" --timeout 10)
  [[ $out == 'PYTHON THROUGH THE CONTAINER' ]] || die "Python gRPC send got '$out'"
  log "Python gRPC send -> native respond: '$out'"
}

# The responder stays connected: the relay sends it GOAWAY, drains and exits 0; the responder
# then exits 3 (the relay went away).
stop_drains() {
  local code responder_rc=0
  dk stop -t 30 sbverify-relay >/dev/null
  code=$(dk inspect -f '{{.State.ExitCode}}' sbverify-relay)
  dk logs sbverify-relay >"$run_dir/relay.log" 2>&1
  ((code == 0)) || die "the relay exited $code on docker stop: $(tail -20 "$run_dir/relay.log")"
  grep -q 'relay drained' "$run_dir/relay.log" ||
    die "no 'relay drained' in the log: $(tail -20 "$run_dir/relay.log")"
  log "docker stop: exit code $code, log: $(grep -o 'relay drain.*' "$run_dir/relay.log" | tr '\n' ';')"
  grep -qE 'relay draining sessions=[1-9]' "$run_dir/relay.log" ||
    die "the responder's session was not open at the drain: $(tail -20 "$run_dir/relay.log")"
  for _ in $(seq 200); do
    running "${host_pids[0]}" || break
    sleep 0.05
  done
  ! running "${host_pids[0]}" || die "the responder still runs 10 s after the drain"
  wait "${host_pids[0]}" || responder_rc=$?
  host_pids=()
  ((responder_rc == 3)) || die "the responder exited $responder_rc after the drain, expected 3"
  log "the connected responder exited $responder_rc (relay gone)"
}

# Configuration from the environment and from a mounted file. A relay that reads --config and
# SWITCHBOARD_<KEY> itself gets the file passed by the entry point, and its admin port must
# answer /healthz; an older relay gets the environment as flags and refuses a mounted file.
relay_has_flag() {
  local help
  # Captured first: grep -q on the pipe would close it early and fail the pipeline.
  help=$(dk run --rm --entrypoint switchboard-server "$image" --help)
  grep -q -- "$1[ =,]" <<<"$help"
}

check_configuration() {
  local port out config_dir rc=0
  # A non-default core port from the environment; the health check follows it.
  start_container sbverify-env -e SWITCHBOARD_LISTEN=0.0.0.0:7500 -p 127.0.0.1::7500 "$image"
  wait_healthy sbverify-env
  port=$(published_port sbverify-env 7500)
  "$cli" --server "127.0.0.1:$port" ping --timeout-ms 5000 >/dev/null ||
    die "SWITCHBOARD_LISTEN=0.0.0.0:7500 not honoured"
  log "SWITCHBOARD_LISTEN moved the core port to 7500 (healthy, ping ok)"
  dk rm -f sbverify-env >/dev/null

  config_dir=$run_dir/config
  mkdir -p "$config_dir"
  printf 'log_level = "debug"\n' >"$config_dir/switchboard.toml"
  chmod -R a+rX "$config_dir"
  if relay_has_flag --config; then
    start_container sbverify-file -v "$config_dir:/etc/switchboard:ro" "$image"
    wait_healthy sbverify-file
    # The file sets log_level = "debug": the health check's connection is then logged. The
    # engine copies a container's output to its log asynchronously, so the line may show in
    # `docker logs` a little after the container turned healthy (bounded wait, 10 s).
    local logged=0
    for _ in $(seq 40); do
      # Captured first, as in relay_has_flag: grep -q could end the pipe early.
      out=$(dk logs sbverify-file 2>&1)
      if grep -q 'session open' <<<"$out"; then
        logged=1
        break
      fi
      sleep 0.25
    done
    ((logged)) || die "the mounted config file was not applied (no debug log line within 10 s)"
    log "mounted config file applied (log_level = debug from /etc/switchboard/switchboard.toml)"
    if relay_has_flag --admin-listen; then
      port=$(published_port sbverify-file 7402)
      out=$(/usr/bin/python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).status)' "http://127.0.0.1:$port/healthz")
      [[ $out == 200 ]] || die "admin /healthz answered $out"
      log "admin http://127.0.0.1:$port/healthz -> $out"
    fi
    dk rm -f sbverify-file >/dev/null
  else
    dk run --rm -v "$config_dir:/etc/switchboard:ro" "$image" >/dev/null 2>"$run_dir/file.err" ||
      rc=$?
    ((rc == 2)) || die "a mounted config file on a relay without --config: exit $rc, expected 2"
    grep -q 'has no --config option' "$run_dir/file.err" ||
      die "no clear message: $(cat "$run_dir/file.err")"
    log "this relay has no --config: a mounted file is refused with a clear message"
  fi
}

compose() {
  DOCKER_HOST=unix://$run_dir/docker.sock docker-compose -p sbverify \
    -f "$root/docker/compose.yaml" "$@"
}

# docker/compose.yaml as written, on ephemeral host ports, with the image just built: the
# sender's request must come back from the responder through the relay.
compose_check() {
  local rc=0
  compose config -q || die "docker/compose.yaml is invalid"
  dk tag "$image" switchboard:latest
  compose_started=1
  SWITCHBOARD_CORE_PORT='' SWITCHBOARD_GRPC_PORT='' SWITCHBOARD_ADMIN_PORT='' \
    DOCKER_HOST=unix://$run_dir/docker.sock timeout 180 docker-compose -p sbverify \
    -f "$root/docker/compose.yaml" up --no-build --no-color --exit-code-from sender \
    >"$run_dir/compose.log" 2>&1 || rc=$?
  ((rc == 0)) || die "compose up: sender exit $rc: $(tail -30 "$run_dir/compose.log")"
  grep -qE '^sender[-_0-9]* +\| hello from the sender at ' "$run_dir/compose.log" ||
    die "no echoed line from the sender: $(tail -30 "$run_dir/compose.log")"
  log "compose: $(grep -E '^sender[-_0-9]* +\| hello' "$run_dir/compose.log" | head -1)"
  compose down --timeout 40 >/dev/null 2>&1
  compose_started=0
}

phase tools install_tools
phase lint lint
phase rootfs make_rootfs
phase engine start_engine
phase base-image import_base
phase build build_image
phase run-healthy run_container
phase smoke smoke_test
phase stop-drain stop_drains
phase configuration check_configuration
phase compose compose_check

log "image size: $image_size_mb MB"
for line in "${phases[@]}"; do log "time $line"; done
log "all checks passed"
