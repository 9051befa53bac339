#!/usr/bin/python3
"""The table of attacks: each row attacks a real relay the way a hostile or broken peer would and
checks what the relay must do about it. Prints `attack | door | expected | got | relay RSS`, one
row per attack, and exits 1 unless every row got what it expected.

Usage: attacks.py --server switchboard-server --cli switchboard [--only native|grpc]

Native rows speak the wire protocol (docs/PROTOCOL.md) over plain sockets; gRPC rows use raw
HTTP/2 frames or the generated Python stubs. Everything runs on 127.0.0.1, every wait is bounded.
"""

import argparse
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import native  # noqa: E402  (the wire protocol, for raw native peers)

SLOW_CONSUMER_S = 1.0
WRITE_TIMEOUT_S = 2.0
HANDSHAKE_S = 1.0
BROADCAST_BYTES = 8 * 1024 * 1024
BUDGET_MIB = 16  # the relay's per-connection buffer budget in this run


def vm_kib(pid, field):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Relay:
    """The relay binary on ephemeral loopback ports, with short timeouts."""

    def __init__(self, binary, extra=()):
        args = [binary, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0", "--threads", "2",
                "--slow-consumer-timeout-ms", str(int(SLOW_CONSUMER_S * 1000)),
                "--write-timeout-ms", str(int(WRITE_TIMEOUT_S * 1000)),
                "--handshake-timeout-ms", str(int(HANDSHAKE_S * 1000)),
                "--keepalive-ms", "60000", "--idle-timeout-ms", "20000",
                "--drain-timeout-ms", "2000", *extra]
        self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.ports = {}
        ready = threading.Event()

        def pump():
            for line in self.popen.stdout:
                self.lines.append(line.rstrip("\n"))
                match = re.search(r"^listening (core|grpc|admin) \S+:(\d+)$", line.strip())
                if match:
                    self.ports[match.group(1)] = int(match.group(2))
                    if len(self.ports) == 3:
                        ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(15):
            self.stop()
            raise RuntimeError("relay did not start:\n" + "\n".join(self.lines))
        self.core = self.ports["core"]
        self.grpc = self.ports["grpc"]

    def rss_mib(self):
        return vm_kib(self.popen.pid, "VmRSS") / 1024

    def peak_mib(self):
        return vm_kib(self.popen.pid, "VmHWM") / 1024

    def warnings(self, pattern):
        return [line for line in self.lines if re.search(pattern, line)]

    def stop(self):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class Cli:
    def __init__(self, binary, relay):
        self.binary = binary
        self.relay = relay

    def args(self, *args):
        return [self.binary, "--server", f"127.0.0.1:{self.relay.core}", *args]

    def listener(self, channel):
        """`switchboard listen` discarding what it receives; returns once it has joined."""
        popen = subprocess.Popen(self.args("listen", "--channel", channel),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        line = popen.stderr.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"listener did not join: {line!r}")
        return popen

    def broadcast(self, channel, size):
        """Broadcasts `size` bytes; returns (exit code, summary line, seconds)."""
        start = time.monotonic()
        done = subprocess.run(self.args("broadcast", "--channel", channel),
                              input=os.urandom(size), capture_output=True, timeout=60)
        elapsed = time.monotonic() - start
        return done.returncode, done.stderr.decode(errors="replace").strip(), elapsed


class Table:
    def __init__(self):
        self.rows = []

    def add(self, attack, door, expected, got, ok, rss):
        self.rows.append((attack, door, expected, got, "yes" if ok else "NO", f"{rss:.1f}"))
        print(f"| {attack} | {door} | {expected} | {got} | {self.rows[-1][4]} | {rss:.1f} |",
              flush=True)

    def all_ok(self):
        return all(row[4] == "yes" for row in self.rows)


