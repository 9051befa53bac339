"""Rows of the attack table against the gRPC door: raw HTTP/2 floods, identity spoofing, bad first
messages, malformed tokens, reflection, shutdown under attack."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import h2raw

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "clients" / "python"))

import grpc  # noqa: E402
from switchboard_client import pb2, pb2_grpc  # noqa: E402

SEND_PATH = "/switchboard.v1.SwitchboardService/Send"
FLOOD_BYTES = 16 << 20


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def header_flood(port, total=FLOOD_BYTES):
    """One HTTP/2 stream to Send whose header block goes on in CONTINUATION frames for `total`
    bytes. Returns the connection (its reader records the GOAWAY) once sent or refused."""
    conn = h2raw.Connection(port)
    # One header field whose value spans the whole block: a parser that re-reads a field split
    # over frames from its start each time spends time quadratic in its size.
    block = h2raw.grpc_request_headers(SEND_PATH) + h2raw.literal("x-flood", b"a" * total)
    chunk = 16384
    first = True
    for at in range(0, len(block), chunk):
        piece = block[at:at + chunk]
        last = at + chunk >= len(block)
        kind = h2raw.HEADERS if first else h2raw.CONTINUATION
        if not conn.send(h2raw.frame(kind, h2raw.END_HEADERS if last else 0, 1, piece)):
            break
        first = False
    return conn


def header_flood_row(relay, table):
    stub = pb2_grpc.SwitchboardServiceStub(grpc.insecure_channel(f"127.0.0.1:{relay.grpc}"))
    channel = str(uuid.uuid4())
    stub.ListPeers(pb2.ListPeersRequest(channel=channel), timeout=5)  # connected before
    calls, stop = [], threading.Event()

    def bystander():
        while not stop.is_set():
            start = time.monotonic()
            try:
                stub.ListPeers(pb2.ListPeersRequest(channel=channel), timeout=1.0)
                calls.append((True, time.monotonic() - start))
            except grpc.RpcError as error:
                calls.append((False, f"{error.code().name}"))
            stop.wait(0.05)

    cpu_before = cpu_seconds(relay.popen.pid)
    watcher = threading.Thread(target=bystander, daemon=True)
    watcher.start()
    attackers = []
    threads = [threading.Thread(target=lambda: attackers.append(header_flood(relay.grpc)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for conn in attackers:
        conn.closed.wait(10)
    time.sleep(0.5)  # a few more bystander calls after the attack
    stop.set()
    watcher.join(5)
    cpu = cpu_seconds(relay.popen.pid) - cpu_before
    goaways = [conn.goaway for conn in attackers]
    for conn in attackers:
        conn.close()
    failed = [c for c in calls if not c[0]]
    slowest = max((c[1] for c in calls if c[0]), default=0.0)
    ok = (len(attackers) == 2 and all(g is not None for g in goaways) and not failed and
          calls and slowest < 1.0 and cpu < 2.0)
    got = (f"GOAWAY {goaways}; bystander {len(calls) - len(failed)}/{len(calls)} ok, slowest "
           f"{slowest * 1000:.0f} ms; relay CPU {cpu:.2f} s")
    table.add("HTTP/2 header block of 16 MiB in CONTINUATION, two connections", "gRPC",
              "GOAWAY to the attacker; every other call OK within 1 s; relay CPU < 2 s", got, ok,
              relay.rss_mib())


def window_zero_row(relay, table, cli, budget_mib):
    """1,000 Send streams on one connection that grants no window; responders answer 2 MiB."""
    channel = str(uuid.uuid4())
    responder = subprocess.Popen(
        cli.args("respond", "--channel", channel, "--", "head", "-c", str(2 << 20), "/dev/zero"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if not responder.stderr.readline().startswith("ready"):
            table.add("1,000 Sends on one connection granting no window", "gRPC", "", "no responder",
                      False, relay.rss_mib())
            return
        baseline = relay.rss_mib()
        peak = baseline
        conn = h2raw.Connection(relay.grpc, initial_window=0)
        opening = pb2.SendRequest(open=pb2.SendOpen(channel=channel, data=b"x"))
        body = h2raw.grpc_message(opening.SerializeToString())
        headers = h2raw.grpc_request_headers(SEND_PATH)
        for n in range(1000):
            stream = 2 * n + 1
            if not conn.send(h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, stream, headers) +
                             h2raw.frame(h2raw.DATA, h2raw.END_STREAM, stream, body)):
                break
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            peak = max(peak, relay.rss_mib())
            time.sleep(0.1)
        refused = sum(1 for code in conn.resets.values() if code == "REFUSED_STREAM")
        goaway = conn.goaway
        conn.close()
    finally:
        responder.terminate()
        responder.wait(10)
    rise = peak - baseline
    # Under a sanitizer (its options are in the environment) RSS says nothing about what the
    # relay holds: only the refusals are judged there.
    sanitized = "ASAN_OPTIONS" in os.environ or "TSAN_OPTIONS" in os.environ
    ok = (sanitized or rise < budget_mib + 32) and (refused > 0 or goaway is not None)
    table.add("1,000 Sends on one connection granting no window, 2 MiB answers", "gRPC",
              f"streams over the limit refused; relay RSS rise < budget {budget_mib} MiB + 32",
              f"{refused} REFUSED_STREAM, GOAWAY {goaway}; RSS {baseline:.0f} -> peak {peak:.0f} MiB",
              ok, peak)


def sigterm_after_flood_row(binary, relay_class, table):
    relay = relay_class(binary)
    conns = []
    floods = [threading.Thread(target=lambda: conns.append(header_flood(relay.grpc)))
              for _ in range(2)]
    for thread in floods:
        thread.start()
    for thread in floods:
        thread.join(60)
    time.sleep(1.0)  # the relay is under the attack (or has refused it) when the signal comes
    start = time.monotonic()
    relay.popen.send_signal(signal.SIGTERM)
    try:
        code = relay.popen.wait(15)
    except subprocess.TimeoutExpired:
        code = None
    elapsed = time.monotonic() - start
    for conn in conns:
        conn.close()
    rss = 0.0
    relay.stop()
    ok = code == 0 and elapsed < 3.5
    table.add("SIGTERM during a header flood (two connections left open)", "gRPC",
              "exit 0 within the drain timeout (2 s) + 1.5 s",
              f"exit {code} after {elapsed:.1f} s", ok, rss)


def auth_relay_rows(binary, cli_binary, relay_class, cli_class, table):
    """Rows that need a relay with tokens required."""
    with tempfile.TemporaryDirectory() as folder:
        secret = Path(folder) / "hs256.secret"
        secret.write_text("attack-table-secret-0123456789abcdef\n")
        relay = relay_class(binary, ["--auth-mode", "required",
                                     "--auth-hs256-secret-file", str(secret)])
        try:
            cli = cli_class(cli_binary, relay)
            spoof_rows(relay, cli, secret, table)
            malformed_exp_row(relay, secret, table)
        finally:
            relay.stop()


def mint(cli, secret, channel, perms, peer=None):
    args = [cli.binary, "token", "--hs256-secret-file", str(secret), "--channel", channel,
            "--perms", perms, "--ttl", "10m"]
    if peer:
        args += ["--peer", peer]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def status_of(error):
    trailers = dict(error.trailing_metadata() or ())
    return f"{error.code().name}/{trailers.get('switchboard-status', '-')}"


def spoof_rows(relay, cli, secret, table):
    channel = str(uuid.uuid4())
    victim_token = mint(cli, secret, channel, "respond")
    victim = subprocess.Popen(
        [cli.binary, "--server", f"127.0.0.1:{relay.core}", "--token", victim_token, "respond",
         "--channel", channel, "--echo"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        line = victim.stderr.readline()
        victim_id = line.split("peer=")[1].split()[0] if "peer=" in line else ""
        token = mint(cli, secret, channel, "send,broadcast")
        stub = pb2_grpc.SwitchboardServiceStub(grpc.insecure_channel(f"127.0.0.1:{relay.grpc}"))
        got = {}
        try:
            replies = stub.Send(iter([pb2.SendRequest(open=pb2.SendOpen(
                channel=channel, sender_peer_id=victim_id, token=token, data=b"hi"))]), timeout=5)
            for _ in replies:
                pass
            got["Send"] = "OK"
        except grpc.RpcError as error:
            got["Send"] = status_of(error)
        try:
            for _ in stub.Broadcast(iter([pb2.BroadcastRequest(open=pb2.BroadcastOpen(
                    channel=channel, sender_peer_id=victim_id, token=token, data=b"hi"))]),
                    timeout=5):
                pass
            got["Broadcast"] = "OK"
        except grpc.RpcError as error:
            got["Broadcast"] = status_of(error)
    finally:
        victim.terminate()
        victim.wait(10)
    ok = all(v.startswith("PERMISSION_DENIED") for v in got.values()) and victim_id
    table.add("sender_peer_id naming a live native peer, token without a peer claim", "gRPC",
              "PERMISSION_DENIED (Send and Broadcast)", str(got), ok, relay.rss_mib())


def malformed_exp_row(relay, secret, table):
    import jwt  # Debian's python3-jwt

    key = secret.read_text().rstrip("\n")
    channel = str(uuid.uuid4())
    stub = pb2_grpc.SwitchboardServiceStub(grpc.insecure_channel(f"127.0.0.1:{relay.grpc}"))
    got = {}
    for label, exp in (("string", str(int(time.time()) + 600)), ("1e300", 1e300)):
        token = jwt.encode({"channel": channel, "perms": ["presence"], "exp": exp}, key, "HS256")
        try:
            stub.ListPeers(pb2.ListPeersRequest(channel=channel, token=token), timeout=5)
            got[label] = "OK"
        except grpc.RpcError as error:
            got[label] = f"{error.code().name} \"{error.details()}\""
    ok = all(v.startswith("UNAUTHENTICATED") and "expired" not in v for v in got.values())
    table.add("JWT exp as a string, and as 1e300", "gRPC",
              "UNAUTHENTICATED as malformed, not \"token expired\"", str(got), ok,
              relay.rss_mib())


def bad_first_message_rows(relay, table):
    stub = pb2_grpc.SwitchboardServiceStub(grpc.insecure_channel(f"127.0.0.1:{relay.grpc}"))
    got = {}
    for name, call in (("Respond", stub.Respond), ("Requests", stub.Requests)):
        try:
            for _ in call(iter(()), timeout=5):
                pass
            got[name] = "OK"
        except grpc.RpcError as error:
            got[name] = status_of(error)
    ok = all(v == "INVALID_ARGUMENT/PROTOCOL_ERROR" for v in got.values())
    table.add("Respond and Requests half-closed before their first message", "gRPC",
              "INVALID_ARGUMENT with switchboard-status PROTOCOL_ERROR", str(got), ok,
              relay.rss_mib())


def reflection_row(relay, table):
    # grpc-proto's reflection.proto, generated here as top-level modules (the grpc package
    # ships no stubs for it, and a grpc/ folder of our own would be shadowed by it).
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["protoc", "-I", "/usr/share/grpc-proto/grpc/reflection/v1alpha",
                        f"--python_out={out}", f"--grpc_out={out}",
                        "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                        "reflection.proto"], check=True)
        sys.path.insert(0, out)
        try:
            import reflection_pb2 as rpb
            import reflection_pb2_grpc as rgrpc
        finally:
            sys.path.remove(out)
    stub = rgrpc.ServerReflectionStub(grpc.insecure_channel(f"127.0.0.1:{relay.grpc}"))

    def ask(**request):
        return next(stub.ServerReflectionInfo(iter([rpb.ServerReflectionRequest(**request)]),
                                              timeout=5))

    names = [s.name for s in ask(list_services="").list_services_response.service]
    unresolved = [n for n in names if ask(file_containing_symbol=n).HasField("error_response")]
    ok = bool(names) and not unresolved
    table.add("every service listed by reflection resolves through it", "gRPC",
              "file_containing_symbol answers for each listed service",
              f"{len(names)} listed, unresolved: {unresolved or 'none'}", ok, relay.rss_mib())


def respond_head_of_line_row(relay, cli, table):
    """A gRPC Respond peer (client library, stream windows) answers two native requesters; one
    stops reading its response. The other's response must not wait for it."""
    import select

    from switchboard_client import Client

    channel = str(uuid.uuid4())

    def handle(request):
        request.read()
        size = int(request.metadata.get("size", "0"))
        block = b"r" * 65536
        for at in range(0, size, len(block)):
            request.write(block[:min(len(block), size - at)])

    client = Client(f"127.0.0.1:{relay.grpc}")
    session = client.respond(channel, handle)
    stalled = subprocess.Popen(
        cli.args("send", "--channel", channel, "--to", session.peer_id, "--meta",
                 f"size={16 << 20}", "--deadline-ms", "60000"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        stalled.stdin.write(b"a")
        stalled.stdin.close()
        started = select.select([stalled.stdout], [], [], 10)[0]
        if started:
            os.read(stalled.stdout.fileno(), 65536)  # then nobody reads its stdout
        start = time.monotonic()
        other = subprocess.run(
            cli.args("send", "--channel", channel, "--to", session.peer_id, "--meta",
                     f"size={4 << 20}", "--deadline-ms", "30000"),
            input=b"b", capture_output=True, timeout=60)
        elapsed = time.monotonic() - start
    finally:
        stalled.kill()
        stalled.wait(5)
        session.close()
        client.close()
    ok = bool(started) and other.returncode == 0 and len(other.stdout) == 4 << 20
    table.add("requester stops reading a gRPC responder's answer", "gRPC",
              "another requester's 4 MiB answer from the same Respond peer completes",
              f"exit {other.returncode}, {len(other.stdout)} bytes in {elapsed:.2f} s", ok,
              relay.rss_mib())


def send_ok_trailer_row(relay, cli, table):
    channel = str(uuid.uuid4())
    responder = subprocess.Popen(cli.args("respond", "--channel", channel, "--echo"),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    try:
        responder.stderr.readline()
        stub = pb2_grpc.SwitchboardServiceStub(grpc.insecure_channel(f"127.0.0.1:{relay.grpc}"))
        call = stub.Send(iter([pb2.SendRequest(open=pb2.SendOpen(channel=channel,
                                                                        data=b"ping"))]),
                         timeout=5)
        echoed = b"".join(message.chunk.data for message in call)
        trailer = dict(call.trailing_metadata() or ()).get("switchboard-status", "none")
        got = f"{call.code().name}, echoed {echoed!r}, switchboard-status {trailer}"
        ok = call.code() == grpc.StatusCode.OK and trailer == "OK" and echoed == b"ping"
    finally:
        responder.terminate()
        responder.wait(10)
    table.add("a Send that ends OK", "gRPC", "OK with the trailer switchboard-status: OK", got,
              ok, relay.rss_mib())


def stalled_grpc_receiver_row(relay, cli, table, slow_consumer_s):
    """A gRPC Respond peer that joins and then reads nothing, on a channel with a broadcaster."""
    channel = str(uuid.uuid4())
    listeners = [cli.listener(channel) for _ in range(2)]
    stub = pb2_grpc.SwitchboardServiceStub(grpc.insecure_channel(f"127.0.0.1:{relay.grpc}"))
    done = threading.Event()

    def requests():
        yield pb2.RespondRequest(join=pb2.Join(channel=channel))
        done.wait(120)

    try:
        rc, summary, baseline = cli.broadcast(channel, 8 << 20)
        call = stub.Respond(requests())
        joined = next(call)
        next(call)  # the presence snapshot; nothing is read after it
        results = [cli.broadcast(channel, 8 << 20) for _ in range(2)]
        bound = baseline + slow_consumer_s + 1.0
        ok = joined.HasField("joined") and all(
            r == 0 and "delivered=2 dropped=1" in s and t < bound for r, s, t in results)
        got = "; ".join(f"{s} in {t:.2f} s" for _, s, t in results)
    finally:
        done.set()
        for listener in listeners:
            listener.terminate()
            listener.wait(5)
    table.add("gRPC Respond peer that stops reading, two broadcasts", "gRPC",
              f"each: delivered=2 dropped=1 within {bound:.2f} s (baseline + timeout + 1 s)", got,
              ok, relay.rss_mib())
