"""The operator page in headless Chromium against a real relay carrying real CLI traffic.

Checks that the page is off without admin_introspection, that its files come with the right
types and a Content-Security-Policy, that it shows the channels, their peers, an open stream and
a non-zero byte rate, that the console has no errors, and that it says "relay unreachable" once
the relay is gone. Saves screenshots in --artifacts.
"""

import argparse
import os
import subprocess
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from relay_process import Relay, wait_until

PAGE_TIMEOUT_S = 30
CHUNK = b"x" * 16384


def check_gating(server):
    relay = Relay(server)
    try:
        for path in ("/ui/", "/ui/app.js", "/ui"):
            status, _, body = relay.get(path)
            assert status == 404, f"{path} without admin_introspection: {status} {body!r}"
        status, _, _ = relay.get("/metrics")
        assert status == 200, f"/metrics: {status}"
        print("ok - page off without admin_introspection (/ui/, /ui/app.js, /ui: 404)")
    finally:
        relay.stop()


def check_files(relay):
    expected = {
        "/ui/": "text/html; charset=utf-8",
        "/ui/index.html": "text/html; charset=utf-8",
        "/ui/app.js": "text/javascript; charset=utf-8",
        "/ui/style.css": "text/css; charset=utf-8",
    }
    for path, content_type in expected.items():
        status, headers, body = relay.get(path)
        assert status == 200, f"{path}: {status}"
        assert headers["Content-Type"] == content_type, f"{path}: {headers['Content-Type']}"
        policy = headers["Content-Security-Policy"] or ""
        for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'",
                          "style-src 'self'"):
            assert directive in policy, f"{path}: CSP lacks {directive}: {policy!r}"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert body, f"{path}: empty body"
    status, _, _ = relay.get("/ui/missing.js")
    assert status == 404, f"/ui/missing.js: {status}"
    print("ok - page files served with their types and a CSP forbidding remote loads")


class Traffic:
    """CLI peers: on channel A an echo responder and one long stream fed continuously; on channel
    B two listeners and a responder that has answered a few short requests."""

    def __init__(self, cli, relay, workdir):
        self.cli = cli
        self.relay = relay
        self.workdir = workdir
        self.processes = []
        self.stop_feeding = threading.Event()
        self.channel_a = self.uuid()
        self.channel_b = self.uuid()

    def uuid(self):
        return subprocess.run([self.cli, "uuid"], check=True, capture_output=True,
                              text=True).stdout.strip()

    def start(self, name, *args, stdin=subprocess.DEVNULL):
        err = open(os.path.join(self.workdir, name + ".err"), "w+")
        process = subprocess.Popen([self.cli, "--server", self.relay.core, *args], stdin=stdin,
                                   stdout=subprocess.PIPE if stdin == subprocess.PIPE
                                   else subprocess.DEVNULL, stderr=err)
        self.processes.append(process)
        return process, err

    def start_ready(self, name, *args):
        process, err = self.start(name, *args)

        def ready():
            err.seek(0)
            if process.poll() is not None:
                raise AssertionError(f"{name} exited {process.returncode}: {err.read()}")
            return "ready peer=" in err.read()

        wait_until(ready, 15, f"{name}'s ready line")

    def run(self):
        self.start_ready("responder-a", "respond", "--channel", self.channel_a, "--echo")
        self.start_ready("responder-b", "respond", "--channel", self.channel_b, "--echo")
        self.start_ready("listener-b1", "listen", "--channel", self.channel_b)
        self.start_ready("listener-b2", "listen", "--channel", self.channel_b)
        for i in range(3):
            out = subprocess.run([self.cli, "--server", self.relay.core, "send", "--channel",
                                  self.channel_b], input=b"request %d" % i, capture_output=True,
                                 timeout=30)
            assert out.returncode == 0 and out.stdout == b"request %d" % i, out
        # The long stream: its input stays open and keeps coming until the test ends.
        sender, _ = self.start("long-sender", "send", "--channel", self.channel_a,
                               stdin=subprocess.PIPE)
        threading.Thread(target=self.feed, args=(sender,), daemon=True).start()
        threading.Thread(target=self.drain, args=(sender,), daemon=True).start()

    def feed(self, sender):
        try:
            while not self.stop_feeding.is_set():
                sender.stdin.write(CHUNK)
                sender.stdin.flush()
                # A steady trickle (about 320 KiB/s), so every one-second poll sees bytes move.
                self.stop_feeding.wait(0.05)
        except (BrokenPipeError, ValueError):
            pass

    @staticmethod
    def drain(sender):
        while sender.stdout.read(65536):
            pass

    def stop(self):
        self.stop_feeding.set()
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=15)


