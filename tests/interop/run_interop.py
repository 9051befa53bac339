#!/usr/bin/python3
"""Polyglot interop tests: native (switchboard CLI), Python, Node and Go peers on one relay.

Usage: run_interop.py --server SWITCHBOARD_SERVER_BIN --cli SWITCHBOARD_CLI_BIN
                      [--node node] [--go-peer SWITCHBOARD_GO_PEER_BIN]
                      [--filter SUBSTRING] [--skip-large] [--keep] [-v]

Starts its own relay (`--listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0`), generates the Python
stubs into a temporary directory, makes sure clients/node has its node_modules (one
`npm install` if missing), and checks that gRPC peers (Python, Node) and native peers talk as
equals: request/response both ways (0 B, 1 KiB, 64 MiB, sha256 both ways), broadcast from each
kind to every other kind, presence across transports, deadlines, cancellation, NO_RESPONDERS,
application errors, a gRPC reader that stops reading (bounded relay memory, no head-of-line
blocking), malformed first messages, and throughput figures. Prints an interop matrix and, as
the last line, `N passed, M failed`; exits nonzero on failure.
"""

import argparse
import collections
import hashlib
import os
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_PEER = REPO / "tests" / "interop" / "node_peer.js"
NODE_CLIENT = REPO / "clients" / "node"
KIB = 1024
MIB = 1024 * 1024
SIZES = [("0B", 0), ("1KiB", KIB), ("64MiB", 64 * MIB)]
WAIT = 10.0  # default bound for waiting on an event (seconds)

ARGS = None  # parsed command line
WORK = None  # scratch directory
RELAY = None  # the Relay
# Streams the suite saw complete with OK through the main relay, by the door they entered.
COMPLETED = {"native": 0, "grpc": 0}
CLIENT = None  # a switchboard_client.Client on the relay's gateway
sb = None  # the switchboard_client module (imported once the stubs exist)
PROCS = []  # every process spawned, for cleanup
PROCS_LOCK = threading.Lock()


def log(text):
    if ARGS is not None and ARGS.verbose:
        print(f"    # {text}", file=sys.stderr, flush=True)


def new_channel():
    return str(uuid.uuid4())


def random_blocks(size, block=MIB):
    """Yields `size` random bytes in blocks (never the whole body at once)."""
    left = size
    while left > 0:
        piece = os.urandom(min(block, left))
        left -= len(piece)
        yield piece


def sha(data=b""):
    return hashlib.sha256(data).hexdigest()


EMPTY_SHA = sha()


# ---- processes -----------------------------------------------------------------------------


class Proc:
    """A child process whose stdout/stderr lines are collected by reader threads."""

    def __init__(self, name, argv, stdin=True, env=None, cwd=None, binary_out=False):
        self.name = name
        self.out_hash = hashlib.sha256()  # with binary_out: stdout is hashed, not split in lines
        self.out_bytes = 0
        self.argv = [str(a) for a in argv]
        self.cond = threading.Condition()
        self.lines = {"out": [], "err": []}
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or child_env(), cwd=cwd)
        with PROCS_LOCK:
            PROCS.append(self)
        self.readers = [threading.Thread(target=self._pump_binary if binary_out else self._pump,
                                         args=(self.popen.stdout, "out"), daemon=True),
                        threading.Thread(target=self._pump, args=(self.popen.stderr, "err"),
                                         daemon=True)]
        for reader in self.readers:
            reader.start()

    @property
    def pid(self):
        return self.popen.pid

    def _pump(self, stream, key):
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            log(f"{self.name}.{key}: {line}")
            with self.cond:
                self.lines[key].append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _pump_binary(self, stream, _key):
        while True:
            chunk = stream.read1(MIB)
            if not chunk:
                break
            with self.cond:
                self.out_hash.update(chunk)
                self.out_bytes += len(chunk)

    def snapshot(self, key="out"):
        with self.cond:
            return list(self.lines[key])

    def describe(self):
        rc = self.popen.poll()
        out = "\n".join(self.snapshot("out")[-15:])
        err = "\n".join(self.snapshot("err")[-15:])
        return f"[{self.name} pid {self.pid} rc {rc}]\nstdout:\n{out}\nstderr:\n{err}"

    def wait_for(self, pattern, key="out", timeout=WAIT, start=0):
        """The first match of `pattern` in lines[start:] of `key`; AssertionError after
        `timeout` seconds (or as soon as the process has exited without it)."""
        regex = re.compile(pattern)
        limit = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[key][start:]:
                    found = regex.search(line)
                    if found:
                        return found
                left = limit - time.monotonic()
                exited = self.popen.poll() is not None and not any(
                    reader.is_alive() for reader in self.readers)
                if left <= 0 or exited:
                    raise AssertionError(f"{self.name}: no line matching {pattern!r} on {key} "
                                         f"within {timeout} s\n{self.describe()}")
                self.cond.wait(min(left, 0.1))

    def count(self, pattern, key="out"):
        regex = re.compile(pattern)
        return sum(1 for line in self.snapshot(key) if regex.search(line))

    def wait_exit(self, timeout=WAIT):
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=5.0):
        """Ends the process: stdin closed, then SIGTERM, then SIGKILL (bounded)."""
        if self.popen.poll() is None:
            try:
                if self.popen.stdin:
                    self.popen.stdin.close()
            except OSError:
                pass
            if self.wait_exit(0.3) is None:
                self.popen.terminate()
                if self.wait_exit(timeout) is None:
                    self.popen.kill()
                    self.wait_exit(timeout)
        for reader in self.readers:
            reader.join(2.0)
        return self.popen.returncode


def child_env():
    env = dict(os.environ)
    env.pop("SWITCHBOARD_SERVER", None)
    env["SWITCHBOARD_PY_STUBS"] = str(WORK / "stubs") if WORK else env.get("SWITCHBOARD_PY_STUBS", "")
    return env


def relay_env():
    """The relay reads every SWITCHBOARD_* variable as configuration: pass it none of ours."""
    return {key: value for key, value in child_env().items()
            if not key.startswith("SWITCHBOARD_")}


