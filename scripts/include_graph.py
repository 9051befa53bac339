#!/usr/bin/env python3
"""Prints which layer of the relay includes which: the edges between the core, the doors, the
composition root and the client, with how many #include lines make each edge.

Usage: scripts/include_graph.py [ROOT]   (default: the repository this script is in)
A layer is named by the directory its file lives in; an include is resolved the way the build's
include paths resolve it. Lines `A -> B  n` mean files of A include n headers of B.
"""
import collections
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent.parent)
# Longest prefix wins: a layer name per source directory.
LAYERS = [
    ("core/wire", "core/wire"),
    ("core/auth", "core/auth"),
    ("core/registry", "core/registry"),
    ("core/relay", "core/relay"),
    ("core/transport", "core/transport"),
    ("core/cluster", "core/cluster"),
    ("cluster", "cluster directory"),
    ("core/net", "native door"),
    ("native", "native door"),
    ("grpc_gateway", "gRPC door"),
    ("core/server", "composition root"),
    ("server", "composition root"),
    ("clients/cpp", "client"),
]
INCLUDE_DIRS = ["core", ".", "core/wire/include", "clients/cpp/include", "clients/cpp/src"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(path: pathlib.Path):
    rel = path.relative_to(ROOT).as_posix()
    best = None
    for prefix, name in LAYERS:
        if rel == prefix or rel.startswith(prefix + "/"):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, name)
    return best[1] if best else None


def resolve(including: pathlib.Path, header: str):
    for base in [including.parent] + [ROOT / d for d in INCLUDE_DIRS]:
        candidate = (base / header).resolve()
        if candidate.is_file() and ROOT in candidate.parents:
            return candidate
    return None


edges = collections.Counter()
for source in sorted(ROOT.rglob("*")):
    if source.suffix not in (".hpp", ".cpp", ".h") or "build" in source.relative_to(ROOT).parts:
        continue
    origin = layer_of(source)
    if origin is None:
        continue
    for line in source.read_text(errors="replace").splitlines():
        match = INCLUDE.match(line)
        if not match:
            continue
        target = resolve(source, match.group(1))
        if target is None:
            continue
        dest = layer_of(target)
        if dest is not None and dest != origin:
            edges[(origin, dest)] += 1

for (origin, dest), count in sorted(edges.items()):
    print(f"{origin:18} -> {dest:18} {count}")
