#!/usr/bin/env bash
# Builds the Switchboard image with a Docker engine of its own and smoke-tests a container of it
# from the host: health check, native and gRPC traffic through published loopback ports, and a
# draining `docker stop`; then a three-relay cluster over etcd (docker/compose.cluster.yaml)
# through a stop, a restart and a kill of relays. Idempotent; cleans up its containers and
# engine. Needs root.
# Usage: docker/verify.sh [SWITCHBOARD_CLI]   (a host build of the CLI; default build/ci's)
set -Eeuo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cli=${1:-$root/build/ci/clients/cpp/switchboard}
image=${SWITCHBOARD_IMAGE:-switchboard:verify}
etcd_image=${SWITCHBOARD_ETCD_IMAGE:-switchboard-etcd:verify}
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
cluster_started=0

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
    # The cluster's clients first: they sit on the compose network that `down` removes.
    for name in "${containers[@]}"; do dk rm -f "$name" >/dev/null 2>&1; done
    ((cluster_started)) && cluster_compose down --timeout 10 >/dev/null 2>&1
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
# A command that fails outside a `die` (set -e; -E: in functions too) still says where.
trap 'echo "verify: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
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
  local file
  for file in Dockerfile Dockerfile.etcd; do
    "$tools_dir/node_modules/.bin/dockerfilelint" "$root/docker/$file" ||
      die "dockerfilelint found issues in docker/$file"
  done
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

# --- the cluster: docker/compose.cluster.yaml ------------------------------------------------
# The relays advertise their service names (relayN:7400), which only the compose network
# resolves: the clients run there, in containers of the image; the host reaches each relay's
# published admin port (/healthz) and etcd (through `docker exec`) to observe.

cluster_network=switchboard-cluster
declare -A relay_id=() admin_port=() channel=()
etcd_id=
payload=
payload_sum=

build_etcd_image() {
  local version
  DOCKER_BUILDKIT=1 DOCKER_HOST=unix://$run_dir/docker.sock "$docker_bin" build --progress=plain \
    --network host -f "$root/docker/Dockerfile.etcd" -t "$etcd_image" "$root/docker" \
    >"$run_dir/build-etcd.log" 2>&1 ||
    die "etcd image build failed: $(tail -30 "$run_dir/build-etcd.log")"
  # Captured whole: `| head -1` could close the pipe before the client is done writing.
  version=$(dk run --rm --entrypoint etcd "$etcd_image" --version)
  version=${version%%$'\n'*}
  log "image $etcd_image: $version, $(($(dk image inspect -f '{{.Size}}' "$etcd_image") / 1000000)) MB"
}

# docker-compose on the cluster file, every host port ephemeral (SWITCHBOARD_RELAYn_*_PORT empty).
cluster_cmd=()
cluster_compose() { "${cluster_cmd[@]}" "$@"; }

now_ms() { date +%s%3N; }

