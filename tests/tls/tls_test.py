#!/usr/bin/python3
"""TLS on both doors of a real relay, with throwaway certificates made by the openssl CLI.

Usage: tls_test.py --server SWITCHBOARD_SERVER_BIN --cli SWITCHBOARD_CLI_BIN [-v]

Native door (the switchboard CLI, and Python's ssl module for the served certificate) and gRPC
door (Python grpc): a TLS round trip works, a plaintext client fails cleanly without disturbing
others, a wrong CA fails with a clear error, mutual TLS refuses a missing or untrusted client
certificate and accepts a good one, and certificate rotation: SIGHUP reloads the native door's
files (a stream opened before keeps flowing, new connections get the new certificate, a bad file
keeps the old one) and the gRPC door picks up new files by itself. Prints a TLS matrix and, as
the last line, `N passed, M failed`; exits nonzero on failure.
"""

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "support"))
import pki  # noqa: E402

WAIT = 15.0  # bound on waiting for any one event (seconds)
ARGS = None
WORK = None
RESULTS = []  # (door, case, "ok" | "FAIL", detail)


def log(text):
    if ARGS.verbose:
        print(f"    # {text}", file=sys.stderr, flush=True)


# ---- certificates ------------------------------------------------------------------------


def make_ca(name):
    return pki.make_ca(WORK, name)


def make_leaf(name, ca, serial, server):
    if server:
        return pki.make_leaf(WORK, name, ca, serial, san="IP:127.0.0.1,DNS:localhost")
    return pki.make_leaf(WORK, name, ca, serial, usage="clientAuth")


def fingerprint_of_pem(path):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(Path(path).read_text())).hexdigest()


class Pki:
    def __init__(self):
        self.ca = make_ca("ca")
        self.server = make_leaf("server", self.ca, 1001, True)
        self.server_next = make_leaf("server-next", self.ca, 2002, True)
        self.client = make_leaf("client", self.ca, 3003, False)
        self.rogue_ca = make_ca("rogue-ca")
        self.rogue_client = make_leaf("rogue-client", self.rogue_ca, 4004, False)


# ---- processes ---------------------------------------------------------------------------


class Proc:
    """A child process whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, argv, stdin=False):
        log("run " + " ".join(map(str, argv)))
        self.popen = subprocess.Popen(list(map(str, argv)), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE,
                                      stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self.lines = {"out": [], "err": []}
        self.cond = threading.Condition()
        self.readers = [threading.Thread(target=self._pump, args=(self.popen.stdout, "out"),
                                         daemon=True),
                        threading.Thread(target=self._pump, args=(self.popen.stderr, "err"),
                                         daemon=True)]
        for reader in self.readers:
            reader.start()

    def _pump(self, stream, key):
        for raw in iter(stream.readline, b""):
            with self.cond:
                self.lines[key].append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, pattern, key="out", timeout=WAIT):
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[key]:
                    found = regex.search(line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and key == "out"):
                    raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n"
                                         + "\n".join(self.lines["out"] + self.lines["err"]))
                self.cond.wait(min(left, 0.2))

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class Relay(Proc):
    def __init__(self, pki, native=True, grpc_tls=True, mutual=False, cert=None, key=None,
                 extra=()):
        argv = [ARGS.server, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0", "--log-level", "debug",
                "--tls-cert-file", cert or pki.server[1], "--tls-key-file", key or pki.server[0],
                "--tls-grpc-refresh-seconds", "1"]
        if native:
            argv.append("--tls-native")
        if grpc_tls:
            argv.append("--tls-grpc")
        if mutual:
            argv += ["--tls-client-ca-file", pki.ca[1]]
        super().__init__(argv + list(extra))
        self.core = self.wait_for(r"^listening core (\S+)$").group(1)
        self.grpc = self.wait_for(r"^listening grpc (\S+)$").group(1)
        self.admin = self.wait_for(r"^listening admin (\S+)$").group(1)

    def metric(self, name):
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=WAIT) as response:
            text = response.read().decode()
        found = re.search(rf"^{name}(?:{{[^}}]*}})? (\d+)$", text, re.M)
        return int(found.group(1)) if found else None


def cli(relay, *args, tls=()):
    return [ARGS.cli, "--server", relay.core, *tls, *args]


def native_responder(relay, channel, tls):
    proc = Proc(cli(relay, "respond", "--channel", channel, "--echo", tls=tls))
    proc.wait_for(r"^ready peer=", key="err")
    return proc


def native_send(relay, channel, body, tls):
    done = subprocess.run(list(map(str, cli(relay, "send", "--channel", channel, tls=tls))),
                          input=body, capture_output=True, timeout=WAIT)
    return done.returncode, done.stdout, done.stderr.decode(errors="replace")


def served_fingerprint(address, ca, alpn=None, client=None):
    """Handshakes with `address` and returns the SHA-256 of the certificate it served."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    if alpn:
        context.set_alpn_protocols([alpn])
    if client:
        context.load_cert_chain(str(client[1]), str(client[0]))
    with socket.create_connection((host, int(port)), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def grpc_health(address, credentials=None, timeout=5.0):
    """One real RPC (grpc.health.v1.Health/Check for the whole server) through the door.
    Returns "SERVING" or the gRPC status code name."""
    read = lambda path: Path(path).read_bytes() if path else None
    if credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(
            root_certificates=read(credentials.get("ca")),
            private_key=read(credentials.get("key")),
            certificate_chain=read(credentials.get("cert"))))
    try:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda body: body,
                                    response_deserializer=lambda body: body)
        response = check(b"", timeout=timeout)  # empty HealthCheckRequest: the whole server
        return "SERVING" if response == b"\x08\x01" else f"status bytes {response!r}"
    except grpc.RpcError as error:
        log(f"grpc error {error.code().name}: {error.details()}")
        return error.code().name
    finally:
        channel.close()


