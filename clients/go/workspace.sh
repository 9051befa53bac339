#!/usr/bin/env bash
# Lays out the Go client's build workspace: a copy of the module whose generated stubs and
# vendor/ exist only here (never in the source tree), so `go build|test|vet -mod=vendor` runs
# offline against Debian's Go packages in /usr/share/gocode.
# Usage: workspace.sh SOURCE_DIR (clients/go) PROTO_DIR (proto) WORKSPACE_DIR
set -euo pipefail

src=$(cd "$1" && pwd)
proto=$(cd "$2" && pwd)
out=$3
gocode=${SWITCHBOARD_GOCODE:-/usr/share/gocode/src}
module=$(sed -n 's/^module //p' "$src/go.mod")

mkdir -p "$out"
out=$(cd "$out" && pwd)
cp "$src/go.mod" "$out/go.mod"
# The packages themselves: symlinks, so edits need no re-layout.
for dir in switchboard cmd examples; do
  [[ -d $src/$dir ]] && ln -sfn "$src/$dir" "$out/$dir"
done

# Stubs (the proto has no go_package: map it here).
pb=internal/switchboardpb
mapping=Mswitchboard/v1/switchboard.proto=$module/$pb
rm -rf "${out:?}/internal"
mkdir -p "$out/$pb"
protoc -I "$proto" --go_out="$out" --go_opt="module=$module" --go_opt="$mapping" \
  --go-grpc_out="$out" --go-grpc_opt="module=$module" --go-grpc_opt="$mapping" \
  switchboard/v1/switchboard.proto

# vendor/: every module go.mod requires, as a symlink to Debian's copy; modules.txt names each
# with the go version of its own go.mod (the language version its code is compiled with).
rm -rf "${out:?}/vendor"
mkdir -p "$out/vendor"
{
  sed -n 's/^\t\([^ ]*\) \(v[^ ]*\).*/\1 \2/p' "$src/go.mod" | while read -r path version; do
    [[ -f $gocode/$path/go.mod ]] || { echo "workspace.sh: $gocode/$path missing (scripts/setup.sh installs it)" >&2; exit 1; }
    mkdir -p "$out/vendor/$(dirname "$path")"
    ln -sfn "$gocode/$path" "$out/vendor/$path"
    goversion=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gocode/$path/go.mod")
    echo "# $path $version"
    echo "## explicit; go ${goversion:-1.11}"
  done
} > "$out/vendor/modules.txt"