etcdctl_in() { dk exec "$etcd_id" etcdctl --endpoints http://127.0.0.1:2379 "$@"; }

# Node ids are HOSTNAME-XXXXXX (random per process) and each relay's hostname is its service
# name: `relay_of` gives the service of a node id.
relay_of() { sed -E 's/-[^-]+$//'; }

# holder CHANNEL_ID: the relay holding the channel's claim in etcd (empty: nobody).
holder() { etcdctl_in get --print-value-only "/switchboard/channels/$1" | relay_of; }

# members: the relays registered in etcd, by service name.
members() {
  etcdctl_in get --keys-only --prefix /switchboard/members/ |
    sed -n 's|^/switchboard/members/||p' | relay_of | tr '\n' ' ' | sed 's/ $//'
}

# node_ids: the same, as the relays call themselves.
node_ids() {
  etcdctl_in get --keys-only --prefix /switchboard/members/ |
    sed -n 's|^/switchboard/members/||p' | tr '\n' ' ' | sed 's/ $//'
}

# healthz RELAY: the status code of GET /healthz on the relay's published admin port (000: no
# answer).
healthz() {
  # shellcheck disable=SC2016  # the inner shell expands $1
  timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
    printf "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && read -r _ code _ <&3 &&
    echo "$code"' healthz "${admin_port[$1]}" 2>/dev/null || echo 000
}

# refresh_ports RELAY: its container and admin port (a restarted container gets new ports).
refresh_ports() {
  relay_id[$1]=$(cluster_compose ps -q "$1")
  [[ -n ${relay_id[$1]} ]] || die "no container for $1"
  admin_port[$1]=$(published_port "${relay_id[$1]}" 7402)
}

# wait_ready RELAY...: bounded wait (60 s each) for /healthz 200 from the host.
wait_ready() {
  local relay code
  for relay in "$@"; do
    code=000
    for _ in $(seq 240); do
      code=$(healthz "$relay")
      [[ $code == 200 ]] && break
      sleep 0.25
    done
    [[ $code == 200 ]] ||
      die "$relay: /healthz $code after 60 s: $(dk logs "${relay_id[$relay]}" 2>&1 | tail -20)"
  done
}

cluster_up() {
  local start relay n kind
  cluster_cmd=(env "DOCKER_HOST=unix://$run_dir/docker.sock")
  for n in 1 2 3; do
    for kind in CORE GRPC ADMIN; do cluster_cmd+=("SWITCHBOARD_RELAY${n}_${kind}_PORT="); done
  done
  cluster_cmd+=(docker-compose -p sbcluster -f "$root/docker/compose.cluster.yaml")
  cluster_compose config -q || die "docker/compose.cluster.yaml is invalid"
  dk tag "$image" switchboard:latest
  dk tag "$etcd_image" switchboard-etcd:latest
  cluster_started=1
  start=$(now_ms)
  # `up` starts the relays once etcd's health check passes.
  timeout 180 "${cluster_cmd[@]}" up -d --no-build --no-color >"$run_dir/cluster-up.log" 2>&1 ||
    die "cluster up failed: $(tail -30 "$run_dir/cluster-up.log")"
  etcd_id=$(cluster_compose ps -q etcd)
  for relay in relay1 relay2 relay3; do refresh_ports "$relay"; done
  wait_ready relay1 relay2 relay3
  log "etcd and three relays up, /healthz 200 on all three after $(($(now_ms) - start)) ms;" \
    "members in etcd: $(node_ids)"
  # The compose file's own health check (/healthz from inside, with bash's /dev/tcp) agrees.
  for relay in relay1 relay2 relay3; do wait_healthy "${relay_id[$relay]}"; done
  log "docker health: relay1, relay2 and relay3 healthy"
  for relay in relay1 relay2 relay3; do
    log "  $relay: admin 127.0.0.1:${admin_port[$relay]}, core 127.0.0.1:$(published_port "${relay_id[$relay]}" 7400)"
  done

  # The clients' container: `docker exec` in it is quicker than a container per send.
  containers+=(sbcluster-client)
  dk run -d --name sbcluster-client --network "$cluster_network" --entrypoint sleep "$image" \
    infinity >/dev/null
  payload=$run_dir/payload
  head -c 262144 /dev/urandom >"$payload"
  payload_sum=$(sha256sum <"$payload")
}

# start_cluster_responder LABEL CHANNEL_ID: an echoing `switchboard respond --reconnect` on the
# compose network that enters through relay1; waits (20 s) for it to be ready.
start_cluster_responder() {
  local name=sbcluster-resp-$1 out
  containers+=("$name")
  dk run -d --name "$name" --network "$cluster_network" --entrypoint switchboard "$image" \
    --server relay1:7400 respond --reconnect --channel "$2" --echo >/dev/null
  for _ in $(seq 80); do
    # Captured first: grep -q on the pipe could end it early.
    out=$(dk logs "$name" 2>&1)
    grep -q '^ready peer=' <<<"$out" && return 0
    sleep 0.25
  done
  die "responder $1 not ready within 20 s: $out"
}

# new_channel LABEL: a fresh channel whose responder entered through relay1 and was redirected
# to the relay serving it (channels served by relay1 are given up and another one drawn).
new_channel() {
  local label=$1 id owner try
  for try in $(seq 16); do
    id=$("$cli" uuid)
    start_cluster_responder "$label" "$id"
    owner=$(holder "$id")
    if [[ -n $owner && $owner != relay1 ]]; then
      channel[$label]=$id
      log "channel $label ($id): responder entered through relay1, served by $owner (draw $try)"
      return 0
    fi
    dk rm -f "sbcluster-resp-$label" >/dev/null
  done
  die "16 fresh channels were all served by relay1 (or not claimed): last holder '$owner'"
}

# echo_through RELAY LABEL [retry]: the payload sent on channel LABEL by a `switchboard send` that
# enters through RELAY must come back byte for byte. With `retry`, failures that a moving
# channel explains (3 relay gone or refused, 4 cannot connect, 11 no responder yet, 13 deadline)
# are retried for up to 30 s; without it the first send must succeed.
echo_through() {
  local relay=$1 label=$2 mode=${3:-once} out=$run_dir/echo.out err=$run_dir/echo.err
  local rc=0 attempt=0 start
  start=$(now_ms)
  while :; do
    attempt=$((attempt + 1))
    rc=0
    dk exec -i sbcluster-client switchboard --server "$relay:7400" send \
      --channel "${channel[$label]}" --deadline-ms 10000 <"$payload" >"$out" 2>"$err" || rc=$?
    ((rc == 0)) && break
    [[ $mode == retry ]] || die "send on $label through $relay: exit $rc: $(cat "$err")"
    case $rc in 3 | 4 | 11 | 13) ;; *) die "send on $label through $relay: exit $rc: $(cat "$err")" ;; esac
    (($(now_ms) - start < 30000)) ||
      die "send on $label through $relay: no echo within 30 s, last exit $rc: $(cat "$err")"
    sleep 0.25
  done
  [[ $(sha256sum <"$out") == "$payload_sum" ]] ||
    die "send on $label through $relay: the response differs from the request" \
      "($(stat -c %s "$out") bytes)"
  log "  $label through $relay: $(stat -c %s "$out") bytes echoed, sha256 equal" \
    "(attempt $attempt, $(($(now_ms) - start)) ms; served by $(holder "${channel[$label]}"))"
}