def make_driver():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1200", "--force-prefers-reduced-motion"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


# One script reads everything the checks look at, so a render between two reads (the page
# replaces its rows every second) cannot mix polls or leave a stale element reference.
READ_PAGE = """
const text = (css) => { const e = document.querySelector(css); return e ? e.textContent : null; };
const value = (css) => {
  const e = document.querySelector(css);
  return e && e.dataset.value !== undefined ? Number(e.dataset.value) : null;
};
const peers = {};
for (const row of document.querySelectorAll('#channels tr[data-channel]')) {
  peers[row.dataset.channel] = row.querySelector('td.peers').textContent;
}
return {
  status: text('#status'),
  channels: text('#tile-channels'),
  peers: text('#tile-peers'),
  streamsOpenText: text('#tile-streams-open'),
  streamsOpen: value('#tile-streams-open'),
  nativeInText: text('#door-native td.rate-in'),
  nativeIn: value('#door-native td.rate-in'),
  nativeOutText: text('#door-native td.rate-out'),
  okRow: text('tr[data-status="OK"] td:first-child'),
  okNative: value('tr[data-status="OK"] td:nth-child(2)'),
  channelPeers: peers,
  body: document.body.innerText,
};
"""


def read_page(driver):
    return driver.execute_script(READ_PAGE)


def check_page(driver, relay, traffic, artifacts):
    driver.get(relay.admin_url + "/ui/")
    a, b = traffic.channel_a, traffic.channel_b

    def page_shows_traffic(d):
        page = read_page(d)
        done = (page["channelPeers"].get(a) == "2" and page["channelPeers"].get(b) == "3"
                and (page["streamsOpen"] or 0) > 0 and (page["nativeIn"] or 0) > 0)
        return page if done else None

    started = time.monotonic()
    page = WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.1).until(
        page_shows_traffic, "the page never showed both channels, an open stream and bytes/s")
    print(f"ok - page shows the traffic ({time.monotonic() - started:.1f} s after loading)")

    assert page["status"] == "live", page["status"]
    assert page["channels"] == "2", page["channels"]
    assert page["peers"] == "5", page["peers"]
    assert a in page["body"] and b in page["body"], "channel ids missing from the page text"
    assert page["streamsOpenText"] not in ("0", "–"), page["streamsOpenText"]
    rate_in = page["nativeInText"]
    assert rate_in.endswith("/s") and not rate_in.startswith("0 "), rate_in
    assert page["okRow"] == "OK", page["okRow"]
    assert page["okNative"] >= 6, f"OK native stream ends: {page['okNative']} (3 requests, two each)"
    assert "Handshake failures" in page["body"] and "Auth failures" in page["body"], \
        "failure counters missing"
    print(f"ok - DOM: channels=2 peers=5 A=2 B=3 open stream ends={page['streamsOpenText']} "
          f"native in={rate_in} out={page['nativeOutText']} OK native ends={page['okNative']:.0f}")

    screenshot = os.path.join(artifacts, "admin_page.png")
    driver.save_screenshot(screenshot)
    print(f"screenshot: {screenshot}")

    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, f"console errors: {errors}"
    print("ok - no console errors")


def check_unreachable(driver, relay, artifacts):
    relay.stop()
    WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.1).until(
        lambda d: read_page(d)["status"] == "relay unreachable",
        "the page never said the relay is unreachable")
    screenshot = os.path.join(artifacts, "admin_page_unreachable.png")
    driver.save_screenshot(screenshot)
    # The failed polls are logged by the browser itself; anything else is a page error.
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
              and "ERR_CONNECTION_REFUSED" not in entry["message"]]
    assert not errors, f"console errors after the relay went away: {errors}"
    print(f"ok - page says 'relay unreachable' once the relay is gone (screenshot: {screenshot})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--cli", required=True)
    parser.add_argument("--artifacts", required=True)
    args = parser.parse_args()
    os.makedirs(args.artifacts, exist_ok=True)

    check_gating(args.server)
    relay = Relay(args.server, "--admin-introspection")
    traffic = Traffic(args.cli, relay, args.artifacts)
    driver = None
    try:
        check_files(relay)
        traffic.run()
        driver = make_driver()
        check_page(driver, relay, traffic, args.artifacts)
        traffic.stop()
        check_unreachable(driver, relay, args.artifacts)
    finally:
        if driver:
            driver.quit()
        traffic.stop()
        relay.stop()
    print("admin page: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
