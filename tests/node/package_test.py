"""The Node client as a package: `npm pack` it, install the tarball offline into a scratch
project (its dependencies from the npm cache, at the versions of clients/node's lockfile), then
run a CommonJS and an ES module program and the typed example, compiled by tsc --strict,
against a relay on ephemeral loopback ports.

Usage: package_test.py --server SWITCHBOARD_SERVER_BIN --work SCRATCH_DIR
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "clients" / "node"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "tests" / "admin_page"))
from relay_process import Relay  # noqa: E402

STEP_TIMEOUT_S = 120
# What the tarball must hold: both entry points, their types, the contract.
PACKAGED = {"package.json", "README.md", "index.js", "index.mjs", "index.d.ts", "index.d.mts",
            "proto/switchboard/v1/switchboard.proto"}

RESULTS = []


def run(argv, cwd, what, expect=()):
    """Runs `argv`, prints its output; records a failure when it exits nonzero or a line of
    `expect` is missing from its stdout."""
    print(f"--- {what}: {' '.join(str(a) for a in argv)}", flush=True)
    try:
        done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                              timeout=STEP_TIMEOUT_S, env=dict(os.environ, npm_config_fund="false",
                                                               npm_config_audit="false"))
        out, err, rc = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as timeout:
        out, err, rc = str(timeout.stdout or ""), str(timeout.stderr or ""), "timeout"
    sys.stdout.write(out)
    sys.stdout.write("".join(f"  (stderr) {line}\n" for line in err.splitlines()))
    missing = [line for line in expect if line not in out.splitlines()]
    ok = rc == 0 and not missing
    if missing:
        print(f"  missing lines: {missing}")
    print(f"--- {what}: {'ok' if ok else f'FAILED (exit {rc})'}", flush=True)
    RESULTS.append((what, ok))
    return ok, out


def scratch_lockfile(tarball):
    """package.json and package-lock.json of a project that depends on `tarball` alone, its
    dependency tree being the non-dev part of clients/node's lockfile: `npm ci --offline` then
    needs no registry metadata, only the tarballs setup.sh's `npm ci` left in the npm cache."""
    lock = json.loads((CLIENT / "package-lock.json").read_text())
    client = lock["packages"][""]
    spec = f"file:{tarball.name}"
    manifest = {"name": "switchboard-client-consumer", "private": True, "type": "module",
                "dependencies": {"switchboard-client": spec}}
    packages = {"": {"name": manifest["name"], "dependencies": manifest["dependencies"]},
                "node_modules/switchboard-client": {
                    "version": client["version"], "resolved": spec, "license": client["license"],
                    "dependencies": client["dependencies"], "engines": client.get("engines", {})}}
    for key, entry in lock["packages"].items():
        if key and not entry.get("dev"):
            packages[key] = entry
    return manifest, {"name": manifest["name"], "lockfileVersion": 3, "requires": True,
                      "packages": packages}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--work", required=True, type=Path)
    args = parser.parse_args()

    tsc = CLIENT / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        print(f"{tsc} missing: run scripts/setup.sh (npm ci in clients/node)")
        return 1
    shutil.rmtree(args.work, ignore_errors=True)
    pack_dir, app = args.work / "pack", args.work / "app"
    pack_dir.mkdir(parents=True)
    app.mkdir()

    ok, out = run(["npm", "pack", "--offline", "--json", "--pack-destination", pack_dir], CLIENT,
                  "npm pack")
    if not ok:
        return 1
    tarball = pack_dir / json.loads(out)[0]["filename"]
    with tarfile.open(tarball) as packed:
        names = {name.removeprefix("package/") for name in packed.getnames()}
    print(f"tarball {tarball.name}: {sorted(names)}")
    absent = PACKAGED - names
    RESULTS.append(("tarball holds both entry points, their types and the proto", not absent))
    if absent:
        print(f"  absent from the tarball: {sorted(absent)}")
    if (CLIENT / "proto").exists():
        print("clients/node/proto left behind by npm pack (postpack did not run)")
        RESULTS.append(("postpack removed the packed copy of the proto", False))

    shutil.copy(tarball, app / tarball.name)
    manifest, lock = scratch_lockfile(tarball)
    (app / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (app / "package-lock.json").write_text(json.dumps(lock, indent=2) + "\n")
    ok, _ = run(["npm", "ci", "--offline", "--no-audit", "--no-fund", "--loglevel=error"], app,
                "install the tarball offline")
    if not ok:
        print("hint: the npm cache lacks a dependency; `npm ci` in clients/node fills it")
        return 1
    for name in ("scenario.cjs", "check_cjs.cjs", "check_esm.mjs"):
        shutil.copy(HERE / name, app / name)
    shutil.copy(CLIENT / "examples" / "typed.ts", app / "typed.ts")

    # Types as an ES module consumer sees them (this project is "type": "module"), compiled.
    run([tsc, "--strict", "--module", "nodenext", "--moduleResolution", "nodenext", "--target",
         "es2022", "--types", "node", "--outDir", "out", "typed.ts"], app,
        "tsc --strict typed.ts against the installed package (ESM)")

    relay = Relay(args.server)
    try:
        grpc = relay.addresses["grpc"]
        print(f"relay: gRPC gateway on {grpc}", flush=True)
        run(["node", "check_cjs.cjs", grpc], app, "CommonJS: require('switchboard-client')",
            expect=["cjs: ok"])
        run(["node", "check_esm.mjs", grpc], app, "ES module: import from 'switchboard-client'",
            expect=["esm: ok"])
        if (app / "out" / "typed.js").exists():
            run(["node", "out/typed.js", "--server", grpc], app, "the compiled typed example",
                expect=["answer: HELLO FROM TYPESCRIPT",
                        "failed as asked: status=APPLICATION appCode=42",
                        "broadcast: delivered=1 dropped=0"])
    finally:
        relay.stop()
    rc = relay.process.returncode
    RESULTS.append((f"relay exits 0 on SIGTERM (got {rc})", rc == 0))

    passed = sum(1 for _, ok in RESULTS if ok)
    for what, ok in RESULTS:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    print(f"{passed} passed, {len(RESULTS) - passed} failed")
    return 0 if passed == len(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
