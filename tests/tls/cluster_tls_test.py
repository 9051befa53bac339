#!/usr/bin/python3
"""gRPC calls carried between the relays of a real cluster whose gRPC doors use TLS.

Usage: cluster_tls_test.py --server SWITCHBOARD_SERVER_BIN

Throwaway certificates (openssl CLI): a cluster CA, one certificate per relay naming only its
own address (SAN IP 127.0.0.1, 127.0.0.2, 127.0.0.3), a client certificate, and a second,
unrelated CA. One etcd and, in each of two phases (server TLS, then mutual TLS with
--tls-client-ca-file), three relays: r1 and r2 verify each other with --cluster-ca-file CA, r3
is given the unrelated CA as its --cluster-ca-file. Python grpc over TLS: a responder joins r2
directly on a channel r2 serves; a Send through r1 is carried (r1's
switchboard_cluster_carried_calls_total grows), echoes the bytes and names r2 in
switchboard-served-by; the same Send through r3 fails with UNAVAILABLE before its deadline,
and calls through r1 and on r3's own channels keep working. Prints one line per check and
`PASS` at the end; exits nonzero on failure.
"""

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "tests" / "support"))
sys.path.insert(0, str(REPO / "clients" / "python"))
import pki  # noqa: E402
from cluster import Etcd, Relay, until  # noqa: E402

BODY_BYTES = 300_000
CALL_DEADLINE_S = 10.0
CARRIED = "switchboard_cluster_carried_calls_total"


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAIL: {what}")
    print(f"ok {what}", flush=True)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class Certificates:
    def __init__(self, work):
        self.ca = pki.make_ca(work, "cluster-ca")
        # A relay's certificate is its server certificate and, towards doors that ask for one,
        # its client certificate when it carries calls.
        self.relay = {host: pki.make_leaf(work, f"relay-{host}", self.ca, serial,
                                          san=f"IP:{host}", usage="serverAuth,clientAuth")
                      for serial, host in enumerate(("127.0.0.1", "127.0.0.2", "127.0.0.3"), 1)}
        self.client = pki.make_leaf(work, "client", self.ca, 100, usage="clientAuth")
        self.other_ca = pki.make_ca(work, "other-ca")


def start_relays(server, etcd, certs, prefix, mutual):
    relays = []
    try:
        for index, host in enumerate(("127.0.0.1", "127.0.0.2", "127.0.0.3"), 1):
            key, cert = certs.relay[host]
            cluster_ca = certs.other_ca[1] if index == 3 else certs.ca[1]
            extra = ["--tls-grpc", "--tls-cert-file", cert, "--tls-key-file", key,
                     "--cluster-ca-file", cluster_ca, "--log-level", "debug"]
            if mutual:
                extra += ["--tls-client-ca-file", certs.ca[1]]
            relays.append(Relay(server, host, f"{prefix}{index}", etcd.url, extra))
        until(f"{prefix}: three relays healthy with 3 members",
              lambda: all(relay.ready(3) for relay in relays))
    except BaseException:
        for relay in relays:
            relay.stop()
        raise
    return relays