def pinger(peer, stop):
    """Keeps a raw peer looking alive (it sends) while it reads nothing."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            peer.send(native.ping(n))
        except OSError:
            return
        stop.wait(0.02)


# ---- native rows -------------------------------------------------------------------------------


def stalled_broadcast_row(relay, cli, table, window, broadcasts, label):
    channel = str(uuid.uuid4())
    listeners = [cli.listener(channel) for _ in range(2)]
    try:
        rc, summary, baseline = cli.broadcast(channel, BROADCAST_BYTES)
        if rc != 0 or "delivered=2" not in summary:
            table.add(label, "native", "baseline broadcast", summary, False, relay.rss_mib())
            return
        stalled = native.Peer(relay.core, receive_buffer=4096)
        stalled.join(channel, window=window)
        stop = threading.Event()
        thread = threading.Thread(target=pinger, args=(stalled, stop), daemon=True)
        thread.start()
        results = []
        try:
            for _ in range(broadcasts):
                results.append(cli.broadcast(channel, BROADCAST_BYTES))
        finally:
            stop.set()
            thread.join()
            stalled.close()
        bound = baseline + SLOW_CONSUMER_S + 1.0
        ok = all(rc == 0 and "delivered=2 dropped=1" in s and t < bound for rc, s, t in results)
        got = "; ".join(f"{s} in {t:.2f} s" for _, s, t in results)
        table.add(label, "native",
                  f"each: delivered=2 dropped=1 within {bound:.2f} s "
                  f"(baseline {baseline:.2f} s + timeout + 1 s)", got, ok, relay.rss_mib())
    finally:
        for listener in listeners:
            listener.terminate()
            listener.wait(5)


def stalled_responder_row(relay, cli, table):
    channel = str(uuid.uuid4())
    stalled = native.Peer(relay.core, receive_buffer=4096)
    peer_id = stalled.join(channel, window=32 << 20, accept_requests=True)
    stop = threading.Event()
    thread = threading.Thread(target=pinger, args=(stalled, stop), daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        done = subprocess.run(cli.args("send", "--channel", channel, "--to", peer_id),
                              input=os.urandom(BROADCAST_BYTES), capture_output=True, timeout=60)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
        stalled.close()
    err = done.stderr.decode(errors="replace").strip().splitlines()
    got = f"exit {done.returncode} ({err[-1] if err else ''}) after {elapsed:.1f} s"
    ok = done.returncode == 12 and "PEER_GONE" in got and elapsed < WRITE_TIMEOUT_S + 5
    table.add("responder with credit never reads its socket (keeps sending)", "native",
              f"connection closed at the write timeout ({WRITE_TIMEOUT_S:.0f} s); "
              "requester: PEER_GONE (exit 12)", got, ok, relay.rss_mib())


def connection_error_row(relay, table, label, frames, expected_words, join_first=True):
    peer = native.Peer(relay.core)
    try:
        if join_first:
            peer.join(str(uuid.uuid4()))
        peer.send(frames)
        frame = peer.expect(native.ERROR, timeout=5)
        closed = peer.expect_closed(timeout=5)
    finally:
        peer.close()
    if frame is None:
        table.add(label, "native", "ERROR PROTOCOL_ERROR, closed", "no ERROR frame", False,
                  relay.rss_mib())
        return
    status, message = native.parse_error(frame[3])
    ok = status == native.PROTOCOL_ERROR and closed and all(w in message for w in expected_words)
    table.add(label, "native", "ERROR PROTOCOL_ERROR, closed",
              f"ERROR {native.status_name(status)} \"{message}\", "
              f"{'closed' if closed else 'still open'}", ok, relay.rss_mib())


def open_mismatch_row(relay, table):
    peer = native.Peer(relay.core)
    got, ok = [], True
    try:
        peer.join(str(uuid.uuid4()))
        cases = ((1, native.KIND_ANY, uuid.uuid4().bytes, "to any naming a peer"),
                 (3, native.KIND_PEER, None, "to a peer naming none"))
        for stream, kind, target, label in cases:
            peer.send(native.open_frame(stream, kind, peer=target, body=b"x", fin=True))
            frame = peer.expect(native.RESET, timeout=5)
            if frame is None:
                got.append(f"{label}: no RESET")
                ok = False
                continue
            status, message = native.parse_reset(frame[3])
            ok = ok and status == native.PROTOCOL_ERROR
            got.append(f"{label}: RESET {native.status_name(status)} \"{message}\"")
        alive = peer.expect_nothing(0.1)
    finally:
        peer.close()
    table.add("OPEN to any naming a peer; OPEN to a peer naming none", "native",
              "RESET PROTOCOL_ERROR on that stream, connection stays",
              "; ".join(got) + (", stays" if alive else ", closed"), ok and alive,
              relay.rss_mib())


def slowloris_row(relay, table):
    peer = native.Peer(relay.core)
    start = time.monotonic()
    try:
        peer.send(native.hello_frame(str(uuid.uuid4()))[:10])  # a HELLO that never completes
        frame = peer.expect(native.ERROR, timeout=HANDSHAKE_S + 5)
        closed = peer.expect_closed(timeout=5)
    finally:
        peer.close()
    elapsed = time.monotonic() - start
    message = native.parse_error(frame[3])[1] if frame else "no ERROR"
    ok = frame is not None and "handshake timeout" in message and closed
    table.add("HELLO trickled, never completed", "native",
              f"ERROR \"handshake timeout\" after {HANDSHAKE_S:.0f} s, closed",
              f"\"{message}\" after {elapsed:.1f} s", ok, relay.rss_mib())


def connect_flood_row(relay, table):
    # From 127.0.0.2, whose bucket nothing else has used: 100 connections at once are admitted
    # (the relay runs with a burst of 100), the rest of a burst of 150 is refused at accept.
    sockets, refused, admitted = [], 0, 0
    try:
        for _ in range(150):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.2", 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", relay.core))
            sockets.append(s)
        # Every connection ends with an ERROR: RESOURCE_EXHAUSTED at accept for a refused one,
        # "handshake timeout" (PROTOCOL_ERROR, after 1 s) for an admitted one that sends nothing.
        deadline = time.monotonic() + HANDSHAKE_S + 10
        for s in sockets:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = s.recv(4096)
            except (socket.timeout, ConnectionError):
                data = b""
            status = native.parse_error(data[12:])[0] if len(data) >= 16 and \
                data[0] == native.ERROR else None
            refused += status == native.RESOURCE_EXHAUSTED
            admitted += status == native.PROTOCOL_ERROR
    finally:
        for s in sockets:
            s.close()
    ok = refused >= 40 and 100 <= admitted <= 110
    table.add("150 connections at once from one address (burst 100, 20/s)", "native",
              "100 admitted (+ refill), the rest ERROR RESOURCE_EXHAUSTED at accept",
              f"{admitted} admitted, {refused} refused", ok, relay.rss_mib())


def native_rows(relay, cli, table):
    stalled_broadcast_row(relay, cli, table, 32 << 20, 1,
                          "broadcast receiver, 32 MiB window, never reads its socket")
    stalled_broadcast_row(relay, cli, table, 1 << 20, 3,
                          "broadcast receiver, default window, stops reading (3 broadcasts)")
    stalled_responder_row(relay, cli, table)
    connection_error_row(relay, table, "HELLO stream_window 2^31",
                         native.hello_frame(str(uuid.uuid4()), window=1 << 31), ["HELLO"],
                         join_first=False)
    connection_error_row(relay, table, "OPEN skipping a stream id",
                         native.open_frame(1, native.KIND_BROADCAST, fin=True) +
                         native.open_frame(5, native.KIND_BROADCAST, fin=True),
                         ["expected 3"])
    connection_error_row(relay, table, "frame header announcing 16 MiB",
                         struct.pack(">BBHII", native.DATA, 0, 0, 1, 16 << 20), ["frame"])
    open_mismatch_row(relay, table)
    slowloris_row(relay, table)
    connect_flood_row(relay, table)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--cli", required=True)
    parser.add_argument("--only", default="", choices=["", "native", "grpc"])
    args = parser.parse_args()

    table = Table()
    print("| attack | door | expected | got | as expected | relay RSS MiB |")
    print("|---|---|---|---|---|---|")
    relay = Relay(args.server, ["--connect-burst-per-address", "100",
                                "--connect-rate-per-address", "20",
                                "--max-connection-buffer", f"{BUDGET_MIB}MiB"])
    try:
        cli = Cli(args.cli, relay)
        if args.only in ("", "native"):
            native_rows(relay, cli, table)
        if args.only in ("", "grpc"):
            import grpc_rows

            grpc_rows.bad_first_message_rows(relay, table)
            grpc_rows.reflection_row(relay, table)
            grpc_rows.respond_head_of_line_row(relay, cli, table)
            grpc_rows.send_ok_trailer_row(relay, cli, table)
            grpc_rows.stalled_grpc_receiver_row(relay, cli, table, SLOW_CONSUMER_S)
            grpc_rows.header_flood_row(relay, table)
            grpc_rows.window_zero_row(relay, table, cli, BUDGET_MIB)
        print(f"relay peak RSS over these rows: {relay.peak_mib():.1f} MiB")
    finally:
        relay.stop()
    if args.only in ("", "grpc"):
        import grpc_rows

        grpc_rows.auth_relay_rows(args.server, args.cli, Relay, Cli, table)
        grpc_rows.sigterm_after_flood_row(args.server, Relay, table)
    failed = [row for row in table.rows if row[4] != "yes"]
    print(f"{len(table.rows) - len(failed)} passed, {len(failed)} failed")
    return 0 if table.all_ok() else 1


if __name__ == "__main__":
    sys.exit(main())
