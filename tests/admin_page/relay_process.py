"""A switchboard-server child on ephemeral loopback ports, for the admin page's tests."""

import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

START_TIMEOUT_S = 15


class Relay:
    """Starts the relay binary with `args` and learns its ports from its "listening" lines."""

    def __init__(self, binary, *args):
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
             "--admin-listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.addresses = {}
        deadline = time.monotonic() + START_TIMEOUT_S
        # The three lines come before anything else on stdout; readline returns "" at exit.
        while len(self.addresses) < 3 and time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            match = re.match(r"^listening (\w+) (\S+)$", line.strip())
            if match:
                self.addresses[match.group(1)] = match.group(2)
        if len(self.addresses) < 3:
            self.stop()
            self.log.seek(0)
            raise RuntimeError("relay did not start: " + self.log.read().decode(errors="replace"))

    @property
    def core(self):
        return self.addresses["core"]

    @property
    def admin_url(self):
        return "http://" + self.addresses["admin"]

    def get(self, path):
        """(status, headers, body) of GET admin_url + path; HTTP errors are answers too."""
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        if self.process.stdout:
            self.process.stdout.close()


def wait_until(condition, timeout_s, what):
    """Bounded polling: returns condition()'s first truthy value or raises naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


# The tests pass every address explicitly; an inherited default must not leak into the CLI.
os.environ.pop("SWITCHBOARD_SERVER", None)