def cleanup_processes():
    with PROCS_LOCK:
        procs = list(PROCS)
    for proc in procs:
        if proc.popen.poll() is None:
            try:
                proc.popen.kill()  # by its own pid only
                proc.popen.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def pid_gone(pid):
    """True if `pid` no longer runs (absent, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def wait_until(predicate, timeout=WAIT, interval=0.05):
    limit = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= limit:
            return False
        time.sleep(interval)


# ---- the relay -----------------------------------------------------------------------------


class Relay:
    def __init__(self, binary, extra_args=(), name="relay", extra=()):
        self.slow_consumer_s = 2.0
        self.drain_s = 5.0
        self.proc = Proc(name, [binary, "--listen", "127.0.0.1:0",
                                "--grpc-listen", "127.0.0.1:0",
                                "--admin-listen", "127.0.0.1:0",
                                "--slow-consumer-timeout-ms",
                                str(int(self.slow_consumer_s * 1000)),
                                "--drain-timeout-ms", str(int(self.drain_s * 1000)),
                                *extra_args, *extra],
                         stdin=False, env=relay_env())
        core = self.proc.wait_for(r"^listening core (\S+:\d+)$", timeout=15)
        grpc_line = self.proc.wait_for(r"^listening grpc (\S+:\d+)$", timeout=15)
        admin_line = self.proc.wait_for(r"^listening admin (\S+:\d+)$", timeout=15)
        self.core = core.group(1)
        self.grpc = grpc_line.group(1)
        self.admin = admin_line.group(1)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.popen.poll() is None

    def rss_kib(self):
        return vm_rss_kib(self.pid)


# ---- native peers (the switchboard CLI) ----------------------------------------------------


def cli(*args):
    return [ARGS.cli, "--server", RELAY.core, *args]


def native_ready(name, *args):
    """Starts `switchboard ARGS` and waits for its ready line; returns (Proc, peer id)."""
    proc = Proc(name, cli(*args))
    found = proc.wait_for(r"^ready peer=(\S+) channel=", key="err", timeout=WAIT)
    return proc, found.group(1)


SendResult = collections.namedtuple(
    "SendResult", "rc sent_bytes sent_sha received_bytes received_sha stderr elapsed")


def native_send(channel, size=0, args=(), timeout=120.0, body=None):
    """`switchboard send` with `size` random bytes (or the iterable `body`) streamed on stdin;
    hashes what it wrote and what came back."""
    popen = subprocess.Popen(cli("send", "--channel", channel, *args), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    sent, received = hashlib.sha256(), hashlib.sha256()
    counts = {"sent": 0, "received": 0}
    errors = []

    def writer():
        try:
            for block in (body if body is not None else random_blocks(size)):
                popen.stdin.write(block)
                sent.update(block)
                counts["sent"] += len(block)
        except (BrokenPipeError, OSError):
            pass
        finally:
            try:
                popen.stdin.close()
            except OSError:
                pass

    def reader():
        while True:
            chunk = popen.stdout.read1(MIB)
            if not chunk:
                return
            received.update(chunk)
            counts["received"] += len(chunk)

    def err_reader():
        errors.append(popen.stderr.read().decode(errors="replace"))

    started = time.monotonic()
    threads = [threading.Thread(target=t, daemon=True) for t in (writer, reader, err_reader)]
    for thread in threads:
        thread.start()
    try:
        rc = popen.wait(timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(5)
        raise AssertionError(f"switchboard send did not finish within {timeout} s")
    elapsed = time.monotonic() - started
    for thread in threads:
        thread.join(10)
    if rc == 0 and RELAY is not None and RELAY.core in popen.args:
        COMPLETED["native"] += 1
    return SendResult(rc, counts["sent"], sent.hexdigest(), counts["received"],
                      received.hexdigest(), "".join(errors), elapsed)


# ---- Node peers ----------------------------------------------------------------------------


def node_proc(name, role, channel, *extra, server=None):
    return Proc(name, [ARGS.node, NODE_PEER, role, "--server", server or RELAY.grpc,
                       "--channel", channel, *extra])


def node_ready(name, role, channel, *extra):
    proc = node_proc(name, role, channel, *extra)
    found = proc.wait_for(r"^ready (\S+) (\d+)$", timeout=20)
    return proc, found.group(1)


NodeStatus = collections.namedtuple("NodeStatus", "code status app_code elapsed_ms message")


def node_status(proc, timeout=WAIT):
    found = proc.wait_for(r"^status (\S+) (\S+) (\S+) (\d+) (.*)$", timeout=timeout)
    return NodeStatus(*found.groups())


def node_run(role, channel, *extra, timeout=120.0, server=None):
    """Runs a one-shot node_peer role (send, broadcast) to its end; returns the Proc."""
    proc = node_proc(f"node-{role}", role, channel, *extra, server=server)
    if proc.wait_exit(timeout) is None:
        proc.stop()
        raise AssertionError(f"node {role} did not finish within {timeout} s\n{proc.describe()}")
    for reader in proc.readers:
        reader.join(5)
    return proc


# ---- Python peers --------------------------------------------------------------------------


class PyEcho:
    """A Python Respond session that echoes each request and records what it saw."""

    def __init__(self, channel, mode="echo", with_broadcasts=True, client=None):
        self.requests = queue.Queue()  # one record per request, when its handler is done
        self.started = queue.Queue()  # each request's id as its handler starts
        self.broadcasts = queue.Queue()
        self.presence = queue.Queue()
        self.mode = mode
        self.session = (client or CLIENT).respond(
            channel, self._handle, on_presence=self.presence.put,
            on_broadcast=self._broadcast if with_broadcasts else None)
        self.peer_id = self.session.peer_id

    def _handle(self, request):
        self.started.put(request.id)
        digest, size = hashlib.sha256(), 0
        if self.mode == "never":
            reset = request.wait_reset(120)
            self.requests.put({"metadata": request.metadata, "sender": request.sender,
                               "deadline_ms": request.deadline_ms, "reset": reset,
                               "bytes": 0, "sha": EMPTY_SHA})
            return None
        if self.mode == "fail":
            body = request.read()
            raise sb.ApplicationError(7, f"refused {len(body)} bytes")
        for chunk in request:
            digest.update(chunk)
            size += len(chunk)
            request.write(chunk)
        self.requests.put({"metadata": request.metadata, "sender": request.sender,
                           "deadline_ms": request.deadline_ms, "reset": request.reset,
                           "bytes": size, "sha": digest.hexdigest()})
        return None

    def _broadcast(self, message):
        digest, size = hashlib.sha256(), 0
        for chunk in message:
            digest.update(chunk)
            size += len(chunk)
        self.broadcasts.put((message.sender, size, digest.hexdigest()))

    def close(self):
        self.session.close()


def get(q, timeout=WAIT, what="an event"):
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no {what} within {timeout} s") from None


def py_send(channel, size, target=None, timeout=None, metadata=None, body=None):
    """Python Send streaming `size` random bytes; returns (sent_sha, received_bytes,
    received_sha); raises SwitchboardError."""
    sent = hashlib.sha256()

    def generate():
        for block in (body if body is not None else random_blocks(size)):
            sent.update(block)
            yield block

    received, count = hashlib.sha256(), 0
    for chunk in CLIENT.send_stream(channel, generate(), target=target, timeout=timeout,
                                    metadata=metadata):
        received.update(chunk)
        count += len(chunk)
    COMPLETED["grpc"] += 1
    return sent.hexdigest(), count, received.hexdigest()


# ---- the matrix ----------------------------------------------------------------------------


def cell(area, sender, receiver, case):
    """Labels a test method with its interop matrix row."""
    def mark(function):
        function.matrix = (area, sender, receiver, case)
        return function
    return mark


class MatrixResult(unittest.TextTestResult):
    rows = []

    def _record(self, test, outcome, detail=""):
        method = getattr(test, getattr(test, "_testMethodName", ""), None)
        row = getattr(method, "matrix", None) or ("other", "-", "-", str(test))
        MatrixResult.rows.append((row, outcome, detail))

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "PASS")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "FAIL", str(err[1]).splitlines()[0] if str(err[1]) else "")

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "ERROR", f"{err[0].__name__}: {str(err[1]).splitlines()[0] if str(err[1]) else ''}")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "SKIP", reason)


FIGURES = []  # (label, value) printed after the matrix


class InteropCase(unittest.TestCase):
    maxDiff = 2000

    def setUp(self):
        self.assertTrue(RELAY.alive(), f"the relay has died:\n{RELAY.proc.describe()}")
        self.cleanups_procs = []
        self.sessions = []

    def tearDown(self):
        for session in self.sessions:
            try:
                session.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
        for proc in self.cleanups_procs:
            proc.stop()

    def track(self, proc):
        self.cleanups_procs.append(proc)
        return proc

    def py_session(self, channel, **kwargs):
        session = PyEcho(channel, **kwargs)
        self.sessions.append(session)
        return session

    def native(self, name, *args):
        proc, peer = native_ready(name, *args)
        self.track(proc)
        return proc, peer

    def node(self, name, role, channel, *extra):
        proc, peer = node_ready(name, role, channel, *extra)
        self.track(proc)
        return proc, peer

    def assert_error(self, error, code_name, status, what):
        self.assertEqual(error.code.name if error.code else None, code_name,
                         f"{what}: gRPC code ({error})")
        if status is not None:
            self.assertEqual(error.status, status, f"{what}: switchboard-status trailer ({error})")


# ---- request/response ----------------------------------------------------------------------


class SendEcho(InteropCase):
    """Echo round trips across transports, sha256-checked at the responder and the sender."""

    def native_to_python(self, size):
        channel = new_channel()
        responder = self.py_session(channel)
        tag = uuid.uuid4().hex
        result = native_send(channel, size, args=("--meta", f"tag={tag}"))
        self.assertEqual(result.rc, 0, f"switchboard send failed: {result.stderr}")
        seen = get(responder.requests, what="request at the Python responder")
        self.assertEqual(seen["metadata"].get("tag"), tag, "metadata did not cross")
        self.assertTrue(seen["sender"], "a native sender has a peer id")
        self.assertEqual((seen["bytes"], seen["sha"]), (result.sent_bytes, result.sent_sha),
                         "request body at the Python responder")
        self.assertEqual((result.received_bytes, result.received_sha),
                         (result.sent_bytes, result.sent_sha), "echoed response at the native sender")

    def native_to_node(self, size):
        channel = new_channel()
        responder, _ = self.node("node-respond", "respond", channel, "--mode", "echo")
        result = native_send(channel, size)
        self.assertEqual(result.rc, 0, f"switchboard send failed: {result.stderr}")
        line = responder.wait_for(r"^request \S+ (\S+) (\d+) (\S+) \d+ (\S+)$")
        sender, count, digest, outcome = line.groups()
        self.assertNotEqual(sender, "-", "a native sender has a peer id")
        self.assertEqual(outcome, "ok")
        self.assertEqual((int(count), digest), (result.sent_bytes, result.sent_sha),
                         "request body at the Node responder")
        self.assertEqual((result.received_bytes, result.received_sha),
                         (result.sent_bytes, result.sent_sha), "echoed response at the native sender")

    def python_to_native(self, size):
        channel = new_channel()
        self.native("native-echo", "respond", "--channel", channel, "--echo")
        sent, count, received = py_send(channel, size)
        self.assertEqual((count, received), (size, sent), "echoed response at the Python sender")

    def node_to_native(self, size):
        channel = new_channel()
        self.native("native-echo", "respond", "--channel", channel, "--echo")
        proc = node_run("send", channel, "--size", str(size))
        status = node_status(proc)
        self.assertEqual(status.code, "OK", f"Node send: {status}\n{proc.describe()}")
        sent = proc.wait_for(r"^sent (\d+) (\S+)$").groups()
        received = proc.wait_for(r"^received (\d+) (\S+)$").groups()
        self.assertEqual(sent, (str(size), sent[1]))
        self.assertEqual(received, sent, "echoed response at the Node sender")

    @cell("send", "python", "node", "1KiB echo")
    def test_python_to_node(self):
        channel = new_channel()
        responder, _ = self.node("node-respond", "respond", channel, "--mode", "echo")
        sent, count, received = py_send(channel, KIB)
        self.assertEqual((count, received), (KIB, sent))
        line = responder.wait_for(r"^request \S+ \S+ (\d+) (\S+) \d+ ok$")
        self.assertEqual(line.groups(), (str(KIB), sent))

    @cell("send", "node", "python", "1KiB echo")
    def test_node_to_python(self):
        channel = new_channel()
        responder = self.py_session(channel)
        proc = node_run("send", channel, "--size", str(KIB))
        status = node_status(proc)
        self.assertEqual(status.code, "OK", f"Node send: {status}")
        sent = proc.wait_for(r"^sent (\d+) (\S+)$").groups()
        self.assertEqual(proc.wait_for(r"^received (\d+) (\S+)$").groups(), sent)
        seen = get(responder.requests)
        self.assertEqual((str(seen["bytes"]), seen["sha"]), sent)


def _add_size_tests():
    for label, size in SIZES:
        for kind, sender, receiver in (("native_to_python", "native", "python"),
                                       ("native_to_node", "native", "node"),
                                       ("python_to_native", "python", "native"),
                                       ("node_to_native", "node", "native")):
            def test(self, kind=kind, size=size):
                if size > MIB and ARGS.skip_large:
                    self.skipTest("--skip-large")
                getattr(self, kind)(size)
            test.__name__ = f"test_{kind}_{label}"
            setattr(SendEcho, test.__name__, cell("send", sender, receiver, f"{label} echo")(test))


_add_size_tests()


class SendDetails(InteropCase):
    """What a responder sees (metadata, sender, deadline) and application errors."""

    @cell("send", "python", "native", "metadata, sender id, deadline reach the command")
    def test_python_metadata_to_native(self):
        channel = new_channel()
        self.native("native-env", "respond", "--channel", channel, "--",
                    "sh", "-c", 'printf "%s|%s|%s" "$SWITCHBOARD_META_tag" "$SWITCHBOARD_SENDER" '
                                '"$SWITCHBOARD_DEADLINE_MS"')
        speaker = self.py_session(channel)  # a Respond peer the Send speaks for
        # Two responders now: aim at the native one by id.
        native_id = next(p for p in CLIENT.list_peers(channel).peers if p != speaker.peer_id)
        answer = CLIENT.send(channel, b"", target=native_id, timeout=10.0,
                             metadata={"tag": "from-python"}, sender_peer_id=speaker.peer_id)
        tag, sender, deadline = answer.decode().split("|")
        self.assertEqual(tag, "from-python")
        self.assertEqual(sender, speaker.peer_id, "sender_peer_id reaches the native responder")
        # gRPC encodes grpc-timeout with 3 significant digits, rounding up (10 s -> "10100m"
        # at worst): allow that much over.
        self.assertTrue(5000 < int(deadline) <= 10100, f"deadline_ms seen natively: {deadline}")

    @cell("send", "python", "native", "an anonymous sender is an empty SWITCHBOARD_SENDER")
    def test_python_anonymous_sender_to_native(self):
        channel = new_channel()
        self.native("native-anon", "respond", "--channel", channel, "--",
                    "sh", "-c", 'printf "[%s]" "${SWITCHBOARD_SENDER-unset}"')
        answer = CLIENT.send(channel, b"", timeout=10.0)
        self.assertEqual(answer.decode(), "[]", "no sender id: set, but empty (not a zero UUID)")

    def concurrent_native_senders(self, channel, count=8, size=MIB):
        results = [None] * count

        def run(index):
            results[index] = native_send(channel, size, timeout=60)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        for result in results:
            self.assertIsNotNone(result, "a sender did not finish")
            self.assertEqual(result.rc, 0, result.stderr)
            self.assertEqual((result.received_bytes, result.received_sha),
                             (result.sent_bytes, result.sent_sha))
        return results

    @cell("send", "8 native at once", "python", "one Respond session serves them concurrently")
    def test_concurrent_native_to_python(self):
        channel = new_channel()
        responder = self.py_session(channel)
        results = self.concurrent_native_senders(channel)
        seen = sorted(get(responder.requests)["sha"] for _ in results)
        self.assertEqual(seen, sorted(r.sent_sha for r in results))

    @cell("send", "8 native at once", "node", "one Respond session serves them concurrently")
    def test_concurrent_native_to_node(self):
        channel = new_channel()
        responder, _ = self.node("node-respond", "respond", channel)
        results = self.concurrent_native_senders(channel)
        self.assertTrue(wait_until(lambda: responder.count(r"^request .* ok$") == len(results)))
        seen = sorted(line.split()[4] for line in responder.snapshot() if line.startswith("request"))
        self.assertEqual(seen, sorted(r.sent_sha for r in results))

    @cell("send", "native", "python", "APPLICATION error -> exit 23, message passes")
    def test_native_to_python_application_error(self):
        channel = new_channel()
        self.py_session(channel, mode="fail")
        result = native_send(channel, 100)
        self.assertEqual(result.rc, 23, result.stderr)
        self.assertIn("refused 100 bytes", result.stderr)

    @cell("send", "python", "native", "APPLICATION error -> UNKNOWN + app code")
    def test_python_to_native_application_error(self):
        channel = new_channel()
        self.native("native-fail", "respond", "--channel", channel, "--", "sh", "-c",
                    "cat >/dev/null; exit 3")
        with self.assertRaises(sb.SwitchboardError) as caught:
            CLIENT.send(channel, b"x" * 1000, timeout=10.0)
        self.assert_error(caught.exception, "UNKNOWN", "APPLICATION", "application error")
        self.assertEqual(caught.exception.app_code, 3, "switchboard-app-code trailer")

    @cell("send", "node", "python", "APPLICATION error -> UNKNOWN + app code")
    def test_node_to_python_application_error(self):
        channel = new_channel()
        self.py_session(channel, mode="fail")
        status = node_status(node_run("send", channel, "--size", "10"))
        self.assertEqual((status.code, status.status, status.app_code),
                         ("UNKNOWN", "APPLICATION", "7"), str(status))
        self.assertIn("refused 10 bytes", status.message)


# ---- broadcast -----------------------------------------------------------------------------


class Broadcasts(InteropCase):
    """A broadcast from each kind reaches a native listener, a Python and a Node session."""

    BODY = 300 * KIB  # more than one stream window and several chunks

    @classmethod
    def setUpClass(cls):
        cls.channel = new_channel()
        cls.py = PyEcho(cls.channel)
        cls.node_session, cls.node_peer_id = node_ready("node-bsession", "respond", cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.py.close()
        cls.node_session.stop()

    def members_settle(self, expected):
        ok = wait_until(lambda: len(CLIENT.list_peers(self.channel).peers) == expected, 5.0)
        self.assertTrue(ok, f"channel membership: {CLIENT.list_peers(self.channel)}")

    def listener(self):
        """A native `listen --count 1` whose stdout (the broadcast body) is hashed."""
        proc = self.track(Proc("native-listen", cli("listen", "--channel", self.channel,
                                                   "--count", "1"), binary_out=True))
        proc.wait_for(r"^ready peer=", key="err")
        self.members_settle(3)
        return proc

    def listener_body_sha(self, proc):
        self.assertEqual(proc.wait_exit(WAIT), 0, proc.describe())
        for reader in proc.readers:
            reader.join(5)
        return proc.out_hash.hexdigest()

    @cell("broadcast", "native", "native+python+node", "300KiB, delivered=3")
    def test_from_native(self):
        capture = self.listener()
        node_start = len(self.node_session.snapshot())
        body = os.urandom(self.BODY)
        done = subprocess.run(cli("broadcast", "--channel", self.channel), input=body,
                              capture_output=True, timeout=60, env=child_env())
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        self.assertIn("delivered=3 dropped=0", done.stderr.decode(),
                      "summary of a native broadcast to native + Python + Node")
        self.assertEqual(self.listener_body_sha(capture), sha(body), "native listener body")
        sender, size, digest = get(self.py.broadcasts, what="broadcast at the Python session")
        self.assertEqual((size, digest), (self.BODY, sha(body)), "Python session body")
        line = self.node_session.wait_for(r"^broadcast (\S+) (\d+) (\S+)$", start=node_start)
        self.assertEqual((int(line.group(2)), line.group(3)), (self.BODY, sha(body)),
                         "Node session body")
        self.assertTrue(sender, "the native sender is named")
        self.assertEqual(line.group(1), sender, "both sessions name the same native sender")
        self.members_settle(2)

    @cell("broadcast", "python", "native+python+node", "300KiB, delivered=3")
    def test_from_python(self):
        capture = self.listener()
        node_start = len(self.node_session.snapshot())
        body = os.urandom(self.BODY)
        summary = CLIENT.broadcast(self.channel, body, timeout=60.0)
        self.assertEqual(tuple(summary), (3, 0), "summary of a Python broadcast")
        self.assertEqual(self.listener_body_sha(capture), sha(body), "native listener body")
        sender, size, digest = get(self.py.broadcasts, what="broadcast at the Python session")
        self.assertEqual((size, digest), (self.BODY, sha(body)))
        line = self.node_session.wait_for(r"^broadcast (\S+) (\d+) (\S+)$", start=node_start)
        self.assertEqual((int(line.group(2)), line.group(3)), (self.BODY, sha(body)))
        self.members_settle(2)

    @cell("broadcast", "node", "native+python+node", "300KiB, delivered=3")
    def test_from_node(self):
        capture = self.listener()
        node_start = len(self.node_session.snapshot())
        proc = node_run("broadcast", self.channel, "--size", str(self.BODY))
        status = node_status(proc)
        self.assertEqual(status.code, "OK", str(status))
        digest = proc.wait_for(r"^sent \d+ (\S+)$").group(1)
        self.assertEqual(proc.wait_for(r"^summary (\d+) (\d+)$").groups(), ("3", "0"),
                         "summary of a Node broadcast (the Node sender is not a peer)")
        self.assertEqual(self.listener_body_sha(capture), digest, "native listener body")
        _, size, py_digest = get(self.py.broadcasts, what="broadcast at the Python session")
        self.assertEqual((size, py_digest), (self.BODY, digest))
        line = self.node_session.wait_for(r"^broadcast (\S+) (\d+) (\S+)$", start=node_start)
        self.assertEqual((int(line.group(2)), line.group(3)), (self.BODY, digest))
        self.members_settle(2)

    @cell("broadcast", "python (as a peer)", "native+node, not itself", "sender_peer_id")
    def test_from_python_peer_not_to_itself(self):
        capture = self.listener()
        body = os.urandom(1000)
        summary = CLIENT.broadcast(self.channel, body, sender_peer_id=self.py.peer_id,
                                   timeout=30.0)
        self.assertEqual(tuple(summary), (2, 0), "the speaking peer does not receive it")
        self.assertEqual(self.listener_body_sha(capture), sha(body))
        line = self.node_session.wait_for(rf"^broadcast {re.escape(self.py.peer_id)} 1000 (\S+)$")
        self.assertEqual(line.group(1), sha(body), "Node session body")
        with self.assertRaises(AssertionError):
            get(self.py.broadcasts, timeout=0.5)
        self.members_settle(2)


class SlowBroadcastReceiver(InteropCase):

    @cell("broadcast", "native", "native + stalled python", "stalled gRPC receiver dropped "
          "(SLOW_CONSUMER), stays on the channel")
    def test_stalled_grpc_receiver_dropped(self):
        channel = new_channel()
        outcome = queue.Queue()

        def stall_then_read(message):
            time.sleep(RELAY.slow_consumer_s + 3.0)  # not reading: no credit for the relay
            try:
                size = sum(len(chunk) for chunk in message)
                outcome.put(("whole", size))
            except sb.StreamReset as reset:
                outcome.put(("reset", reset.status))

        stalled = CLIENT.respond(channel, lambda request: request.read(),
                                 on_broadcast=stall_then_read)
        self.addCleanup(stalled.close)
        listener = self.track(Proc("native-listen", cli("listen", "--channel", channel,
                                                       "--count", "1"), binary_out=True))
        listener.wait_for(r"^ready peer=", key="err")
        size = 48 * MIB  # far beyond what the session and gRPC buffer
        block = os.urandom(MIB)
        digest = hashlib.sha256()
        for _ in range(size // MIB):
            digest.update(block)
        started = time.monotonic()
        done = subprocess.run(cli("broadcast", "--channel", channel),
                              input=block * (size // MIB), capture_output=True, timeout=120,
                              env=child_env())
        elapsed = time.monotonic() - started
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        self.assertIn("delivered=1 dropped=1", done.stderr.decode())
        self.assertEqual(listener.wait_exit(WAIT), 0, listener.describe())
        for reader in listener.readers:
            reader.join(5)
        self.assertEqual(listener.out_hash.hexdigest(), digest.hexdigest(), "the fast receiver")
        kind, detail = get(outcome, timeout=RELAY.slow_consumer_s + 30, what="the stalled receiver")
        self.assertEqual((kind, detail), ("reset", "SLOW_CONSUMER"))
        self.assertLess(elapsed, RELAY.slow_consumer_s + 10, "the stalled receiver held the others")
        # It stays on the channel and still serves requests.
        self.assertIn(stalled.peer_id, CLIENT.list_peers(channel).peers)
        self.assertEqual(CLIENT.send(channel, b"still here", target=stalled.peer_id,
                                     timeout=10.0), b"still here")


# ---- presence ------------------------------------------------------------------------------


class Presence(InteropCase):

    def expect_update(self, updates, kind, peer, timeout=WAIT):
        limit = time.monotonic() + timeout
        while True:
            update = get(updates, max(0.0, limit - time.monotonic()), f"{kind} {peer}")
            if update.kind == kind and peer in update.peers:
                return update

    @cell("presence", "native", "python", "Respond session and WatchPeers see join+leave")
    def test_python_sees_native(self):
        channel = new_channel()
        session = self.py_session(channel)
        watched = queue.Queue()
        watch = CLIENT.watch_peers(channel)
        pump = threading.Thread(target=lambda: [watched.put(u) for u in watch], daemon=True)
        pump.start()
        try:
            snapshot = get(watched, what="WatchPeers snapshot")
            self.assertEqual(snapshot.kind, "SNAPSHOT")
            self.assertEqual(snapshot.peers, [session.peer_id])
            get(session.presence, what="session snapshot")
            native, native_id = self.native("native-peer", "listen", "--channel", channel)
            joined_w = self.expect_update(watched, "JOINED", native_id)
            joined_s = self.expect_update(session.presence, "JOINED", native_id)
            self.assertEqual(joined_w.version, snapshot.version + 1)
            self.assertEqual(joined_s.version, joined_w.version)
            self.assertIn(native_id, CLIENT.list_peers(channel).peers)
            self.assertIn(native_id, CLIENT.list_peers(channel.upper()).peers,
                          "an upper-case channel UUID names the same channel")
            native.stop()
            left_w = self.expect_update(watched, "LEFT", native_id)
            left_s = self.expect_update(session.presence, "LEFT", native_id)
            self.assertEqual(left_w.version, joined_w.version + 1)
            self.assertEqual(left_s.version, left_w.version)
            self.assertNotIn(native_id, session.session.peers)
        finally:
            watch.cancel()
            pump.join(5)

    @cell("presence", "python", "native", "peers --watch sees join+leave")
    def test_native_sees_python(self):
        channel = new_channel()
        watcher, _ = self.native("native-watch", "peers", "--channel", channel, "--watch")
        session = PyEcho(channel)
        joined = watcher.wait_for(rf"^joined {re.escape(session.peer_id)} version=(\d+)$")
        session.close()
        left = watcher.wait_for(rf"^left {re.escape(session.peer_id)} version=(\d+)$")
        self.assertEqual(int(left.group(1)), int(joined.group(1)) + 1)

    @cell("presence", "node", "native", "peers --watch sees join+leave")
    def test_native_sees_node(self):
        channel = new_channel()
        watcher, _ = self.native("native-watch", "peers", "--channel", channel, "--watch")
        node, node_id = node_ready("node-peer", "respond", channel)
        try:
            joined = watcher.wait_for(rf"^joined {re.escape(node_id)} version=(\d+)$")
        finally:
            node.stop()
        left = watcher.wait_for(rf"^left {re.escape(node_id)} version=(\d+)$")
        self.assertEqual(int(left.group(1)), int(joined.group(1)) + 1)

    @cell("presence", "native", "node", "WatchPeers and Respond session see join+leave")
    def test_node_sees_native(self):
        channel = new_channel()
        watch, _ = self.node("node-watch", "watch", channel)
        session, _ = self.node("node-session", "respond", channel)
        native, native_id = self.native("native-peer", "listen", "--channel", channel)
        pattern = rf"^presence JOINED (\d+) {re.escape(native_id)}$"
        joined_w = watch.wait_for(pattern)
        joined_s = session.wait_for(pattern)
        self.assertEqual(joined_w.group(1), joined_s.group(1))
        native.stop()
        pattern = rf"^presence LEFT (\d+) {re.escape(native_id)}$"
        left_w = watch.wait_for(pattern)
        session.wait_for(pattern)
        self.assertEqual(int(left_w.group(1)), int(joined_w.group(1)) + 1)

    @cell("presence", "python", "python", "duplicate peer id -> ALREADY_EXISTS, first unharmed")
    def test_duplicate_peer_id(self):
        channel = new_channel()
        first = self.py_session(channel)
        with self.assertRaises(sb.SwitchboardError) as caught:
            CLIENT.respond(channel, lambda r: None, peer_id=first.peer_id, join_timeout=5.0)
        self.assert_error(caught.exception, "ALREADY_EXISTS", "REFUSED", "duplicate peer id")
        self.assertEqual(CLIENT.send(channel, b"still here", timeout=10.0), b"still here")


# ---- time limits, cancellation, no responders ---------------------------------------------


class Failures(InteropCase):

    @cell("deadline", "python", "native", "Send timeout -> DEADLINE_EXCEEDED")
    def test_python_deadline_to_native(self):
        channel = new_channel()
        self.native("native-never", "respond", "--channel", channel, "--", "sh", "-c",
                    "cat >/dev/null; sleep 30")
        started = time.monotonic()
        with self.assertRaises(sb.SwitchboardError) as caught:
            CLIENT.send(channel, b"hello", timeout=1.0)
        elapsed = time.monotonic() - started
        self.assert_error(caught.exception, "DEADLINE_EXCEEDED", None, "deadline")
        self.assertIn(caught.exception.status, (None, "DEADLINE_EXCEEDED"))
        self.assertLess(elapsed, 5.0, "a 1 s deadline")

    @cell("deadline", "node", "python", "Send timeout -> DEADLINE_EXCEEDED; responder reset")
    def test_node_deadline_to_python(self):
        channel = new_channel()
        responder = self.py_session(channel, mode="never")
        status = node_status(node_run("send", channel, "--size", "10", "--timeout-ms", "1000"))
        self.assertEqual(status.code, "DEADLINE_EXCEEDED", str(status))
        self.assertIn(status.status, ("-", "DEADLINE_EXCEEDED"))
        self.assertLess(int(status.elapsed_ms), 5000, "a 1 s deadline")
        seen = get(responder.requests, what="the reset at the Python responder")
        self.assertTrue(0 < seen["deadline_ms"] <= 1010, f"deadline_ms {seen['deadline_ms']}")
        self.assertIsNotNone(seen["reset"], "the responder learns the stream ended")
        self.assertIn(seen["reset"][0], ("DEADLINE_EXCEEDED", "CANCELLED"))

    @cell("deadline", "python", "node", "Send timeout -> DEADLINE_EXCEEDED; responder reset")
    def test_python_deadline_to_node(self):
        channel = new_channel()
        responder, _ = self.node("node-never", "respond", channel, "--mode", "never")
        with self.assertRaises(sb.SwitchboardError) as caught:
            CLIENT.send(channel, b"hello", timeout=1.0)
        self.assert_error(caught.exception, "DEADLINE_EXCEEDED", None, "deadline")
        line = responder.wait_for(r"^reset \S+ (\S+)$")
        self.assertIn(line.group(1), ("DEADLINE_EXCEEDED", "CANCELLED"))

    @cell("deadline", "native", "python", "send --deadline-ms -> exit 13; responder reset")
    def test_native_deadline_to_python(self):
        channel = new_channel()
        responder = self.py_session(channel, mode="never")
        result = native_send(channel, 10, args=("--deadline-ms", "800"), timeout=30)
        self.assertEqual(result.rc, 13, result.stderr)
        self.assertLess(result.elapsed, 5.0)
        seen = get(responder.requests, what="the reset at the Python responder")
        self.assertTrue(0 < seen["deadline_ms"] <= 800, f"deadline_ms {seen['deadline_ms']}")
        self.assertEqual(seen["reset"][0] if seen["reset"] else None, "DEADLINE_EXCEEDED")

    @cell("cancel", "python", "native", "cancel mid-stream stops the command")
    def test_python_cancel_to_native(self):
        channel = new_channel()
        pidfile = WORK / f"cancel-{channel}.pid"
        # Serves quickly with metadata mode=quick, else records its pid and stalls.
        native, _ = self.native("native-slow", "respond", "--channel", channel, "--", "sh", "-c",
                                'if [ "$SWITCHBOARD_META_mode" = quick ]; then exec cat; fi; '
                                f'echo $$ > {pidfile}; cat >/dev/null; sleep 30')
        sent = {"bytes": 0}
        stop = threading.Event()

        def body():
            block = os.urandom(64 * KIB)
            for _ in range(16 * 1024):  # at most 1 GiB
                if stop.is_set():
                    return
                sent["bytes"] += len(block)
                yield block

        call = CLIENT.send_stream(channel, body(), timeout=60.0)
        failure = []

        def read():
            try:
                for _ in call:
                    pass
            except sb.SwitchboardError as error:
                failure.append(error)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self.assertTrue(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()
                                   and sent["bytes"] >= 4 * MIB, 20.0),
                        f"the stream never got going (sent {sent['bytes']})")
        command_pid = int(pidfile.read_text().strip())
        self.assertFalse(pid_gone(command_pid))
        call.cancel()
        stop.set()
        reader.join(WAIT)
        self.assertEqual(failure[0].code.name if failure else None, "CANCELLED")
        self.assertTrue(wait_until(lambda: pid_gone(command_pid), 8.0),
                        "the native responder did not stop its command after the cancel")
        self.assertIsNone(native.popen.poll(), "the native responder survives")
        # The relay and the native responder still serve requests afterwards.
        self.assertEqual(CLIENT.send(channel, b"quick", metadata={"mode": "quick"}, timeout=10.0),
                         b"quick")
        result = native_send(channel, KIB, args=("--meta", "mode=quick"), timeout=30)
        self.assertEqual((result.rc, result.received_sha), (0, result.sent_sha), result.stderr)
        self.assertTrue(RELAY.alive())

    @cell("cancel", "node", "python", "stream reset reaches the responder")
    def test_node_peer_gone_to_python(self):
        # A Node sender killed mid-request: the Python responder sees the stream end.
        channel = new_channel()
        responder = self.py_session(channel, mode="never")
        proc = node_proc("node-send", "send", channel, "--size", "10", "--timeout-ms", "60000")
        self.track(proc)
        get(responder.started, timeout=20, what="the request at the Python responder")
        proc.popen.kill()
        seen = get(responder.requests, timeout=15, what="the reset at the Python responder")
        self.assertIsNotNone(seen["reset"])
        self.assertIn(seen["reset"][0], ("CANCELLED", "PEER_GONE"))

    @cell("no responders", "python", "-", "UNAVAILABLE + NO_RESPONDERS")
    def test_python_no_responders(self):
        channel = new_channel()
        started = time.monotonic()
        with self.assertRaises(sb.SwitchboardError) as caught:
            CLIENT.send(channel, b"x", timeout=10.0)
        self.assert_error(caught.exception, "UNAVAILABLE", "NO_RESPONDERS", "empty channel")
        self.assertLess(time.monotonic() - started, 2.0, "NO_RESPONDERS at once, not a timeout")
        # A channel whose only peer does not serve requests, and an absent target.
        self.native("native-listen", "listen", "--channel", channel)
        with self.assertRaises(sb.SwitchboardError) as caught:
            CLIENT.send(channel, b"x", timeout=10.0)
        self.assert_error(caught.exception, "UNAVAILABLE", "NO_RESPONDERS", "non-accepting peer")
        with self.assertRaises(sb.SwitchboardError) as caught:
            CLIENT.send(channel, b"x", target=str(uuid.uuid4()), timeout=10.0)
        self.assert_error(caught.exception, "UNAVAILABLE", "NO_RESPONDERS", "absent target")

    @cell("no responders", "node", "-", "UNAVAILABLE + NO_RESPONDERS")
    def test_node_no_responders(self):
        status = node_status(node_run("send", new_channel(), "--size", "10"))
        self.assertEqual((status.code, status.status), ("UNAVAILABLE", "NO_RESPONDERS"),
                         str(status))

    @cell("no responders", "native", "- (gRPC peers only listen)", "exit 11")
    def test_native_no_responders(self):
        channel = new_channel()
        result = native_send(channel, 10, timeout=30)
        self.assertEqual(result.rc, 11, result.stderr)
        self.assertIn("NO_RESPONDERS", result.stderr)

    @cell("peer gone", "python", "native", "gRPC responder leaves mid-request -> exit 12")
    def test_native_sees_grpc_responder_leave(self):
        channel = new_channel()
        responder = self.py_session(channel, mode="never")
        results = []
        sender = threading.Thread(target=lambda: results.append(
            native_send(channel, 10, timeout=30)), daemon=True)
        sender.start()
        get(responder.started, timeout=WAIT, what="the request at the Python responder")
        responder.close()
        sender.join(20)
        self.assertTrue(results, "the native send did not end")
        self.assertEqual(results[0].rc, 12, results[0].stderr)  # 10 + PEER_GONE
        self.assertIn("PEER_GONE", results[0].stderr)

    @cell("idle timeout", "python", "native", "idle_timeout_ms -> DEADLINE_EXCEEDED + IDLE_TIMEOUT")
    def test_python_idle_timeout(self):
        channel = new_channel()
        self.native("native-never", "respond", "--channel", channel, "--", "sh", "-c",
                    "cat >/dev/null; sleep 30")
        started = time.monotonic()
        with self.assertRaises(sb.SwitchboardError) as caught:
            CLIENT.send(channel, b"x", idle_timeout_ms=500, timeout=20.0)
        self.assert_error(caught.exception, "DEADLINE_EXCEEDED", "IDLE_TIMEOUT", "idle timeout")
        self.assertLess(time.monotonic() - started, 5.0)

    @cell("peer gone", "native", "python", "responder leaves mid-request -> PEER_GONE")
    def test_python_sees_peer_gone(self):
        channel = new_channel()
        native, _ = self.native("native-never", "respond", "--channel", channel, "--", "sh", "-c",
                                "cat >/dev/null; sleep 30")
        errors = []

        def send():
            try:
                CLIENT.send(channel, b"x", timeout=30.0)
            except sb.SwitchboardError as error:
                errors.append(error)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(1.0)
        native.popen.kill()  # a crash, not a clean close
        sender.join(15)
        self.assertTrue(errors, "the Send did not end")
        self.assert_error(errors[0], "UNAVAILABLE", "PEER_GONE", "responder gone")


# ---- a gRPC reader that stops reading ------------------------------------------------------


class SlowReader(InteropCase):

    @cell("flow control", "python (stops reading)", "native", "relay RSS bounded, others unaffected")
    def test_stalled_grpc_reader(self):
        channel = new_channel()
        _, big_id = self.native("native-big", "respond", "--channel", channel, "--", "sh", "-c",
                                "head -c 500000000 /dev/zero")
        _, echo_id = self.native("native-echo", "respond", "--channel", channel, "--echo")
        # Warm up both paths, then take the baseline.
        self.assertEqual(CLIENT.send(channel, b"warm", target=echo_id, timeout=10.0), b"warm")
        time.sleep(0.5)
        before = RELAY.rss_kib()
        call = CLIENT.send_stream(channel, b"", target=big_id, timeout=120.0)
        chunks = iter(call)
        first = next(chunks)
        self.assertTrue(first, "the big response started")
        peak = before
        latencies = []
        limit = time.monotonic() + 4.0
        while time.monotonic() < limit:  # not reading `call` meanwhile
            started = time.monotonic()
            answer = CLIENT.send(channel, b"ping" * 256, target=echo_id, timeout=10.0)
            latencies.append(time.monotonic() - started)
            self.assertEqual(answer, b"ping" * 256)
            peak = max(peak, RELAY.rss_kib())
            time.sleep(0.2)
        native = native_send(channel, KIB, args=("--to", echo_id), timeout=10.0)
        peak = max(peak, RELAY.rss_kib())
        # The stalled stream was held back, not broken: it resumes when read again.
        resumed, limit = 0, time.monotonic() + 10.0
        for chunk in chunks:
            resumed += len(chunk)
            if resumed >= 32 * MIB or time.monotonic() > limit:
                break
        call.cancel()
        self.assertGreaterEqual(resumed, 32 * MIB, "the stalled response did not resume")
        growth_mib = (peak - before) / 1024
        FIGURES.append(("relay RSS growth with a stalled gRPC reader",
                        f"{growth_mib:.1f} MiB (before {before / 1024:.1f} MiB)"))
        FIGURES.append(("echo round trip beside the stalled stream",
                        f"max {max(latencies) * 1000:.0f} ms over {len(latencies)}"))
        self.assertEqual(native.rc, 0, native.stderr)
        self.assertEqual(native.received_sha, native.sent_sha)
        self.assertLess(native.elapsed, 2.0, "native echo beside the stalled stream")
        self.assertLess(max(latencies), 2.0, "gRPC echo beside the stalled stream")
        self.assertLess(growth_mib, 64, "relay memory grew with a gRPC client that stopped reading")
        # The relay is fine afterwards.
        self.assertEqual(CLIENT.send(channel, b"after", target=echo_id, timeout=10.0), b"after")


# ---- Go peers (clients/go: the switchboard-go-peer program, lines as node_peer.js) ---------


def go_proc(name, role, channel, *extra, server=None):
    return Proc(name, [ARGS.go_peer, role, "--server", server or RELAY.grpc, "--channel", channel,
                       *extra])


def go_ready(name, role, channel, *extra):
    proc = go_proc(name, role, channel, *extra)
    found = proc.wait_for(r"^ready (\S+) (\d+)$", timeout=20)
    return proc, found.group(1)


def go_run(role, channel, *extra, timeout=120.0, server=None):
    """Runs a one-shot Go role (send, broadcast) to its end; returns the Proc."""
    if not ARGS.go_peer:
        raise unittest.SkipTest("no --go-peer (Go was not found at configure time)")
    proc = go_proc(f"go-{role}", role, channel, *extra, server=server)
    if proc.wait_exit(timeout) is None:
        proc.stop()
        raise AssertionError(f"go {role} did not finish within {timeout} s\n{proc.describe()}")
    for reader in proc.readers:
        reader.join(5)
    return proc


class GoPeers(InteropCase):
    """The Go client with native, Python and Node peers, both ways (sha256 at both ends),
    broadcast both ways, presence and error statuses."""

    def setUp(self):
        if not ARGS.go_peer:
            self.skipTest("no --go-peer (Go was not found at configure time)")
        super().setUp()

    def go(self, name, role, channel, *extra):
        proc, peer = go_ready(name, role, channel, *extra)
        self.track(proc)
        return proc, peer

    def go_served(self, proc):
        """(bytes, sha256) of the request the Go echo responder served."""
        line = proc.wait_for(r"^request \S+ \S+ (\d+) (\S+) -?\d+ (\S+)$")
        count, digest, outcome = line.groups()
        self.assertEqual(outcome, "ok", proc.describe())
        return int(count), digest

    def go_send(self, channel, size):
        """A Go send of `size` random bytes to an echo; returns the sha256 it sent."""
        proc = go_run("send", channel, "--size", str(size))
        status = node_status(proc)
        self.assertEqual(status.code, "OK", f"Go send: {status}\n{proc.describe()}")
        sent = proc.wait_for(r"^sent (\d+) (\S+)$").groups()
        self.assertEqual(sent[0], str(size))
        self.assertEqual(proc.wait_for(r"^received (\d+) (\S+)$").groups(), sent,
                         "echoed response at the Go sender")
        COMPLETED["grpc"] += 1
        return sent[1]

    def native_to_go(self, size):
        channel = new_channel()
        responder, _ = self.go("go-respond", "respond", channel, "--mode", "echo")
        result = native_send(channel, size)
        self.assertEqual(result.rc, 0, f"switchboard send failed: {result.stderr}")
        self.assertEqual(self.go_served(responder), (result.sent_bytes, result.sent_sha),
                         "request body at the Go responder")
        self.assertEqual((result.received_bytes, result.received_sha),
                         (result.sent_bytes, result.sent_sha), "echoed response at the native sender")

    def go_to_native(self, size):
        channel = new_channel()
        self.native("native-echo", "respond", "--channel", channel, "--echo")
        self.go_send(channel, size)

    def python_to_go(self, size):
        channel = new_channel()
        responder, _ = self.go("go-respond", "respond", channel, "--mode", "echo")
        sent, count, received = py_send(channel, size, timeout=120.0)
        self.assertEqual((count, received), (size, sent), "echoed response at the Python sender")
        self.assertEqual(self.go_served(responder), (size, sent),
                         "request body at the Go responder")

    def go_to_python(self, size):
        channel = new_channel()
        responder = self.py_session(channel)
        digest = self.go_send(channel, size)
        seen = get(responder.requests, what="request at the Python responder")
        self.assertEqual((seen["bytes"], seen["sha"]), (size, digest),
                         "request body at the Python responder")

    def node_to_go(self, size):
        channel = new_channel()
        responder, _ = self.go("go-respond", "respond", channel, "--mode", "echo")
        proc = node_run("send", channel, "--size", str(size))
        status = node_status(proc)
        self.assertEqual(status.code, "OK", f"Node send: {status}\n{proc.describe()}")
        sent = proc.wait_for(r"^sent (\d+) (\S+)$").groups()
        self.assertEqual(proc.wait_for(r"^received (\d+) (\S+)$").groups(), sent,
                         "echoed response at the Node sender")
        self.assertEqual(self.go_served(responder), (size, sent[1]),
                         "request body at the Go responder")

    def go_to_node(self, size):
        channel = new_channel()
        responder, _ = self.node("node-respond", "respond", channel, "--mode", "echo")
        digest = self.go_send(channel, size)
        line = responder.wait_for(r"^request \S+ \S+ (\d+) (\S+) \d+ ok$")
        self.assertEqual(line.groups(), (str(size), digest), "request body at the Node responder")

    @cell("broadcast", "go / python", "native+python+node+go", "300KiB both ways, summaries")
    def test_broadcast_both_ways(self):
        channel = new_channel()
        py = self.py_session(channel)
        node, _ = self.node("node-bsession", "respond", channel)
        go, go_id = self.go("go-bsession", "respond", channel)
        listener = self.track(Proc("native-listen", cli("listen", "--channel", channel,
                                                        "--count", "1"), binary_out=True))
        listener.wait_for(r"^ready peer=", key="err")
        self.assertTrue(wait_until(lambda: len(CLIENT.list_peers(channel).peers) == 4, 5.0))
        size = 300 * KIB
        proc = go_run("broadcast", channel, "--size", str(size))
        self.assertEqual(node_status(proc).code, "OK", proc.describe())
        digest = proc.wait_for(r"^sent \d+ (\S+)$").group(1)
        self.assertEqual(proc.wait_for(r"^summary (\d+) (\d+)$").groups(), ("4", "0"),
                         "summary of a Go broadcast (the Go sender is not a peer)")
        self.assertEqual(listener.wait_exit(WAIT), 0, listener.describe())
        for reader in listener.readers:
            reader.join(5)
        self.assertEqual(listener.out_hash.hexdigest(), digest, "native listener body")
        _, count, py_digest = get(py.broadcasts, what="broadcast at the Python session")
        self.assertEqual((count, py_digest), (size, digest), "Python session body")
        node_line = node.wait_for(r"^broadcast (\S+) (\d+) (\S+)$")
        self.assertEqual(node_line.groups()[1:], (str(size), digest), "Node session body")
        go_line = go.wait_for(r"^broadcast (\S+) (\d+) (\S+)$")
        self.assertEqual(go_line.groups(), ("-", str(size), digest), "Go session body")
        # And a Python peer's broadcast reaches the Go session, naming its sender.
        body = os.urandom(size)
        start = len(go.snapshot())
        summary = CLIENT.broadcast(channel, body, sender_peer_id=py.peer_id, timeout=60.0)
        self.assertEqual(tuple(summary), (2, 0), "node and go sessions (the listener has left)")
        go_line = go.wait_for(r"^broadcast (\S+) (\d+) (\S+)$", start=start)
        self.assertEqual(go_line.groups(), (py.peer_id, str(size), sha(body)), "Go session body")

    @cell("presence", "native", "go", "WatchPeers and Respond session see join+leave")
    def test_go_sees_native(self):
        channel = new_channel()
        watch, _ = self.go("go-watch", "watch", channel)
        session, _ = self.go("go-session", "respond", channel)
        native, native_id = self.native("native-peer", "listen", "--channel", channel)
        pattern = rf"^presence JOINED (\d+) {re.escape(native_id)}$"
        joined_w = watch.wait_for(pattern)
        self.assertEqual(session.wait_for(pattern).group(1), joined_w.group(1))
        native.stop()
        pattern = rf"^presence LEFT (\d+) {re.escape(native_id)}$"
        left_w = watch.wait_for(pattern)
        session.wait_for(pattern)
        self.assertEqual(int(left_w.group(1)), int(joined_w.group(1)) + 1)

    @cell("errors", "go", "python / -", "APPLICATION code+message; NO_RESPONDERS")
    def test_go_errors(self):
        channel = new_channel()
        self.py_session(channel, mode="fail")
        status = node_status(go_run("send", channel, "--size", "10"))
        self.assertEqual((status.code, status.status, status.app_code),
                         ("UNKNOWN", "APPLICATION", "7"), str(status))
        self.assertIn("refused 10 bytes", status.message)
        status = node_status(go_run("send", new_channel(), "--size", "10"))
        self.assertEqual((status.code, status.status), ("UNAVAILABLE", "NO_RESPONDERS"),
                         str(status))

    @cell("errors", "python", "go", "APPLICATION error from a Go handler")
    def test_python_to_go_application_error(self):
        channel = new_channel()
        self.go("go-respond", "respond", channel, "--mode", "fail")
        with self.assertRaises(sb.SwitchboardError) as caught:
            CLIENT.send(channel, b"x" * 10, timeout=10.0)
        self.assert_error(caught.exception, "UNKNOWN", "APPLICATION", "Go handler error")
        self.assertEqual((caught.exception.app_code, caught.exception.message),
                         (7, "refused 10 bytes"))


def _add_go_size_tests():
    for label, size in (("1KiB", KIB), ("64MiB", 64 * MIB)):
        for kind, sender, receiver in (("native_to_go", "native", "go"),
                                       ("go_to_native", "go", "native"),
                                       ("python_to_go", "python", "go"),
                                       ("go_to_python", "go", "python"),
                                       ("node_to_go", "node", "go"),
                                       ("go_to_node", "go", "node")):
            def test(self, kind=kind, size=size):
                if size > MIB and ARGS.skip_large:
                    self.skipTest("--skip-large")
                getattr(self, kind)(size)
            test.__name__ = f"test_{kind}_{label}"
            setattr(GoPeers, test.__name__, cell("send", sender, receiver, f"{label} echo")(test))


_add_go_size_tests()


# ---- per-request windows on a Respond stream ----------------------------------------------

PATTERN_BLOCK = 64 * KIB


def pattern_block(index):
    """Block `index` of the response the pattern responders send (node_peer.js has the same)."""
    return hashlib.sha256(str(index).encode()).digest() * (PATTERN_BLOCK // 32)


def pattern_sha(size):
    digest = hashlib.sha256()
    for index, at in enumerate(range(0, size, PATTERN_BLOCK)):
        digest.update(pattern_block(index)[:min(PATTERN_BLOCK, size - at)])
    return digest.hexdigest()


class RespondWindows(InteropCase):
    """A gRPC responder (client library, stream windows on) serves two native requesters: A
    stops reading its response after the first bytes, B's request completes meanwhile, then A
    reads again and completes too."""

    SIZE_A = 16 * MIB
    SIZE_B = 4 * MIB

    def py_pattern_responder(self, channel):
        def handle(request):
            request.read()
            size = int(request.metadata.get("size", "0"))
            for index, at in enumerate(range(0, size, PATTERN_BLOCK)):
                request.write(pattern_block(index)[:min(PATTERN_BLOCK, size - at)])
        session = CLIENT.respond(channel, handle)
        self.sessions.append(session)
        return session

    def stalled_request(self, channel, peer):
        """A native request for SIZE_A bytes whose response is read up to its first bytes:
        then nobody reads the command's stdout, so it stops reading the relay."""
        popen = subprocess.Popen(
            cli("send", "--channel", channel, "--to", peer, "--meta", "name=A",
                "--meta", f"size={self.SIZE_A}", "--deadline-ms", "120000"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=child_env())
        self.addCleanup(lambda: popen.poll() is None and (popen.kill(), popen.wait(5)))
        popen.stdin.write(b"a")
        popen.stdin.close()
        ready, _, _ = select.select([popen.stdout], [], [], WAIT)
        self.assertTrue(ready, "A's response did not start")
        first = os.read(popen.stdout.fileno(), PATTERN_BLOCK)
        self.assertTrue(first, "A's response did not start")
        return popen, first

    def finish_stalled(self, popen, first):
        digest, count = hashlib.sha256(first), len(first)
        limit = time.monotonic() + 60.0
        while time.monotonic() < limit:
            ready, _, _ = select.select([popen.stdout], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(popen.stdout.fileno(), MIB)
            if not chunk:
                break
            digest.update(chunk)
            count += len(chunk)
        return popen.wait(10), count, digest.hexdigest()

    def check(self, channel, peer):
        popen_a, first = self.stalled_request(channel, peer)
        started = time.monotonic()
        b = native_send(channel, 2 * MIB, args=("--to", peer, "--meta", "name=B",
                                                "--meta", f"size={self.SIZE_B}"), timeout=20.0)
        FIGURES.append((f"{self.id().split('.')[-1]}: B beside stalled A",
                        f"{time.monotonic() - started:.2f} s"))
        self.assertEqual(b.rc, 0, f"B failed: {b.stderr}")
        self.assertEqual((b.received_bytes, b.received_sha),
                         (self.SIZE_B, pattern_sha(self.SIZE_B)), "B's response")
        self.assertIsNone(popen_a.poll(), "A was not stalled")
        rc, count, digest = self.finish_stalled(popen_a, first)
        self.assertEqual(rc, 0, "A failed after it resumed")
        self.assertEqual((count, digest), (self.SIZE_A, pattern_sha(self.SIZE_A)), "A's response")

    @cell("flow control", "native x2 (A stops reading)", "python", "B completes beside stalled A")
    def test_python_responder(self):
        channel = new_channel()
        session = self.py_pattern_responder(channel)
        self.check(channel, session.peer_id)
        self.assertTrue(getattr(session, "windows", False), "the relay granted no stream windows")

    @cell("flow control", "native x2 (A stops reading)", "node", "B completes beside stalled A")
    def test_node_responder(self):
        channel = new_channel()
        _, peer = self.node("node-pattern", "respond", channel, "--mode", "pattern")
        self.check(channel, peer)


# ---- malformed first messages --------------------------------------------------------------


class Malformed(InteropCase):
    """The gateway rejects a bad first message at once with INVALID_ARGUMENT and a message."""

    def call(self, method, messages, hold=True):
        """Runs a raw streaming call whose client stream yields `messages` and then (with
        `hold`) stays open: the gateway must answer without waiting for more."""
        release = threading.Event()

        def stream():
            yield from messages
            if hold:
                release.wait(10)

        call = getattr(CLIENT.stub, method)(stream(), timeout=5.0)
        try:
            for _ in call:
                pass
        except sb.client.grpc.RpcError as error:
            return sb.SwitchboardError.from_rpc_error(error)
        finally:
            release.set()
        self.fail(f"{method} accepted a malformed first message")

    def check(self, error, words, what):
        self.assertEqual(error.code.name, "INVALID_ARGUMENT", f"{what}: {error}")
        self.assertTrue(error.message, f"{what}: no message")
        self.assertTrue(any(w.lower() in error.message.lower() for w in words),
                        f"{what}: unclear message {error.message!r} (expected one of {words})")
        self.assertEqual(error.status, "PROTOCOL_ERROR", f"{what}: switchboard-status trailer")

    @cell("bad input", "python", "gateway", "Send: no channel / bad UUID / chunk first / target")
    def test_send(self):
        pb2 = sb.pb2
        self.check(self.call("Send", [pb2.SendRequest(open=pb2.SendOpen())]),
                   ["channel"], "Send without channel")
        self.check(self.call("Send", [pb2.SendRequest(open=pb2.SendOpen(
            channel="not-a-uuid"))]), ["uuid", "channel"], "Send with a bad channel UUID")
        self.check(self.call("Send", [pb2.SendRequest(chunk=pb2.Chunk(data=b"x"))]),
                   ["open", "first"], "Send with a chunk first")
        self.check(self.call("Send", [pb2.SendRequest(open=pb2.SendOpen(
            channel=new_channel(), target="zzz"))]), ["uuid", "target"], "Send with a bad target")
        self.check(self.call("Send", [], hold=False), ["open", "first", "empty"],
                   "Send with no message at all")

    @cell("bad input", "python", "gateway", "Broadcast: no channel / bad UUID / chunk first")
    def test_broadcast(self):
        pb2 = sb.pb2
        self.check(self.call("Broadcast", [pb2.BroadcastRequest(open=pb2.BroadcastOpen())]),
                   ["channel"], "Broadcast without channel")
        self.check(self.call("Broadcast", [pb2.BroadcastRequest(open=pb2.BroadcastOpen(
            channel="6ba7b810-9dad-41d1-80b4-00c04fd430c"))]), ["uuid", "channel"],
            "Broadcast with a bad channel UUID")
        self.check(self.call("Broadcast", [pb2.BroadcastRequest(chunk=pb2.Chunk(
            data=b"x"))]), ["open", "first"], "Broadcast with a chunk first")

    @cell("bad input", "python", "gateway", "Respond: no channel / bad UUID / chunk first / peer id")
    def test_respond(self):
        pb2 = sb.pb2
        self.check(self.call("Respond", [pb2.RespondRequest(join=pb2.Join())]),
                   ["channel"], "Respond without channel")
        self.check(self.call("Respond", [pb2.RespondRequest(join=pb2.Join(
            channel="hello"))]), ["uuid", "channel"], "Respond with a bad channel UUID")
        self.check(self.call("Respond", [pb2.RespondRequest(chunk=pb2.ResponseChunk(
            request_id=1, data=b"x"))]), ["join", "first"], "Respond with a chunk first")
        self.check(self.call("Respond", [pb2.RespondRequest(join=pb2.Join(
            channel=new_channel(), peer_id="nope"))]), ["uuid", "peer"],
            "Respond with a bad peer id")
        # The gateway still serves well-formed calls.
        self.assertEqual(CLIENT.list_peers(new_channel()).peers, [])

    @cell("bad input", "python", "gateway", "ListPeers/WatchPeers: bad channel")
    def test_presence_calls(self):
        with self.assertRaises(sb.SwitchboardError) as caught:
            CLIENT.list_peers("not-a-uuid")
        self.assertEqual(caught.exception.code.name, "INVALID_ARGUMENT", str(caught.exception))
        with self.assertRaises(sb.SwitchboardError) as caught:
            for _ in CLIENT.watch_peers("", timeout=5.0):
                break
        self.assertEqual(caught.exception.code.name, "INVALID_ARGUMENT", str(caught.exception))


# ---- signed tokens --------------------------------------------------------------------------


class AuthTokens(InteropCase):
    """A relay run with --auth-mode required: tokens minted independently (PyJWT) and by the
    `switchboard token` command get Python, Node and native peers through; bad ones get
    UNAUTHENTICATED."""

    SECRET = "interop-secret"

    @classmethod
    def setUpClass(cls):
        import jwt  # python3-jwt (Debian); an implementation independent of the relay's
        cls.jwt = jwt
        secret_file = WORK / "hs256.secret"
        secret_file.write_text(cls.SECRET + "\n")
        cls.secret_file = secret_file
        cls.relay = Relay(ARGS.server, ["--auth-mode", "required",
                                        "--auth-hs256-secret-file", str(secret_file)],
                          name="auth-relay")

    @classmethod
    def tearDownClass(cls):
        cls.relay.proc.stop()

    def mint(self, channel, perms=("send", "respond", "broadcast", "presence"), ttl=60,
             secret=None):
        claims = {"channel": channel, "perms": list(perms), "exp": int(time.time()) + ttl}
        return self.jwt.encode(claims, secret or self.SECRET, algorithm="HS256")

    def client(self, token):
        client = sb.Client(self.relay.grpc, token=token)
        self.addCleanup(client.close)
        return client

    def responder(self, channel):
        session = PyEcho(channel, client=self.client(self.mint(channel)))
        self.sessions.append(session)
        return session

    @cell("auth", "python", "python", "valid HS256 token (PyJWT) -> OK")
    def test_python_valid_token(self):
        channel = new_channel()
        self.responder(channel)
        self.assertEqual(self.client(self.mint(channel, ["send"])).send(channel, b"signed",
                                                                        timeout=10.0), b"signed")
        peers = self.client(self.mint(channel, ["presence"])).list_peers(channel).peers
        self.assertEqual(len(peers), 1)

    @cell("auth", "python", "gateway", "garbage / bad signature / expired -> UNAUTHENTICATED")
    def test_python_bad_token(self):
        channel = new_channel()
        self.responder(channel)
        for what, token in (("garbage", "garbage"),
                            ("bad signature", self.mint(channel, secret="not-the-secret")),
                            ("expired", self.mint(channel, ttl=-10)), ("no token", "")):
            with self.assertRaises(sb.SwitchboardError) as caught:
                self.client(token).send(channel, b"x", timeout=10.0)
            self.assert_error(caught.exception, "UNAUTHENTICATED", "UNAUTHENTICATED", what)
        with self.assertRaises(sb.SwitchboardError) as caught:
            self.client(self.mint(channel, ["respond"])).send(channel, b"x", timeout=10.0)
        self.assert_error(caught.exception, "PERMISSION_DENIED", "PERMISSION_DENIED",
                          "token without send")

    @cell("auth", "node", "python", "valid token -> OK; bad signature -> UNAUTHENTICATED")
    def test_node_tokens(self):
        channel = new_channel()
        self.responder(channel)
        status = node_status(node_run("send", channel, "--size", "10", "--token",
                                      self.mint(channel, ["send"]), server=self.relay.grpc))
        self.assertEqual((status.code, status.status), ("OK", "OK"), str(status))
        status = node_status(node_run("send", channel, "--size", "10", "--token",
                                      self.mint(channel, secret="wrong"),
                                      server=self.relay.grpc))
        self.assertEqual((status.code, status.status), ("UNAUTHENTICATED", "UNAUTHENTICATED"),
                         str(status))

    @cell("auth", "go", "python", "valid token -> OK; bad signature -> UNAUTHENTICATED")
    def test_go_tokens(self):
        channel = new_channel()
        self.responder(channel)
        status = node_status(go_run("send", channel, "--size", "10", "--token",
                                    self.mint(channel, ["send"]), server=self.relay.grpc))
        self.assertEqual((status.code, status.status), ("OK", "OK"), str(status))
        status = node_status(go_run("send", channel, "--size", "10", "--token",
                                    self.mint(channel, secret="wrong"), server=self.relay.grpc))
        self.assertEqual((status.code, status.status), ("UNAUTHENTICATED", "UNAUTHENTICATED"),
                         str(status))

    @cell("auth", "native", "python", "token from `switchboard token` -> OK; none -> exit 3")
    def test_native_cli_token(self):
        channel = new_channel()
        self.responder(channel)
        minted = subprocess.run([ARGS.cli, "token", "--hs256-secret-file", str(self.secret_file),
                                 "--channel", channel, "--perms", "send", "--ttl", "60s"],
                                capture_output=True, text=True, timeout=WAIT, check=True)
        token = minted.stdout.strip()
        # The relay's minting and PyJWT agree on the token.
        self.assertEqual(self.jwt.decode(token, self.SECRET, algorithms=["HS256"])["channel"],
                         channel)
        base = [ARGS.cli, "--server", self.relay.core]
        sent = subprocess.run([*base, "send", "--channel", channel], input=b"native",
                              capture_output=True, timeout=30, env={**os.environ,
                                                                    "SWITCHBOARD_TOKEN": token})
        self.assertEqual((sent.returncode, sent.stdout), (0, b"native"), sent.stderr)
        refused = subprocess.run([*base, "send", "--channel", channel], input=b"x",
                                 capture_output=True, timeout=30,
                                 env={k: v for k, v in child_env().items()
                                      if k != "SWITCHBOARD_TOKEN"})
        self.assertEqual(refused.returncode, 3, refused.stderr)
        self.assertIn(b"UNAUTHENTICATED", refused.stderr)


# ---- gateway basics ------------------------------------------------------------------------


class Gateway(InteropCase):

    @cell("health", "python", "gateway", "grpc.health.v1 Check -> SERVING")
    def test_health(self):
        self.assertEqual(CLIENT.health(""), "SERVING")


# ---- throughput ----------------------------------------------------------------------------


class Throughput(InteropCase):
    SIZE = 256 * MIB

    def setUp(self):
        super().setUp()
        if ARGS.skip_large:
            self.skipTest("--skip-large")
        self.block = os.urandom(MIB)

    def sink(self):
        channel = new_channel()
        self.native("native-sink", "respond", "--channel", channel, "--", "sh", "-c",
                    "cat >/dev/null")
        return channel

    @cell("throughput", "python gRPC", "native", "256 MiB into `cat >/dev/null`")
    def test_python_to_native(self):
        channel = self.sink()
        started = time.monotonic()
        answer = CLIENT.send(channel, (self.block for _ in range(self.SIZE // MIB)), timeout=300.0)
        elapsed = time.monotonic() - started
        self.assertEqual(answer, b"")
        FIGURES.append(("Python gRPC Send -> gateway -> native respond, 256 MiB",
                        f"{self.SIZE / MIB / elapsed:.0f} MiB/s ({elapsed:.2f} s)"))

    @cell("throughput", "node gRPC", "native", "256 MiB into `cat >/dev/null`")
    def test_node_to_native(self):
        channel = self.sink()
        proc = node_run("send", channel, "--size", str(self.SIZE), timeout=300.0)
        status = node_status(proc)
        self.assertEqual(status.code, "OK", str(status))
        elapsed = int(status.elapsed_ms) / 1000
        FIGURES.append(("Node gRPC Send -> gateway -> native respond, 256 MiB (incl. randomBytes)",
                        f"{self.SIZE / MIB / elapsed:.0f} MiB/s ({elapsed:.2f} s)"))

    @cell("throughput", "go gRPC", "native", "256 MiB into `cat >/dev/null`")
    def test_go_to_native(self):
        channel = self.sink()
        proc = go_run("send", channel, "--size", str(self.SIZE), timeout=300.0)
        status = node_status(proc)
        self.assertEqual(status.code, "OK", str(status))
        elapsed = int(status.elapsed_ms) / 1000
        FIGURES.append(("Go gRPC Send -> gateway -> native respond, 256 MiB (incl. crypto/rand)",
                        f"{self.SIZE / MIB / elapsed:.0f} MiB/s ({elapsed:.2f} s)"))

    @cell("throughput", "native", "native", "256 MiB into `cat >/dev/null`")
    def test_native_to_native(self):
        channel = self.sink()
        result = native_send(channel, body=(self.block for _ in range(self.SIZE // MIB)),
                             timeout=300.0)
        self.assertEqual(result.rc, 0, result.stderr)
        self.assertEqual(result.sent_bytes, self.SIZE)
        FIGURES.append(("native send -> relay -> native respond, 256 MiB",
                        f"{self.SIZE / MIB / result.elapsed:.0f} MiB/s ({result.elapsed:.2f} s)"))


# ---- draining with a stalled gRPC reader (a relay of its own) -------------------------------


class Draining(InteropCase):

    @cell("relay", "python (Respond, not reading)", "-",
          "SIGTERM with a blocked gRPC write -> exit 0")
    def test_sigterm_with_stalled_respond_reader(self):
        relay = Relay(ARGS.server)
        self.addCleanup(relay.proc.stop)
        client = sb.Client(relay.grpc)
        self.addCleanup(client.close)
        channel = new_channel()
        hold = threading.Event()
        self.addCleanup(hold.set)

        def requests():
            yield sb.pb2.RespondRequest(join=sb.pb2.Join(channel=channel))
            hold.wait(60)

        call = client.stub.Respond(requests())
        self.addCleanup(call.cancel)
        self.assertEqual(next(call).WhichOneof("kind"), "joined")  # then it stops reading
        # A broadcast bigger than every buffer on the way: the gateway's write to the session
        # blocks on HTTP/2 flow control (the relay then drops the session from the broadcast).
        done = subprocess.run([ARGS.cli, "--server", relay.core, "broadcast", "--channel",
                               channel], input=b"x" * (8 * MIB), capture_output=True,
                              timeout=60, env=child_env())
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        started = time.monotonic()
        relay.proc.popen.send_signal(signal.SIGTERM)
        rc = relay.proc.wait_exit(relay.drain_s + 10)
        FIGURES.append(("relay exit after SIGTERM with a stalled Respond reader",
                        f"{time.monotonic() - started:.2f} s" if rc is not None
                        else "did not exit"))
        self.assertEqual(rc, 0, "the relay did not exit after SIGTERM while a Respond call had a "
                                f"write in flight\n{relay.proc.describe()}")


# ---- the relay's own account of the traffic (admin endpoint) ------------------------------


def scrape_metrics(admin):
    """GET /metrics; {series: value} for every sample line."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


class Metrics(InteropCase):

    @cell("relay", "-", "-", "/metrics consistent with the suite's traffic")
    def test_metrics_after_traffic(self):
        samples = scrape_metrics(RELAY.admin)

        def total(prefix):
            return sum(v for k, v in samples.items() if k.startswith(prefix))

        native_in = samples['switchboard_bytes_received_total{door="native"}']
        native_out = samples['switchboard_bytes_sent_total{door="native"}']
        grpc_in = samples['switchboard_bytes_received_total{door="grpc"}']
        grpc_out = samples['switchboard_bytes_sent_total{door="grpc"}']
        ok = total('switchboard_streams_total{door="native",status="OK"}') + \
            total('switchboard_streams_total{door="grpc",status="OK"}')
        completed = COMPLETED["native"] + COMPLETED["grpc"]
        FIGURES.append(("relay metrics after the suite",
                        f"native in/out {native_in / MIB:.0f}/{native_out / MIB:.0f} MiB, grpc "
                        f"in/out {grpc_in / MIB:.0f}/{grpc_out / MIB:.0f} MiB, streams OK "
                        f"{ok:.0f} (suite completed {completed}+ through native CLI and Python)"))
        self.assertGreater(native_in, 0)
        self.assertGreater(native_out, 0)
        self.assertGreater(grpc_in, 0)
        self.assertGreater(grpc_out, 0)
        self.assertGreater(samples['switchboard_connections_total{door="native"}'], 0)
        self.assertGreater(samples['switchboard_connections_total{door="grpc"}'], 0)
        self.assertGreater(completed, 0)
        self.assertGreaterEqual(ok, completed)
        self.assertEqual(samples["switchboard_draining"], 0)


# ---- last: the relay survived everything and stops cleanly ---------------------------------


def summarize_stacks(path):
    """The frames of each thread that name Switchboard or gRPC server code (from gdb)."""
    lines, keep = [], re.compile(r"switchboard|Shutdown|grpc::Server|Reactor|Call::")
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("Thread "):
            lines.append(line)
        elif line.startswith("#") and keep.search(line):
            lines.append("    " + line[:200])
    return "\n".join(lines[:120])


class Shutdown(InteropCase):

    @cell("relay", "-", "-", "alive after all tests; SIGTERM -> exit 0")
    def test_relay_clean_exit(self):
        rss = RELAY.rss_kib()
        FIGURES.append(("relay RSS at the end", f"{rss / 1024:.1f} MiB"))
        started = time.monotonic()
        RELAY.proc.popen.send_signal(signal.SIGTERM)
        rc = RELAY.proc.wait_exit(RELAY.drain_s + 20)
        FIGURES.append(("relay exit after SIGTERM", f"{time.monotonic() - started:.2f} s"
                        if rc is not None else "did not exit"))
        if rc is None and shutil.which("gdb"):
            stacks = WORK / "relay-stacks.txt"
            with open(stacks, "w", encoding="utf-8") as out:
                subprocess.run(["gdb", "-p", str(RELAY.pid), "-batch", "-ex",
                                "thread apply all bt"], stdout=out, stderr=subprocess.STDOUT,
                               timeout=120, check=False)
            print(f"\nrelay did not exit after SIGTERM; its threads:\n{summarize_stacks(stacks)}")
        self.assertEqual(rc, 0, "the relay did not exit cleanly after SIGTERM (a call never "
                                f"finished?)\n{RELAY.proc.describe()}")

    def setUp(self):
        self.cleanups_procs = []
        self.sessions = []
        self.assertTrue(RELAY.alive(), f"the relay has died:\n{RELAY.proc.describe()}")


# ---- TLS on both doors (a relay of its own) --------------------------------------------------


def make_tls_files(folder):
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, made by the openssl CLI;
    returns {"ca": path, "cert": path, "key": path}."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", folder / "ca.key", "-out", folder / "ca.pem",
            "-days", "2", "-subj", "/CN=interop-ca", "-addext", "basicConstraints=critical,CA:TRUE")
    openssl("req", "-new", *ec, "-keyout", folder / "server.key", "-out", folder / "server.csr",
            "-subj", "/CN=localhost")
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", folder / "server.csr", "-CA", folder / "ca.pem", "-CAkey",
            folder / "ca.key", "-set_serial", "77", "-days", "2", "-out", folder / "server.pem",
            "-extfile", folder / "server.ext")
    return {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}


class TlsPeers(InteropCase):
    """Python and Node clients over TLS to the gateway, native peers over TLS to the core door."""

    @classmethod
    def setUpClass(cls):
        cls.files = make_tls_files(WORK / "tls")
        cls.relay = Relay(ARGS.server, extra=(
            "--tls-native", "--tls-grpc", "--tls-cert-file",
            cls.files["cert"], "--tls-key-file", cls.files["key"]))
        cls.client = sb.Client(cls.relay.grpc, ca_file=str(cls.files["ca"]))

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.relay.proc.stop()

    def native_tls(self, *args):
        return [ARGS.cli, "--server", self.relay.core, "--ca-file", self.files["ca"], *args]

    def native_tls_echo(self, channel):
        proc = self.track(Proc("native-tls-echo",
                               self.native_tls("respond", "--channel", channel, "--echo")))
        proc.wait_for(r"^ready peer=", key="err", timeout=WAIT)

    def node_tls(self, name, role, channel, *extra):
        return self.track(Proc(name, [ARGS.node, NODE_PEER, role, "--server", self.relay.grpc,
                                      "--channel", channel, "--ca-file", self.files["ca"],
                                      *extra]))

    def native_tls_send(self, channel, body):
        return subprocess.run(self.native_tls("send", "--channel", channel), input=body,
                              capture_output=True, timeout=60, env=child_env())

    @cell("tls", "python", "native", "1MiB echo, TLS on both doors")
    def test_python_to_native(self):
        channel = new_channel()
        self.native_tls_echo(channel)
        body = os.urandom(MIB)
        self.assertEqual(sha(self.client.send(channel, body, timeout=60)), sha(body))

    @cell("tls", "node", "native", "1MiB echo, TLS on both doors")
    def test_node_to_native(self):
        channel = new_channel()
        self.native_tls_echo(channel)
        proc = self.node_tls("node-tls-send", "send", channel, "--size", str(MIB))
        status = node_status(proc, timeout=60)
        self.assertEqual(status.code, "OK", f"Node send over TLS: {status}\n{proc.describe()}")
        sent = proc.wait_for(r"^sent (\d+) (\S+)$").groups()
        self.assertEqual(proc.wait_for(r"^received (\d+) (\S+)$").groups(), sent)

    @cell("tls", "go", "native", "1MiB echo, TLS on both doors")
    def test_go_to_native(self):
        channel = new_channel()
        self.native_tls_echo(channel)
        proc = go_run("send", channel, "--size", str(MIB), "--ca-file", self.files["ca"],
                      server=self.relay.grpc, timeout=60.0)
        status = node_status(proc)
        self.assertEqual(status.code, "OK", f"Go send over TLS: {status}\n{proc.describe()}")
        sent = proc.wait_for(r"^sent (\d+) (\S+)$").groups()
        self.assertEqual(proc.wait_for(r"^received (\d+) (\S+)$").groups(), sent)

    @cell("tls", "native", "python", "1MiB echo, TLS on both doors")
    def test_native_to_python(self):
        channel = new_channel()

        def echo(request):
            for chunk in request:
                request.write(chunk)

        session = self.client.respond(channel, echo)
        self.sessions.append(session)
        body = os.urandom(MIB)
        done = self.native_tls_send(channel, body)
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        self.assertEqual(sha(done.stdout), sha(body))

    @cell("tls", "native", "node", "1MiB echo, TLS on both doors")
    def test_native_to_node(self):
        channel = new_channel()
        proc = self.node_tls("node-tls-respond", "respond", channel, "--mode", "echo")
        proc.wait_for(r"^ready (\S+) (\d+)$", timeout=20)
        body = os.urandom(MIB)
        done = self.native_tls_send(channel, body)
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        self.assertEqual(sha(done.stdout), sha(body))

    @cell("tls", "python (plaintext)", "-", "refused by the TLS gateway: UNAVAILABLE")
    def test_plaintext_python_refused(self):
        plain = sb.Client(self.relay.grpc)
        self.addCleanup(plain.close)
        with self.assertRaises(sb.SwitchboardError) as caught:
            plain.send(new_channel(), b"x", timeout=10)
        self.assert_error(caught.exception, "UNAVAILABLE", None, "plaintext client, TLS gateway")


ORDER = [Gateway, SendEcho, SendDetails, Broadcasts, GoPeers, SlowBroadcastReceiver, Presence,
         Failures, Malformed, AuthTokens, SlowReader, RespondWindows, Throughput, TlsPeers, Draining, Metrics,
         Shutdown]


# ---- main ----------------------------------------------------------------------------------


def prepare_node():
    if shutil.which(ARGS.node) is None and not Path(ARGS.node).exists():
        raise SystemExit(f"node not found ({ARGS.node})")
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").exists():
        print("clients/node/node_modules missing: running npm install once", flush=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, check=True,
                       timeout=600)


def print_matrix():
    rows = MatrixResult.rows
    headers = ("area", "from", "to", "case", "result")
    table = [(*row, outcome + (f" ({detail})" if detail and outcome != "PASS" else ""))
             for row, outcome, detail in rows]
    widths = [max(len(headers[i]), *(len(r[i]) for r in table)) if table else len(headers[i])
              for i in range(4)]
    print("\nInterop matrix")
    line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(headers[:4])) + "  " + headers[4]
    print(line)
    print("-" * min(160, len(line) + 20))
    for r in table:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4][:160])
    if FIGURES:
        print("\nFigures")
        for label, value in FIGURES:
            print(f"  {label}: {value}")


def main():
    global ARGS, WORK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="switchboard-server binary")
    parser.add_argument("--cli", required=True, help="switchboard CLI binary")
    parser.add_argument("--node", default="node", help="node binary")
    parser.add_argument("--go-peer", default="", help="switchboard-go-peer binary (clients/go); "
                        "without it the Go cases are skipped")
    parser.add_argument("--filter", default="", help="run only tests whose id contains this")
    parser.add_argument("--skip-large", action="store_true", help="skip 64 MiB and 256 MiB cases")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--timeout", type=float, default=1500.0, help="overall limit (s)")
    parser.add_argument("-v", "--verbose", action="store_true")
    ARGS = parser.parse_args()
    ARGS.server = str(Path(ARGS.server).resolve())
    ARGS.cli = str(Path(ARGS.cli).resolve())

    WORK = Path(tempfile.mkdtemp(prefix="switchboard-interop."))
    watchdog = threading.Timer(ARGS.timeout, lambda: (
        print(f"\ninterop: overall timeout ({ARGS.timeout} s) reached", flush=True),
        cleanup_processes(), print("0 passed, 1 failed", flush=True), os._exit(2)))
    watchdog.daemon = True
    watchdog.start()
    passed, failed = 0, 1
    try:
        passed, failed = run_suite()
    except Exception as error:  # noqa: BLE001 - set-up failed: report it, count it
        print(f"interop: set-up failed: {type(error).__name__}: {error}", flush=True)
        if RELAY is not None:
            print(RELAY.proc.describe())
    finally:
        watchdog.cancel()
        if CLIENT is not None:
            CLIENT.close()
        cleanup_processes()
        if ARGS.keep:
            print(f"scratch kept in {WORK}")
        else:
            shutil.rmtree(WORK, ignore_errors=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


def run_suite():
    """Sets up the stubs, Node, the relay and the client, runs the tests; (passed, failed)."""
    global RELAY, CLIENT, sb
    os.environ["SWITCHBOARD_PY_STUBS"] = str(WORK / "stubs")
    sys.path.insert(0, str(REPO / "clients" / "python"))
    import switchboard_client  # noqa: E402 - the stubs are generated on import
    import switchboard_client.client  # noqa: E402,F401
    sb = switchboard_client
    prepare_node()
    RELAY = Relay(ARGS.server)
    print(f"relay pid {RELAY.pid}: core {RELAY.core}, grpc {RELAY.grpc}", flush=True)
    CLIENT = sb.Client(RELAY.grpc)

    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for case in ORDER:
        for test in loader.loadTestsFromTestCase(case):
            # The clean-shutdown check runs whatever the filter: a call the gateway never
            # finished shows up there.
            if ARGS.filter in test.id() or case in (Metrics, Shutdown):
                suite.addTest(test)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=MatrixResult)
    result = runner.run(suite)
    if not result.wasSuccessful() and RELAY.proc.snapshot("err"):
        print("\nrelay stderr (last lines):")
        for line in RELAY.proc.snapshot("err")[-30:]:
            print(f"  {line}")
    print_matrix()
    failed = len(result.failures) + len(result.errors)
    if result.skipped:
        print(f"({len(result.skipped)} skipped)")
    return result.testsRun - failed - len(result.skipped), failed


if __name__ == "__main__":
    sys.exit(main())