# locate RELAY LABEL: the gRPC Locate answer of RELAY (through its published port) for channel
# LABEL: "here", or "NODE_ID NATIVE_ADDRESS GRPC_ADDRESS" of the relay serving it.
locate() {
  /usr/bin/python3 - "$root/clients/python" "127.0.0.1:$(published_port "${relay_id[$1]}" 7401)" \
    "${channel[$2]}" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import grpc
from switchboard_client._pb import pb2, pb2_grpc
with grpc.insecure_channel(sys.argv[2]) as channel:
    stub = pb2_grpc.SwitchboardServiceStub(channel)
    answer = stub.Locate(pb2.LocateRequest(channel=sys.argv[3]), timeout=10)
print("here" if answer.here else
      "%s %s %s" % (answer.node_id, answer.native_address, answer.grpc_address))
PY
}

cluster_traffic() {
  local relay owner answer port out
  new_channel A
  for relay in relay1 relay2 relay3; do echo_through "$relay" A; done
  # gRPC from the host: every relay locates A at its owner's advertised addresses (names of the
  # compose network), and the owner's own published port serves A to a Python gRPC client.
  owner=$(holder "${channel[A]}")
  for relay in relay1 relay2 relay3; do
    answer=$(locate "$relay" A) || die "Locate through $relay failed"
    if [[ $relay == "$owner" ]]; then
      [[ $answer == here ]] || die "Locate through $owner, which serves A, answered '$answer'"
    else
      [[ $answer =~ ^$owner-[^\ ]+\ $owner:7400\ $owner:7401$ ]] ||
        die "Locate through $relay answered '$answer', expected $owner's addresses"
    fi
    log "  Locate A through $relay: $answer"
  done
  port=$(published_port "${relay_id[$owner]}" 7401)
  out=$(SWITCHBOARD_GRPC=127.0.0.1:$port /usr/bin/python3 \
    "$root/clients/python/examples/send.py" --channel "${channel[A]}" --timeout 10 <"$payload" |
    sha256sum) || die "Python gRPC send through $owner failed"
  [[ $out == "$payload_sum" ]] || die "Python gRPC send through $owner: the response differs"
  log "  A through $owner's gRPC port from the host (Python): $(stat -c %s "$payload") bytes" \
    "echoed, sha256 equal"
}