# ---- cases -------------------------------------------------------------------------------


def case(door, name):
    def mark(function):
        function.case = (door, name)
        return function
    return mark


class Cases:
    def __init__(self, pki):
        self.pki = pki
        self.tls = ["--ca-file", pki.ca[1]]
        self.tls_client = self.tls + ["--cert-file", pki.client[1], "--key-file", pki.client[0]]

    @case("native", "TLS round trip")
    def native_round_trip(self, relay):
        channel = str(uuid.uuid4())
        responder = native_responder(relay, channel, self.tls)
        try:
            body = os.urandom(300_000)
            rc, out, err = native_send(relay, channel, body, self.tls)
            assert rc == 0 and out == body, f"rc={rc} bytes={len(out)} err={err}"
        finally:
            responder.stop()

    @case("native", "plaintext client refused, others unaffected")
    def native_plaintext(self, relay):
        channel = str(uuid.uuid4())
        responder = native_responder(relay, channel, self.tls)
        try:
            before = relay.metric("switchboard_tls_handshake_failures_total")
            rc, _, err = native_send(relay, channel, b"plain", ())
            assert rc == 3, f"plaintext send rc={rc} err={err}"
            assert "cannot join" in err, err
            # The failure is counted once the relay has seen the bad handshake.
            deadline = time.monotonic() + WAIT
            while relay.metric("switchboard_tls_handshake_failures_total") <= before:
                assert time.monotonic() < deadline, "TLS handshake failure was not counted"
                time.sleep(0.05)
            rc, out, err = native_send(relay, channel, b"still fine", self.tls)
            assert rc == 0 and out == b"still fine", f"rc={rc} err={err}"
            assert responder.popen.poll() is None, "responder died"
        finally:
            responder.stop()

    @case("native", "wrong CA: clear error")
    def native_wrong_ca(self, relay):
        rc, _, err = native_send(relay, str(uuid.uuid4()), b"x", ["--ca-file", self.pki.rogue_ca[1]])
        assert rc == 3, f"rc={rc}"
        assert "UNAUTHENTICATED" in err and "certificate verify failed" in err, err

    @case("native", "mTLS: no client certificate refused")
    def native_mtls_none(self, relay):
        rc, _, err = native_send(relay, str(uuid.uuid4()), b"x", self.tls)
        assert rc == 3 and "certificate required" in err, f"rc={rc} err={err}"

    @case("native", "mTLS: untrusted client certificate refused")
    def native_mtls_rogue(self, relay):
        rogue = self.tls + ["--cert-file", self.pki.rogue_client[1], "--key-file",
                            self.pki.rogue_client[0]]
        rc, _, err = native_send(relay, str(uuid.uuid4()), b"x", rogue)
        assert rc == 3 and "unknown ca" in err, f"rc={rc} err={err}"

    @case("native", "mTLS: good client certificate accepted")
    def native_mtls_good(self, relay):
        channel = str(uuid.uuid4())
        responder = native_responder(relay, channel, self.tls_client)
        try:
            rc, out, err = native_send(relay, channel, b"mutual", self.tls_client)
            assert rc == 0 and out == b"mutual", f"rc={rc} err={err}"
        finally:
            responder.stop()

    @case("grpc", "TLS round trip")
    def grpc_round_trip(self, relay):
        assert grpc_health(relay.grpc, {"ca": self.pki.ca[1]}) == "SERVING"

    @case("grpc", "plaintext client refused, others unaffected")
    def grpc_plaintext(self, relay):
        result = grpc_health(relay.grpc)
        assert result == "UNAVAILABLE", result
        assert grpc_health(relay.grpc, {"ca": self.pki.ca[1]}) == "SERVING"

    @case("grpc", "wrong CA: clear error")
    def grpc_wrong_ca(self, relay):
        result = grpc_health(relay.grpc, {"ca": self.pki.rogue_ca[1]})
        assert result == "UNAVAILABLE", result

    @case("grpc", "mTLS: no client certificate refused")
    def grpc_mtls_none(self, relay):
        result = grpc_health(relay.grpc, {"ca": self.pki.ca[1]})
        assert result == "UNAVAILABLE", result

    @case("grpc", "mTLS: untrusted client certificate refused")
    def grpc_mtls_rogue(self, relay):
        result = grpc_health(relay.grpc, {"ca": self.pki.ca[1], "cert": self.pki.rogue_client[1],
                                          "key": self.pki.rogue_client[0]})
        assert result == "UNAVAILABLE", result

    @case("grpc", "mTLS: good client certificate accepted")
    def grpc_mtls_good(self, relay):
        result = grpc_health(relay.grpc, {"ca": self.pki.ca[1], "cert": self.pki.client[1],
                                          "key": self.pki.client[0]})
        assert result == "SERVING", result


