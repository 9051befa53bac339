#!/usr/bin/env bash
# Writes ThreadSanitizer suppressions for the uninstrumented gRPC stack a binary links:
# one called_from_lib line per gRPC/protobuf/upb/c-ares/abseil shared library (the exact file
# name from ldd, so each pattern matches exactly one library), plus the gRPC, protobuf and
# abseil namespaces. Usage: tsan-suppressions.sh OUTPUT BINARY...
set -euo pipefail
(($# > 1)) || { echo "usage: $0 OUTPUT BINARY..." >&2; exit 2; }
output=$1
shift
{
  for binary in "$@"; do
    ldd "$binary" | awk '{print $1}'
  done | grep -E '^lib(grpc|gpr|protobuf|upb|cares|absl_|address_sorting|re2)' | sort -u |
    sed 's/^/called_from_lib:/'
  printf '%s\n' 'race:grpc::' 'race:grpc_core::' 'race:google::protobuf::' 'race:absl::'
} >"$output.tmp"
mv "$output.tmp" "$output"