# The relay serving A drains: its peers are sent to the next owner, its lease is revoked.
stopped=
cluster_stop() {
  local state logs relay start survivors=()
  stopped=$(holder "${channel[A]}")
  log "docker-compose stop $stopped (it serves A)"
  start=$(now_ms)
  cluster_compose stop -t 40 "$stopped" >/dev/null 2>&1 || die "docker-compose stop $stopped failed"
  log "$stopped stopped after $(($(now_ms) - start)) ms"
  state=$(dk inspect -f '{{.State.Running}} {{.State.ExitCode}}' "${relay_id[$stopped]}")
  logs=$(dk logs "${relay_id[$stopped]}" 2>&1)
  [[ $state == "false 0" ]] || die "$stopped after stop: running/exit $state: $(tail -20 <<<"$logs")"
  grep -q 'relay drained' <<<"$logs" || die "no 'relay drained' in $stopped's log"
  grep -qE 'cluster left .*revoked=true' <<<"$logs" ||
    die "$stopped did not revoke its lease: $(grep cluster <<<"$logs" | tail -10)"
  log "$stopped: exit 0; $(grep -oE 'cluster leaving .*' <<<"$logs" | head -1);" \
    "$(grep -oE 'cluster left .*' <<<"$logs" | head -1)"
  [[ " $(members) " != *" $stopped "* ]] || die "$stopped is still a member: $(members)"
  log "members in etcd: $(members)"
  for relay in relay1 relay2 relay3; do [[ $relay == "$stopped" ]] || survivors+=("$relay"); done
  # A's responder follows the REDIRECT it was sent in the place of GOAWAY.
  for relay in "${survivors[@]}"; do echo_through "$relay" A retry; done
  new_channel B
  for relay in "${survivors[@]}"; do echo_through "$relay" B; done
}

# The stopped relay comes back; placement may move A or B to it again.
cluster_restart() {
  local relay label start
  start=$(now_ms)
  cluster_compose start "$stopped" >/dev/null 2>&1 || die "docker-compose start $stopped failed"
  refresh_ports "$stopped"
  wait_ready "$stopped"
  log "$stopped back: /healthz 200 after $(($(now_ms) - start)) ms; members in etcd: $(members)"
  for label in A B; do
    for relay in relay1 relay2 relay3; do echo_through "$relay" "$label" retry; done
  done
}

