#!/usr/bin/python3
"""The Python client as a user gets it: built and installed into a fresh venv, run against a
real relay.

Usage: python_client_test.py --server SWITCHBOARD_SERVER_BIN --work DIR [-v]

Creates DIR/venv (`python3 -m venv --system-site-packages`, over Debian's grpcio), installs
clients/python into it offline (`pip install --no-build-isolation --no-index`), checks what the
package carries (generated stubs, the .proto copy, py.typed, no import-time generator), type
checks it with mypy when Debian's mypy is there, starts a relay on ephemeral loopback ports,
then runs the cases (client_cases.py) and the README's examples with the venv's interpreter.
"""

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SOURCE = REPO / "clients" / "python"
WAIT = 15.0


def run(command, what, env=None, timeout=300, cwd=None):
    print(f"--- {what}: {' '.join(map(str, command))}", flush=True)
    done = subprocess.run(command, env=env, timeout=timeout, capture_output=True, text=True,
                          check=False, cwd=cwd)
    if done.returncode != 0:
        raise SystemExit(f"FAIL {what} (exit {done.returncode})\n{done.stdout}\n{done.stderr}")
    return done.stdout


def install(work):
    """A venv in `work` with the package installed from a copy of its sources."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # A copy, so that the in-tree build (build/, *.egg-info) lands in the build tree.
    source = work / "src"
    shutil.copytree(SOURCE, source,
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    venv = work / "venv"
    run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], "venv")
    env = dict(os.environ, SWITCHBOARD_PROTO_DIR=str(REPO / "proto"))
    run([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", str(source)], "pip install", env=env)
    return venv


def check_sdist(work):
    """An sdist carries its own copy of the .proto and installs from it alone."""
    dist = work / "dist"
    run([str(work / "venv" / "bin" / "python"), "setup.py", "-q", "sdist", "-d", str(dist)],
        "sdist", env=dict(os.environ, SWITCHBOARD_PROTO_DIR=str(REPO / "proto")),
        cwd=work / "src")
    (archive,) = dist.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    if not any(name.endswith("/proto/switchboard/v1/switchboard.proto") for name in names):
        raise SystemExit(f"FAIL sdist: no proto/ copy in {archive.name}")
    venv = work / "venv-sdist"
    run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], "venv (sdist)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    run([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", str(archive)], "pip install (sdist)", env=env)
    run([str(venv / "bin" / "python"), "-c", "import switchboard_client.aio"],
        "import (sdist)", env=env)
    print(f"ok sdist ({archive.name}: its own .proto, installs without the repository)",
          flush=True)


def check_contents(python):
    where = run([str(python), "-c", "import switchboard_client, os; "
                 "print(os.path.dirname(switchboard_client.__file__))"], "import").strip()
    package = Path(where)
    failures = []
    if "site-packages" not in package.parts:
        failures.append(f"imported from {package}, not the venv's site-packages")
    if not (package / "py.typed").is_file():
        failures.append("no py.typed")
    if (package / "_stubs.py").exists():
        failures.append("the import-time stub generator was installed")
    proto = package / "_proto" / "switchboard" / "v1"
    if not filecmp.cmp(proto / "switchboard.proto",
                       REPO / "proto" / "switchboard" / "v1" / "switchboard.proto", shallow=False):
        failures.append("the packaged .proto differs from proto/")
    for module in ("switchboard_pb2.py", "switchboard_pb2_grpc.py"):
        if not (proto / module).is_file():
            failures.append(f"no generated {module}")
    if failures:
        raise SystemExit("FAIL package contents: " + "; ".join(failures))
    print(f"ok package contents ({package})", flush=True)


def type_check(work, python):
    if subprocess.run(["/usr/bin/python3", "-m", "mypy", "--version"], capture_output=True,
                      check=False).returncode != 0:
        print("skip mypy: Debian's mypy is not installed", flush=True)
        return
    # The package's own annotations, strictly.
    run(["/usr/bin/python3", "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(work / "mypy-cache"), "--exclude", "_stubs[.]py$",
         "--config-file", str(work / "src" / "pyproject.toml"),
         str(work / "src" / "switchboard_client")], "mypy --strict (package)")
    # A user's code against the installed package: py.typed makes its hints visible.
    run(["/usr/bin/python3", "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(work / "mypy-cache"), "--python-executable", str(python),
         str(HERE / "typed_user.py")], "mypy --strict (a user of the installed package)")
    print("ok mypy", flush=True)


class Relay:
    """switchboard-server on ephemeral loopback ports; its output is drained continuously."""

    def __init__(self, binary):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        self.popen = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
             "--admin-listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, text=True)
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        self.grpc = self.wait_for(r"^listening grpc (\S+:\d+)$").group(1)

    def _drain(self):
        for line in self.popen.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pattern):
        regex = re.compile(pattern)
        with self.cond:
            exited = False
            for _ in range(int(WAIT / 0.1)):
                for line in self.lines:
                    found = regex.search(line)
                    if found:
                        return found
                if exited:
                    break
                self.cond.wait(0.1)
                exited = self.popen.poll() is not None
        raise SystemExit(f"FAIL relay: no {pattern!r}\n" + "\n".join(self.lines[-40:]))

    def stop(self):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.reader.join(5)


def readme_examples():
    """The README's runnable examples: its python blocks that end with a __main__ guard."""
    text = (SOURCE / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [block for block in blocks if 'if __name__ == "__main__":' in block]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    venv = install(args.work.resolve())
    python = venv / "bin" / "python"
    check_contents(python)
    check_sdist(args.work.resolve())
    type_check(args.work.resolve(), python)

    relay = Relay(args.server)
    print(f"relay: grpc {relay.grpc}", flush=True)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env["SWITCHBOARD_GRPC"] = relay.grpc
        command = [str(python), str(HERE / "client_cases.py"), "--grpc", relay.grpc]
        if args.verbose:
            command.append("-v")
        cases = subprocess.run(command, env=env, timeout=600, check=False)
        failed = cases.returncode != 0
        examples = readme_examples()
        if len(examples) < 2:
            print(f"FAIL README: {len(examples)} runnable examples, expected sync and asyncio")
            failed = True
        for number, example in enumerate(examples, 1):
            path = args.work / f"readme_example_{number}.py"
            path.write_text(example)
            done = subprocess.run([str(python), str(path)], env=env, timeout=60,
                                  capture_output=True, text=True, check=False)
            verdict = "ok" if done.returncode == 0 else "FAIL"
            print(f"{verdict} README example {number}: {done.stdout.strip()}", flush=True)
            if done.returncode != 0:
                print(done.stderr)
                failed = True
        if relay.popen.poll() is not None:
            print("FAIL the relay exited during the tests")
            failed = True
    finally:
        relay.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
