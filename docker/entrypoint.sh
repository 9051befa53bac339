#!/bin/sh
# Container entry point: adds the mounted config file and the SWITCHBOARD_* environment to the
# relay's command line, then becomes the relay (PID 1, so `docker stop` drains it).
set -eu

server=/usr/local/bin/switchboard-server
config=${SWITCHBOARD_CONFIG_FILE:-/etc/switchboard/switchboard.toml}
help=$("$server" --help)

# has_flag FLAG: the relay accepts FLAG.
has_flag() {
  printf '%s\n' "$help" | grep -q -- "$1[ =,]"
}

# given FLAG ARGS...: FLAG is among the command's own arguments (CLI11 refuses it twice).
given() {
  flag=$1
  shift
  for arg in "$@"; do
    case $arg in "$flag" | "$flag"=*) return 0 ;; esac
  done
  return 1
}

if has_flag --config; then
  # The relay reads --config and SWITCHBOARD_<KEY> itself: pass only the file, when mounted.
  if [ -f "$config" ] && ! given --config "$@"; then
    set -- --config "$config" "$@"
  fi
else
  # A relay without --config: a mounted file cannot be honoured; say so instead of ignoring it.
  if [ -f "$config" ]; then
    echo "entrypoint: $config is mounted but this relay has no --config option" >&2
    exit 2
  fi
  # Turn each SWITCHBOARD_<KEY>=VALUE into --<key>=VALUE when the relay has that flag and the
  # command line does not already set it (so the image's 0.0.0.0 defaults apply).
  for name in $(env | sed -n 's/^\(SWITCHBOARD_[A-Z0-9_]*\)=.*/\1/p'); do
    [ "$name" = SWITCHBOARD_CONFIG_FILE ] && continue
    flag=--$(printf '%s' "${name#SWITCHBOARD_}" | tr 'A-Z_' 'a-z-')
    if ! has_flag "$flag"; then
      echo "entrypoint: this relay has no $flag; $name ignored" >&2
      continue
    fi
    given "$flag" "$@" && continue
    value=
    eval "value=\${$name}"
    set -- "$flag=$value" "$@"
  done
fi

exec "$server" "$@"