# A relay serving a channel is killed: nothing is handed over; its lease expires after the TTL
# and its channels' responders come back through relay1 to the new owner.
cluster_kill() {
  local victim='' label='' l relay state start survivors=() labels=(A B)
  for l in A B; do
    victim=$(holder "${channel[$l]}")
    if [[ -n $victim && $victim != relay1 ]]; then
      label=$l
      break
    fi
  done
  if [[ -z $label ]]; then
    new_channel C
    labels+=(C)
    label=C
    victim=$(holder "${channel[C]}")
  fi
  log "docker-compose kill $victim (SIGKILL; it serves $label)"
  start=$(now_ms)
  cluster_compose kill -s SIGKILL "$victim" >/dev/null 2>&1 || die "docker-compose kill failed"
  for _ in $(seq 120); do
    [[ " $(members) " == *" $victim "* ]] || break
    sleep 0.25
  done
  [[ " $(members) " != *" $victim "* ]] || die "$victim still a member 30 s after the kill"
  log "$victim's lease expired: gone from etcd $(($(now_ms) - start)) ms after the kill;" \
    "members: $(members)"
  state=$(dk inspect -f '{{.State.Running}} {{.State.ExitCode}}' "${relay_id[$victim]}")
  [[ $state == "false 137" ]] || die "$victim after the kill: running/exit $state"
  for relay in relay1 relay2 relay3; do [[ $relay == "$victim" ]] || survivors+=("$relay"); done
  # The killed relay's channel first, to time its return: its responder's connection dropped,
  # and it comes back through relay1 once the lease is gone and the new owner claims it.
  echo_through "${survivors[0]}" "$label" retry
  log "$label served again $(($(now_ms) - start)) ms after the kill; its responder said:" \
    "$(dk logs "sbcluster-resp-$label" 2>&1 | tail -2 | tr '\n' ';')"
  echo_through "${survivors[1]}" "$label" retry
  for l in "${labels[@]}"; do
    [[ $l == "$label" ]] && continue
    for relay in "${survivors[@]}"; do echo_through "$relay" "$l" retry; done
  done
  new_channel D
  for relay in "${survivors[@]}"; do echo_through "$relay" D; done
}

cluster_down() {
  local name
  for name in "${containers[@]}"; do dk rm -f "$name" >/dev/null 2>&1 || true; done
  containers=()
  cluster_compose down --timeout 40 >"$run_dir/cluster-down.log" 2>&1 ||
    die "cluster down failed: $(tail -20 "$run_dir/cluster-down.log")"
  cluster_started=0
  [[ -z $(dk ps -aq) ]] || die "containers left after down: $(dk ps -a)"
  ! dk network inspect "$cluster_network" >/dev/null 2>&1 || die "network $cluster_network left"
  log "cluster removed: no container, no network left"
}

