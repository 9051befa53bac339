"""Shared pieces of the Python cluster tests: Debian's etcd and cluster relays on loopback
ports, and bounded polling."""

import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

WAIT = 20.0  # bound on waiting for any one event (seconds)
POLL = 0.05


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def until(what, check, timeout=WAIT):
    """Polls `check` (bounded) until it returns a true value, which it returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL)
    raise SystemExit(f"FAIL: {what} within {timeout} s")


class Etcd:
    """Debian's etcd on free loopback ports in a scratch data directory."""

    def __init__(self, timeout=WAIT):
        self.dir = tempfile.mkdtemp(prefix="py-etcd-")
        client, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{client}"
        self.process = subprocess.Popen(
            ["etcd", "--data-dir", self.dir, "--listen-client-urls", self.url,
             "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def accepts():
            try:
                with socket.create_connection(("127.0.0.1", client), timeout=0.5):
                    return True
            except OSError:
                return False

        deadline = time.monotonic() + timeout
        while not accepts():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"etcd did not accept connections within {timeout} s")
            time.sleep(POLL)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Relay:
    """A cluster member on ephemeral ports of `host`; its output is drained continuously (the
    last lines are kept for failure messages)."""

    def __init__(self, binary, host, node_id, etcd_url, extra=()):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        self.node_id = node_id
        self.popen = subprocess.Popen(
            [binary, "--listen", f"{host}:0", "--grpc-listen", f"{host}:0",
             "--admin-listen", f"{host}:0", "--cluster-etcd", etcd_url, "--node-id", node_id,
             "--cluster-lease-ttl", "2s", *map(str, extra)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines = queue.Queue()
        self.tail = []
        self.doors = {}
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + WAIT
        while len(self.doors) < 3:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=remaining) if remaining > 0 else None
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise SystemExit(f"FAIL: relay {node_id} printed no listening lines:\n"
                                 + "\n".join(self.tail))
            words = line.split()
            if len(words) >= 3 and words[0] == "listening":
                self.doors[words[1]] = words[2]
        self.grpc = self.doors["grpc"]
        self.admin = self.doors["admin"]

    def _drain(self):
        for line in self.popen.stdout:
            self.tail = (self.tail + [line.rstrip()])[-50:]
            self.lines.put(line.strip())
        self.lines.put(None)

    def http(self, path):
        try:
            with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=2) as answer:
                return answer.status, answer.read().decode()
        except OSError:
            return None, ""

    def metric(self, name):
        """The value of the unlabelled sample `name` in /metrics, or None."""
        _, metrics = self.http("/metrics")
        for line in metrics.splitlines():
            sample, _, value = line.partition(" ")
            if sample == name:
                return int(float(value))
        return None

    def ready(self, members):
        """Healthy, and its membership view has `members` relays."""
        status, _ = self.http("/healthz")
        return status == 200 and self.metric("switchboard_cluster_members") == members

    def stop(self):
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