def rotation(pki):
    """SIGHUP with rotated files: a stream in flight completes, new connections see the new
    certificate, a bad file keeps the old one; the gRPC door follows the files by itself."""
    live_dir = WORK / "live"
    live_dir.mkdir()
    cert, key = live_dir / "cert.pem", live_dir / "key.pem"
    shutil.copy(pki.server[1], cert)
    shutil.copy(pki.server[0], key)
    old, new = fingerprint_of_pem(pki.server[1]), fingerprint_of_pem(pki.server_next[1])
    relay = Relay(pki, cert=cert, key=key)
    tls = ["--ca-file", pki.ca[1]]
    channel = str(uuid.uuid4())
    responder = sender = None
    try:
        assert served_fingerprint(relay.core, pki.ca[1]) == old
        responder = native_responder(relay, channel, tls)
        # A stream opened before the reload, fed in pieces across it.
        sender = Proc(cli(relay, "send", "--channel", channel, tls=tls), stdin=True)
        first, second = b"before-reload\n", b"after-reload\n"
        sender.popen.stdin.write(first)
        sender.popen.stdin.flush()
        sender.wait_for("^before-reload$")

        def rotate_to(source):
            # Write beside, then rename: the relay never reads a half-written file.
            for src, dst in ((source[1], cert), (source[0], key)):
                shutil.copy(src, str(dst) + ".tmp")
                os.replace(str(dst) + ".tmp", dst)

        rotate_to(pki.server_next)
        relay.popen.send_signal(signal.SIGHUP)
        relay.wait_for(r"tls reloaded", key="err")
        results = {}
        served = served_fingerprint(relay.core, pki.ca[1])
        results["native: new connection sees the new certificate"] = served == new
        sender.popen.stdin.write(second)
        sender.popen.stdin.close()
        sender.popen.wait(WAIT)
        for reader in sender.readers:
            reader.join(5)
        results["native: stream opened before SIGHUP completes"] = (
            sender.popen.returncode == 0 and sender.lines["out"] == ["before-reload",
                                                                      "after-reload"])
        rc, out, err = native_send(relay, channel, b"new connection", tls)
        results["native: old responder serves a new TLS client"] = rc == 0 and out == (
            b"new connection")
        # A bad certificate file on reload: logged, and the previous certificate stays.
        shutil.copy(pki.server[1], cert)  # does not match the key now in place
        relay.popen.send_signal(signal.SIGHUP)
        relay.wait_for(r"tls reload failed", key="err")
        results["native: bad file on reload keeps the old certificate"] = (
            served_fingerprint(relay.core, pki.ca[1]) == new)
        # gRPC: the file watcher (1 s here) picks up a matching pair by itself, and keeps the
        # previous pair while the files do not match.
        rotate_to(pki.server_next)
        deadline = time.monotonic() + WAIT
        while served_fingerprint(relay.grpc, pki.ca[1], alpn="h2") != new:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        results["grpc: new connection sees the new certificate"] = (
            served_fingerprint(relay.grpc, pki.ca[1], alpn="h2") == new)
        results["grpc: TLS call after rotation"] = (
            grpc_health(relay.grpc, {"ca": pki.ca[1]}) == "SERVING")
        return results
    finally:
        for proc in (sender, responder, relay):
            if proc:
                proc.stop()


def prompt_sigterm(pki, connect):
    """Starts a relay with a 30 s handshake timeout, holds the connection `connect(relay)`
    opens, and sends SIGTERM: the relay must exit cleanly without waiting out that timeout.
    Returns the time the exit took."""
    relay = Relay(pki, grpc_tls=False, extra=("--handshake-timeout", "30s"))
    try:
        with connect(relay):
            started = time.monotonic()
            relay.popen.send_signal(signal.SIGTERM)
            relay.popen.wait(WAIT)
            elapsed = time.monotonic() - started
        assert relay.popen.returncode == 0, f"exit code {relay.popen.returncode}"
        assert elapsed < 5.0, f"exit took {elapsed:.1f} s"
        return elapsed
    finally:
        relay.stop()