# deploy/kubernetes/*.yaml parse (python3-yaml comes with docker-compose) and name what they
# hold. Nothing applies them to Kubernetes, but their settings run in plain containers: the
# etcd StatefulSet's arguments and the relay StatefulSet's environment with its ConfigMap
# mounted, for pod 0 in namespace `default`, the pod DNS names pointed at the containers with
# --add-host. The relay must register in etcd under the names it advertises, and the drain
# timeout it reads must be under the termination grace period.
kubernetes_check() {
  local dir=$run_dir/kubernetes grace printed drain etcd_ip value
  local etcd_name=switchboard-etcd-0.switchboard-etcd.default.svc.cluster.local
  local relay_name=switchboard-relay-0.switchboard-relay-peers.default.svc.cluster.local
  local -a etcd_args
  mkdir -p "$dir"
  /usr/bin/python3 - "$dir" "$root"/deploy/kubernetes/*.yaml <<'PY' ||
import os, sys, yaml
out = sys.argv[1]
found = set()

def expand(text, pod):
    return text.replace("$(POD_NAME)", pod).replace("$(POD_NAMESPACE)", "default")

def write(name, text):
    with open(os.path.join(out, name), "w") as f:
        f.write(text)
    found.add(name)

for path in sys.argv[2:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), path
        kind, name = d["kind"], d["metadata"]["name"]
        if kind == "ConfigMap" and name == "switchboard-relay":
            write("switchboard.toml", d["data"]["switchboard.toml"])
        if kind == "StatefulSet":
            pod = d["spec"]["template"]["spec"]
            container = pod["containers"][0]
            if name == "switchboard-etcd":
                write("etcd.args", "".join(expand(a, name + "-0") + "\n" for a in container["args"]))
            if name == "switchboard-relay":
                write("grace", "%d\n" % pod["terminationGracePeriodSeconds"])
                write("relay.env", "".join(
                    "%s=%s\n" % (e["name"], expand(e["value"], name + "-0"))
                    for e in container["env"] if "value" in e))
    print("verify:   %s: %s" % (os.path.basename(path),
          ", ".join("%s/%s" % (d["kind"], d["metadata"]["name"]) for d in docs)))
missing = {"switchboard.toml", "etcd.args", "grace", "relay.env"} - found
assert not missing, "not found: %s" % sorted(missing)
PY
    die "deploy/kubernetes: invalid manifests"
  chmod -R a+rX "$dir"

  printed=$(dk run --rm -v "$dir:/etc/switchboard:ro" --entrypoint switchboard-server "$image" \
    --config /etc/switchboard/switchboard.toml --print-config 2>&1) ||
    die "the relays' ConfigMap is refused: $printed"
  grace=$(<"$dir/grace")
  drain=$(sed -n 's/^drain_timeout = "\([0-9]*\)s"$/\1/p' <<<"$printed")
  [[ -n $drain ]] || die "drain_timeout in whole seconds expected: $(grep drain <<<"$printed")"
  ((grace > drain)) || die "terminationGracePeriodSeconds $grace is not above drain_timeout ${drain}s"
  log "  the relays' ConfigMap is accepted by the image's relay;" \
    "drain_timeout ${drain}s < terminationGracePeriodSeconds $grace"

  mapfile -t etcd_args <"$dir/etcd.args"
  containers+=(sbverify-k8s-etcd sbverify-k8s-relay)
  dk run -d --name sbverify-k8s-etcd --hostname switchboard-etcd-0 --health-interval 1s \
    --add-host "$etcd_name:127.0.0.1" "$etcd_image" "${etcd_args[@]}" >/dev/null
  wait_healthy sbverify-k8s-etcd
  etcd_ip=$(dk inspect -f '{{.NetworkSettings.IPAddress}}' sbverify-k8s-etcd)
  log "  etcd with the StatefulSet's arguments: healthy"
  dk run -d --name sbverify-k8s-relay --hostname switchboard-relay-0 \
    --env-file "$dir/relay.env" -v "$dir:/etc/switchboard:ro" \
    --add-host "switchboard-etcd-0.switchboard-etcd:$etcd_ip" "$image" >/dev/null
  for _ in $(seq 120); do
    value=$(dk exec sbverify-k8s-etcd etcdctl get --prefix --print-value-only /switchboard/members/)
    [[ -n $value ]] && break
    sleep 0.25
  done
  [[ $value =~ ^v1\ switchboard-relay-0-[^\ ]+\ $relay_name:7400\ $relay_name:7401$ ]] ||
    die "the relay with the StatefulSet's settings registered '$value': $(dk logs sbverify-k8s-relay 2>&1 | tail -10)"
  log "  a relay with the StatefulSet's environment and the ConfigMap registered: $value"
  dk rm -f sbverify-k8s-relay sbverify-k8s-etcd >/dev/null
}

phase tools install_tools
phase lint lint
phase rootfs make_rootfs
phase engine start_engine
phase base-image import_base
phase build build_image
phase build-etcd build_etcd_image
phase kubernetes kubernetes_check
phase run-healthy run_container
phase smoke smoke_test
phase stop-drain stop_drains
phase configuration check_configuration
phase compose compose_check
phase cluster-up cluster_up
phase cluster-echo cluster_traffic
phase cluster-stop cluster_stop
phase cluster-start cluster_restart
phase cluster-kill cluster_kill
phase cluster-down cluster_down

log "image size: $image_size_mb MB"
for line in "${phases[@]}"; do log "time $line"; done
log "all checks passed"
