"""The README's code blocks that are meant to run, run as written against a relay on ephemeral
loopback ports.

A block is marked in its info string, which GitHub ignores after the language:
  ```sh run=bash session=NAME    blocks of one session run in order as one `bash -e` script (a
                                 shell kept open, as in a terminal), from the repository root
  ```python run=python           /usr/bin/python3, from the repository root
  ```js run=node                 an ES module (node --input-type=module), from the repository root
The python and node blocks get CH, a channel with a responder that upper-cases requests. A line
that is only a comment right after a line of code is that code's expected output
(`# HELLO` in sh and python, `// HELLO` in js): it must appear as a line of the block's output.
The README's addresses and the release build's CLI directory are replaced by the test relay's
addresses and this build's CLI; SWITCHBOARD_SERVER and SWITCHBOARD_GRPC name the relay too.

Usage: readme_test.py --server SWITCHBOARD_SERVER_BIN --cli SWITCHBOARD_CLI_BIN --work DIR
"""

import argparse
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
sys.path.insert(0, str(REPO / "tests" / "admin_page"))
from relay_process import Relay  # noqa: E402

SNIPPET_TIMEOUT_S = 180
READY_TIMEOUT_S = 15
COMMENT = {"bash": "#", "python": "#", "node": "//"}


class Snippet:
    def __init__(self, line, language, attributes, code):
        self.line = line
        self.language = language
        self.run = attributes.get("run")
        self.session = attributes.get("session")
        self.code = code

    def expected(self):
        """Lines that are only a comment and follow a line of code."""
        marker = COMMENT[self.run]
        found, after_code = [], False
        for text in self.code.splitlines():
            stripped = text.strip()
            if stripped.startswith(marker) and after_code:
                found.append(stripped[len(marker):].strip())
            else:
                after_code = bool(stripped) and not stripped.startswith(marker)
        return found


def snippets(text):
    """Every fenced block whose info string has run=..., with its line number."""
    found, lines, at = [], text.splitlines(), 0
    while at < len(lines):
        opening = re.match(r"^```(\w+)(.*)$", lines[at])
        if not opening:
            at += 1
            continue
        end = at + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        attributes = dict(re.findall(r"(\w+)=(\S+)", opening.group(2)))
        if "run" in attributes:
            found.append(Snippet(at + 1, opening.group(1), attributes,
                                 "\n".join(lines[at + 1:end]) + "\n"))
        at = end + 1
    return found


def stop_group(process):
    """Ends what a snippet left running (background jobs included): its process group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue


def execute(argv, code, env, what):
    """Runs `argv` (with `code` on stdin, or none) in a process group of its own, and ends what
    it left running once it has exited; (exit code, stdout). Expected lines are looked for in
    stdout alone: background jobs write to stderr as they like, even mid-line."""
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=REPO, env=env,
                               stdin=subprocess.PIPE if code is not None else subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               errors="replace", start_new_session=True)
    output = {"out": [], "err": []}
    readers = [threading.Thread(target=lambda: output["out"].append(process.stdout.read()),
                                daemon=True),
               threading.Thread(target=lambda: output["err"].append(process.stderr.read()),
                                daemon=True)]
    for reader in readers:
        reader.start()
    if code is not None:
        process.stdin.write(code)
        process.stdin.close()
    try:
        rc = process.wait(timeout=SNIPPET_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        rc = f"timeout after {SNIPPET_TIMEOUT_S} s"
    stop_group(process)
    for reader in readers:
        reader.join(10)
    out, err = "".join(output["out"]), "".join(output["err"])
    print(f"--- output of {what} ({time.monotonic() - started:.1f} s):")
    sys.stdout.write("".join(f"  | {line}\n" for line in out.splitlines()))
    sys.stdout.write("".join(f"  | (stderr) {line}\n" for line in err.splitlines()))
    return rc, out


class Responder:
    """`switchboard respond -- tr a-z A-Z` on a new channel, once it has joined."""

    def __init__(self, cli, core):
        self.channel = str(uuid.uuid4())
        self.process = subprocess.Popen(
            [cli, "--server", core, "respond", "--channel", self.channel, "--", "tr", "a-z", "A-Z"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline, line = time.monotonic() + READY_TIMEOUT_S, ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stderr], [], [], 0.2)
            if ready:
                line = self.process.stderr.readline()
                if not line or line.startswith("ready peer="):
                    break
        if self.process.poll() is not None or not line.startswith("ready peer="):
            self.stop()
            raise RuntimeError(f"the responder did not join within {READY_TIMEOUT_S} s")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--cli", required=True)
    parser.add_argument("--work", required=True, type=Path)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)

    found = snippets(README.read_text())
    unknown = [s for s in found if s.run not in COMMENT or (s.run == "bash") != bool(s.session)]
    if not found or unknown:
        print(f"README.md: {len(found)} runnable blocks; badly marked: "
              f"{[s.line for s in unknown]} (want run=bash session=NAME, run=python, run=node)")
        return 1

    relay = Relay(args.server)
    cli_dir = str(Path(args.cli).resolve().parent)
    substitutions = [("build/release/clients/cpp", cli_dir),
                     ("127.0.0.1:7400", relay.addresses["core"]),
                     ("127.0.0.1:7401", relay.addresses["grpc"])]
    env = {key: value for key, value in os.environ.items() if not key.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_SERVER=relay.addresses["core"], SWITCHBOARD_GRPC=relay.addresses["grpc"],
               SWITCHBOARD_PY_STUBS=str(args.work / "python-stubs"))
    print("in the README's blocks: " + ", ".join(f"{a} -> {b}" for a, b in substitutions))

    # Sessions: bash blocks of one session run together; every other block alone.
    units, sessions = [], {}
    for snippet in found:
        if snippet.run == "bash" and snippet.session in sessions:
            sessions[snippet.session].append(snippet)
            continue
        units.append([snippet])
        if snippet.run == "bash":
            sessions[snippet.session] = units[-1]

    results = []
    try:
        for unit in units:
            first = unit[0]
            code = "".join(s.code for s in unit)
            for old, new in substitutions:
                code = code.replace(old, new)
            lines = ", ".join(str(s.line) for s in unit)
            what = (f"bash session '{first.session}' (README.md lines {lines})"
                    if first.run == "bash" else f"{first.run} block (README.md line {lines})")
            expected = [line for s in unit for line in s.expected()]
            print(f"\n=== {what}\n" + "".join(f"  > {line}\n" for line in code.splitlines()),
                  flush=True)
            responder = None
            stdin = code
            if first.run == "bash":
                # From a file: bash reads a script on stdin as it goes, and so would its commands.
                script = args.work / f"session-{first.session}.sh"
                script.write_text(code)
                argv, stdin = ["bash", "-e", str(script)], None
            elif first.run == "python":
                argv = ["/usr/bin/python3", "-"]
            else:
                argv = ["node", "--input-type=module"]
            unit_env = dict(env)
            if first.run != "bash":
                responder = Responder(args.cli, relay.addresses["core"])
                unit_env["CH"] = responder.channel
            try:
                rc, out = execute(argv, stdin, unit_env, what)
            finally:
                if responder:
                    responder.stop()
            printed = [line.strip() for line in out.splitlines()]
            missing = [line for line in expected if line not in printed]
            ok = rc == 0 and not missing
            print(f"--- {what}: exit {rc}; expected lines {expected}"
                  + (f"; MISSING {missing}" if missing else "") + f": {'ok' if ok else 'FAILED'}")
            results.append((what, ok))
    finally:
        relay.stop()

    passed = sum(1 for _, ok in results if ok)
    print()
    for what, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