def phase(sb, pb2, certs, relays, mutual):
    r1, r2, r3 = relays
    name = "mutual TLS" if mutual else "TLS"
    tls = {"ca_file": str(certs.ca[1])}
    if mutual:
        tls.update(cert_file=str(certs.client[1]), key_file=str(certs.client[0]))

    def client(relay):
        return sb.Client(relay.grpc, locate=False, **tls)

    with client(r1) as on_r1, client(r2) as on_r2, client(r3) as on_r3:
        # A channel r2 serves, and one r3 serves, as r1 sees them; r3 must agree.
        there = mine = None
        for _ in range(500):
            channel = str(uuid.uuid4())
            answer = on_r1.stub.Locate(pb2.LocateRequest(channel=channel), timeout=5)
            if there is None and answer.node_id == r2.node_id:
                there = channel
            elif mine is None and answer.node_id == r3.node_id:
                mine = channel
            if there and mine:
                break
        check(there and mine, f"{name}: Locate on r1 names r2 and r3 for some channels")
        answer = on_r3.stub.Locate(pb2.LocateRequest(channel=there), timeout=5)
        check(answer.node_id == r2.node_id and answer.grpc_address == r2.grpc,
              f"{name}: r3 locates the channel at r2 too ({answer.grpc_address})")

        def echo(request):
            return request.read()

        if mutual:
            # The doors really ask for a client certificate, so r1 must present its own.
            with sb.Client(r2.grpc, locate=False, ca_file=str(certs.ca[1])) as anonymous:
                try:
                    anonymous.list_peers(there, timeout=CALL_DEADLINE_S)
                    refused = None
                except sb.SwitchboardError as error:
                    refused = error.code.name
            check(refused == "UNAVAILABLE",
                  f"{name}: r2 refuses a caller without a client certificate ({refused})")

        with on_r2.respond(there, echo), on_r3.respond(mine, echo):
            body = os.urandom(BODY_BYTES)
            before = r1.metric(CARRIED)
            started = time.monotonic()
            call = on_r1.send_stream(there, body, timeout=CALL_DEADLINE_S)
            reply = call.read()
            elapsed = time.monotonic() - started
            served_by = dict(call._call.initial_metadata() or ()).get("switchboard-served-by")
            print(f"  carried send of {BODY_BYTES} bytes took {elapsed * 1000:.0f} ms",
                  flush=True)
            check(sha256(reply) == sha256(body),
                  f"{name}: a Send through r1 for r2's channel echoes the bytes "
                  f"(sha256 {sha256(reply)[:16]})")
            check(served_by == r2.grpc, f"{name}: switchboard-served-by names r2 ({served_by})")
            after = r1.metric(CARRIED)
            check(after == before + 1, f"{name}: r1 carried the call ({CARRIED} {before} -> "
                                       f"{after})")

            # r3 cannot verify r2's certificate: the carried call fails, promptly and clearly.
            before = r3.metric(CARRIED)
            started = time.monotonic()
            try:
                on_r3.send(there, b"refused", timeout=CALL_DEADLINE_S)
            except sb.SwitchboardError as error:
                failure = error
            else:
                raise SystemExit(f"FAIL: {name}: a Send carried by r3 (other CA) succeeded")
            elapsed = time.monotonic() - started
            print(f"  r3's carried send failed after {elapsed * 1000:.0f} ms: "
                  f"{failure.code.name}: {failure.message}", flush=True)
            check(failure.code.name == "UNAVAILABLE"
                  and "relay serving the channel" in failure.message
                  and r2.grpc in failure.message,
                  f"{name}: r3 (other cluster CA) fails the carried call with UNAVAILABLE "
                  "naming r2")
            check(elapsed < CALL_DEADLINE_S,
                  f"{name}: the failure comes before the call's deadline")
            check(r3.metric(CARRIED) == before + 1,
                  f"{name}: r3 counted the attempt as a carried call")

            # Everything else keeps working: r1 still carries, r3 serves its own channel, and
            # r3 keeps refusing (no cached bad state turning into a hang).
            body = os.urandom(1000)
            check(on_r1.send(there, body, timeout=CALL_DEADLINE_S) == body,
                  f"{name}: r1 still carries to r2 afterwards")
            check(on_r3.send(mine, body, timeout=CALL_DEADLINE_S) == body,
                  f"{name}: r3 still serves its own channel")
            started = time.monotonic()
            try:
                on_r3.send(there, b"again", timeout=CALL_DEADLINE_S)
                again = None
            except sb.SwitchboardError as error:
                again = error.code.name
            check(again == "UNAVAILABLE" and time.monotonic() - started < CALL_DEADLINE_S,
                  f"{name}: a second carried call through r3 fails the same way ({again})")
            check(all(relay.popen.poll() is None for relay in relays),
                  f"{name}: all three relays still running")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="switchboard-cluster-tls-test."))
    os.environ["SWITCHBOARD_PY_STUBS"] = str(work / "stubs")
    import switchboard_client as sb
    from switchboard_client._pb import pb2

    relays = []
    etcd = None
    try:
        certs = Certificates(work)
        etcd = Etcd()
        for prefix, mutual in (("t", False), ("m", True)):
            relays = start_relays(args.server, etcd, certs, prefix, mutual)
            try:
                phase(sb, pb2, certs, relays, mutual)
            except BaseException:
                for relay in relays:
                    print(f"--- {relay.node_id}, last lines\n" + "\n".join(relay.tail),
                          file=sys.stderr)
                raise
            finally:
                for relay in relays:
                    relay.stop()
                relays = []
    finally:
        for relay in relays:
            relay.stop()
        if etcd:
            etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