def shutdown_with_silent_handshake(pki):
    """A client that connects and never starts its TLS handshake must not hold the relay's
    shutdown for the handshake timeout (30 s here)."""

    def connect(relay):
        host, port = relay.core.rsplit(":", 1)
        connection = socket.create_connection((host, int(port)), timeout=WAIT)
        time.sleep(0.2)  # the relay has accepted it and waits for a ClientHello
        return connection

    return f"exit after {prompt_sigterm(pki, connect) * 1000:.0f} ms"


def tls_client(pki, relay):
    """A TLS connection to the relay's native door that has finished its handshake and sent
    nothing."""
    host, port = relay.core.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(pki.ca[1]))
    raw = socket.create_connection((host, int(port)), timeout=WAIT)
    return context.wrap_socket(raw, server_hostname=host)


def silent_after_handshake(pki):
    """A client silent after its TLS handshake gets the handshake-timeout ERROR, as a silent
    plaintext client does (the relay reads a TLS connection's first byte to tell a shared
    connection from a single one, within the same timeout); and a SIGTERM then does not wait
    for that read."""
    relay = Relay(pki, grpc_tls=False, extra=("--handshake-timeout", "1s"))
    try:
        with tls_client(pki, relay) as tls:
            received = b""
            while b"handshake timeout" not in received:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                received += chunk
        assert b"handshake timeout" in received, f"relay sent {received!r}"
    finally:
        relay.stop()
    elapsed = prompt_sigterm(pki, lambda relay: tls_client(pki, relay))
    return f"ERROR received; exit after {elapsed * 1000:.0f} ms"


def run_case(door, name, function, relay):
    started = time.monotonic()
    try:
        function(relay)
        RESULTS.append((door, name, "ok", f"{(time.monotonic() - started) * 1000:.0f} ms"))
    except Exception as error:  # report every failure, keep going
        RESULTS.append((door, name, "FAIL", str(error).splitlines()[0][:200]))
        print(f"not ok - {door}: {name}\n{error}", file=sys.stderr)


def main():
    global ARGS, WORK
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--cli", required=True)
    parser.add_argument("-v", "--verbose", action="store_true")
    ARGS = parser.parse_args()
    WORK = Path(tempfile.mkdtemp(prefix="switchboard-tls-test."))
    try:
        pki = Pki()
        cases = Cases(pki)
        relay = Relay(pki)
        try:
            for function in (cases.native_round_trip, cases.native_plaintext,
                             cases.native_wrong_ca, cases.grpc_round_trip, cases.grpc_plaintext,
                             cases.grpc_wrong_ca):
                run_case(*function.case, function, relay)
            assert relay.popen.poll() is None, "relay died"
        finally:
            relay.stop()
        mutual = Relay(pki, mutual=True)
        try:
            for function in (cases.native_mtls_none, cases.native_mtls_rogue,
                             cases.native_mtls_good, cases.grpc_mtls_none,
                             cases.grpc_mtls_rogue, cases.grpc_mtls_good):
                run_case(*function.case, function, mutual)
        finally:
            mutual.stop()
        try:
            for name, passed in rotation(pki).items():
                door, what = name.split(": ", 1)
                RESULTS.append((door, "reload: " + what, "ok" if passed else "FAIL", ""))
        except Exception as error:
            RESULTS.append(("both", "reload", "FAIL", str(error).splitlines()[0][:200]))
            print(f"not ok - reload\n{error}", file=sys.stderr)
        try:
            detail = shutdown_with_silent_handshake(pki)
            RESULTS.append(("native", "SIGTERM with a client mid-handshake: prompt exit", "ok",
                            detail))
        except Exception as error:
            RESULTS.append(("native", "SIGTERM with a client mid-handshake: prompt exit", "FAIL",
                            str(error).splitlines()[0][:200]))
        name = "silent after the TLS handshake: ERROR, prompt SIGTERM"
        try:
            RESULTS.append(("native", name, "ok", silent_after_handshake(pki)))
        except Exception as error:
            RESULTS.append(("native", name, "FAIL", str(error).splitlines()[0][:200]))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)

    print("TLS matrix")
    print(f"  {'door':<7} {'case':<58} result")
    for door, name, result, detail in RESULTS:
        print(f"  {door:<7} {name:<58} {result:<5} {detail}")
    failed = sum(1 for r in RESULTS if r[2] != "ok")
    print(f"{len(RESULTS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
