#!/usr/bin/env bash
# Generates the Python gRPC stubs of the Switchboard gateway (and of grpc.health.v1) into
# OUT_DIR (default: <repo>/build/python-stubs), for the package used straight from the source
# tree, which otherwise does the same on first import. (An installed package carries stubs
# generated when it was built: see setup.py.)
# Usage: generate_stubs.sh [OUT_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-${SWITCHBOARD_PY_STUBS:-$ROOT/build/python-stubs}}
PLUGIN=${GRPC_PYTHON_PLUGIN:-/usr/bin/grpc_python_plugin}
HEALTH_DIR=${SWITCHBOARD_HEALTH_PROTO_DIR:-/usr/share/grpc-proto/grpc/health/v1}
mkdir -p "$OUT"
protoc -I "$ROOT/proto" --python_out="$OUT" --grpc_out="$OUT" \
  --plugin=protoc-gen-grpc="$PLUGIN" "$ROOT/proto/switchboard/v1/switchboard.proto"
if [[ -f $HEALTH_DIR/health.proto ]]; then
  protoc -I "$HEALTH_DIR" --python_out="$OUT" --grpc_out="$OUT" \
    --plugin=protoc-gen-grpc="$PLUGIN" "$HEALTH_DIR/health.proto"
fi
echo "$OUT"
