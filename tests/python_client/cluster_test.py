#!/usr/bin/python3
"""The Python client (blocking and asyncio) pointed at one relay of a real two-relay cluster:
it locates each channel and talks to the relay that serves it.

Usage: cluster_test.py --server SWITCHBOARD_SERVER_BIN --work DIR

Starts Debian's etcd and two relays (r1 on 127.0.0.1, r2 on 127.0.0.2) on ephemeral ports,
waits until both are healthy and see each other, picks a channel served by each, then with
every client pointed at r1 only: a responder and a sender exchange a request and its response
and a broadcast, list_peers and watch_peers show the responder; with locating off, a call on
r1 for a channel of r2 is carried by r1, which names r2 (switchboard-served-by); a call on a
stale cached answer is carried too, and the answer then points at r2, where the next call goes
straight; a call r1 refuses (marked carried already) fails with the relay's clear error and
the channel is located again. The sources of clients/python are used directly (stubs
generated into DIR).
"""

import argparse
import asyncio
import os
import queue
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
MOVED = "channel is served by relay"

sys.path.insert(0, str(REPO / "tests" / "support"))
from cluster import WAIT, Etcd, Relay, until  # noqa: E402


def pick_channels(client, r2_grpc):
    """A channel served by r1 (Locate on r1 says here) and one served by r2."""
    here = there = None
    for _ in range(500):
        channel = str(uuid.uuid4())
        answer = client.stub.Locate(client_pb.LocateRequest(channel=channel), timeout=5)
        if answer.here and here is None:
            here = channel
        elif not answer.here and there is None:
            assert answer.node_id == "r2" and answer.grpc_address == r2_grpc, answer
            there = channel
        if here and there:
            return here, there
    raise SystemExit("FAIL: no channel of each relay among 500 random ones")


def carried_calls(relay):
    """The relay's switchboard_cluster_carried_calls_total."""
    _, metrics = relay.http("/metrics")
    for line in metrics.splitlines():
        name, _, value = line.partition(" ")
        if name == "switchboard_cluster_carried_calls_total":
            return int(value)
    raise SystemExit(f"FAIL: {relay.node_id} has no switchboard_cluster_carried_calls_total")


def served_by(call):
    return dict(call.initial_metadata() or ()).get("switchboard-served-by")


def marked_carried(grpc, channel):
    """``channel`` with every call marked carried already (switchboard-carried-by), which a
    relay never carries again: one that does not serve the channel refuses it."""
    class Details(grpc.ClientCallDetails):
        def __init__(self, details):
            self.method = details.method
            self.timeout = details.timeout
            self.metadata = list(details.metadata or ()) + [("switchboard-carried-by", "test")]
            self.credentials = details.credentials
            self.wait_for_ready = details.wait_for_ready
            self.compression = details.compression

    class Mark(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
               grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            return continuation(Details(details), request)

        intercept_unary_stream = intercept_unary_unary
        intercept_stream_unary = intercept_unary_unary
        intercept_stream_stream = intercept_unary_unary

    return grpc.intercept_channel(channel, Mark())


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAIL: {what}")
    print(f"ok {what}", flush=True)


# ---- The blocking client -------------------------------------------------------------------


def blocking_exchange(sb, r1, channel, owner, expected_route):
    """A responder and a sender, both pointed at r1, on `channel` (served by `owner`)."""
    broadcasts = queue.Queue()
    with sb.Client(r1.grpc) as responding, sb.Client(r1.grpc) as sending:
        responder = responding.respond(
            channel, lambda request: b"echo:" + request.read(),
            on_broadcast=lambda message: broadcasts.put(message.read()))
        try:
            check(responding._routes.by_channel[channel] == expected_route,
                  f"blocking: respond on a channel of {owner} located at {expected_route}")
            reply = sending.send(channel, b"hello", timeout=10)
            check(reply == b"echo:hello", f"blocking: request/response via r1 on {owner}")
            summary = sending.broadcast(channel, b"to all", timeout=10)
            check(summary.delivered == 1 and broadcasts.get(timeout=WAIT) == b"to all",
                  f"blocking: broadcast via r1 on {owner} delivered")
            peers = sending.list_peers(channel)
            check(responder.peer_id in peers.peers, f"blocking: list_peers on {owner}")
            watch = sending.watch_peers(channel, timeout=10)
            first = next(iter(watch))
            watch.cancel()
            check(first.kind == "SNAPSHOT" and responder.peer_id in first.peers,
                  f"blocking: watch_peers on {owner}")
            check(sending._routes.by_channel[channel] == expected_route,
                  f"blocking: the sender's route for {owner}'s channel is {expected_route}")
        finally:
            responder.close()


def blocking_cases(sb, r1, r2, here, there):
    blocking_exchange(sb, r1, there, "r2", r2.grpc)
    blocking_exchange(sb, r1, here, "r1", None)

    import grpc
    from switchboard_client._pb import pb2_grpc

    with sb.Client(r2.grpc, locate=False) as serving, \
            serving.respond(there, lambda request: b"echo:" + request.read()) as responder:
        with sb.Client(r1.grpc, locate=False) as plain:
            carried = carried_calls(r1)
            check(plain.send(there, b"x", timeout=10) == b"echo:x"
                  and carried_calls(r1) == carried + 1 and there not in plain._routes.by_channel,
                  "blocking, locate=False: send on r1 for r2's channel is carried, route kept")
            answer, call = plain.stub.ListPeers.with_call(
                client_pb.ListPeersRequest(channel=there), timeout=10)
            check(answer.peers == [responder.peer_id] and served_by(call) == r2.grpc,
                  "blocking, locate=False: a call r1 carried names r2 (switchboard-served-by)")
            # A call carried already is refused by a relay that does not serve its channel.
            plain.stub = pb2_grpc.SwitchboardServiceStub(marked_carried(grpc, plain.channel))
            try:
                plain.send(there, b"x", timeout=10)
            except sb.SwitchboardError as error:
                check(error.code.name == "UNAVAILABLE" and error.message.startswith(MOVED),
                      f"blocking, locate=False: a send marked carried is refused: {error}")
            else:
                raise SystemExit("FAIL: a send marked carried for r2's channel on r1 succeeded")

        # A stale answer (as after the channel moved): r1 carries the call to r2, which it
        # names; the answer then points at r2 and the next call goes there (r1 carries no more).
        with sb.Client(r1.grpc) as client:
            client._routes.by_channel[there] = None
            carried = carried_calls(r1)
            peers = client.list_peers(there)
            check(peers.peers == [responder.peer_id] and carried_calls(r1) == carried + 1
                  and client._routes.by_channel[there] == r2.grpc,
                  "blocking: list_peers on a stale route is carried, the route points at r2")
            check(client.send(there, b"a", timeout=10) == b"echo:a"
                  and carried_calls(r1) == carried + 1,
                  "blocking: the next call goes straight to r2")
            client._routes.by_channel[there] = None
            check(client.send(there, b"b", timeout=10) == b"echo:b"
                  and carried_calls(r1) == carried + 2
                  and client._routes.by_channel[there] == r2.grpc,
                  "blocking: a send on a stale route is carried, the route points at r2")
            client._routes.by_channel[there] = None
            summary = client.broadcast(there, b"x", timeout=10)
            check(summary.delivered == 1 and carried_calls(r1) == carried + 3
                  and client._routes.by_channel[there] == r2.grpc,
                  "blocking: a broadcast on a stale route is carried, the route points at r2")
            client._routes.by_channel[there] = None
            watch = client.watch_peers(there, timeout=10)
            first = next(iter(watch))
            watch.cancel()
            check(first.peers == [responder.peer_id] and carried_calls(r1) == carried + 4
                  and client._routes.by_channel[there] == r2.grpc,
                  "blocking: a watch on a stale route is carried, the route points at r2")
            client._routes.by_channel[there] = None
            with client.respond(there, lambda request: b"") as joined:
                check(joined.peer_id and carried_calls(r1) == carried + 5
                      and client._routes.by_channel[there] == r2.grpc,
                      "blocking: a join on a stale route is carried, the route points at r2")

        # Refused on a stale answer (the call marked carried already): the client locates
        # again; list_peers and respond, which have sent nothing yet, are retried once.
        with sb.Client(r1.grpc) as client:
            client.stub = pb2_grpc.SwitchboardServiceStub(marked_carried(grpc, client.channel))
            client._routes.by_channel[there] = None
            peers = client.list_peers(there)
            check(peers.peers == [responder.peer_id]
                  and client._routes.by_channel[there] == r2.grpc,
                  "blocking: a refused stale route is dropped and the channel located again")
            client._routes.by_channel[there] = None
            try:
                client.send(there, b"x", timeout=10)
            except sb.SwitchboardError as error:
                check(error.message.startswith(MOVED) and there not in client._routes.by_channel,
                      "blocking: a send refused for a stale route is not retried, route forgotten")
            else:
                raise SystemExit("FAIL: a send marked carried on a stale route succeeded")
            client._routes.by_channel[there] = None
            with client.respond(there, lambda request: b"") as joined:
                check(joined.peer_id and client._routes.by_channel[there] == r2.grpc,
                      "blocking: a join refused for a stale route is located again and retried")


def older_relay_case(sb):
    """A gRPC server without Locate (UNIMPLEMENTED) is taken to serve every channel."""
    import grpc
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with sb.Client(f"127.0.0.1:{port}") as client:
            channel = str(uuid.uuid4())
            try:
                client.list_peers(channel, timeout=10)
            except sb.SwitchboardError as error:
                check(error.code.name == "UNIMPLEMENTED"
                      and client._routes.by_channel.get(channel, "absent") is None,
                      "blocking: a relay without Locate is taken to serve the channel itself")
            else:
                raise SystemExit("FAIL: ListPeers on a server without it succeeded")
    finally:
        server.stop(None)


# ---- The asyncio client --------------------------------------------------------------------


async def async_exchange(aio, r1, channel, owner, expected_route):
    broadcasts = asyncio.Queue()

    async def handler(request):
        return b"echo:" + await request.read()

    async def on_broadcast(message):
        await broadcasts.put(await message.read())

    async with aio.AsyncClient(r1.grpc) as responding, aio.AsyncClient(r1.grpc) as sending:
        responder = await responding.respond(channel, handler, on_broadcast=on_broadcast)
        try:
            check(responding._routes.by_channel[channel] == expected_route,
                  f"asyncio: respond on a channel of {owner} located at {expected_route}")
            reply = await sending.send(channel, b"hello", timeout=10)
            check(reply == b"echo:hello", f"asyncio: request/response via r1 on {owner}")
            summary = await sending.broadcast(channel, b"to all", timeout=10)
            body = await asyncio.wait_for(broadcasts.get(), WAIT)
            check(summary.delivered == 1 and body == b"to all",
                  f"asyncio: broadcast via r1 on {owner} delivered")
            peers = await sending.list_peers(channel)
            check(responder.peer_id in peers.peers, f"asyncio: list_peers on {owner}")
            # A fresh client: watch_peers is its first call, so it opens after locating.
            async with aio.AsyncClient(r1.grpc) as watching:
                watch = watching.watch_peers(channel, timeout=10)
                first = await asyncio.wait_for(watch.__aiter__().__anext__(), WAIT)
                watch.cancel()
            check(first.kind == "SNAPSHOT" and responder.peer_id in first.peers,
                  f"asyncio: watch_peers as a first call on {owner}")
        finally:
            await responder.close()


async def async_cases(aio, sb, r1, r2, here, there):
    await async_exchange(aio, r1, there, "r2", r2.grpc)
    await async_exchange(aio, r1, here, "r1", None)

    # Calls made before the Locate answers open in the order they were made: a watch made
    # before the join sees the responder join; a send_stream as a first call works.
    async with aio.AsyncClient(r1.grpc) as client, aio.AsyncClient(r1.grpc) as sending:
        watch = client.watch_peers(there, timeout=10)
        updates = watch.__aiter__()
        async def read_then_ok(request):
            await request.read()
            return b"ok"

        responder = await client.respond(there, read_then_ok)
        try:
            first = await asyncio.wait_for(updates.__anext__(), WAIT)
            second = await asyncio.wait_for(updates.__anext__(), WAIT)
            watch.cancel()
            check((first.kind, first.peers, second.kind, second.peers)
                  == ("SNAPSHOT", [], "JOINED", [responder.peer_id]),
                  "asyncio: a watch made before the join (both locating) sees it join")
            chunks = [chunk async for chunk in sending.send_stream(there, b"hi", timeout=10)]
            check(chunks == [b"ok"] and sending._routes.by_channel[there] == r2.grpc,
                  "asyncio: send_stream as a first call opens once located")
        finally:
            await responder.close()

    async def echo(request):
        return b"echo:" + await request.read()

    async with aio.AsyncClient(r2.grpc, locate=False) as serving:
        responder = await serving.respond(there, echo)
        try:
            async with aio.AsyncClient(r1.grpc, locate=False) as plain:
                carried = carried_calls(r1)
                reply = await plain.send(there, b"x", timeout=10)
                check(reply == b"echo:x" and carried_calls(r1) == carried + 1
                      and there not in plain._routes.by_channel,
                      "asyncio, locate=False: send on r1 for r2's channel is carried, route kept")

            async with aio.AsyncClient(r1.grpc) as client:
                client._routes.by_channel[there] = None
                carried = carried_calls(r1)
                peers = await client.list_peers(there)
                check(peers.peers == [responder.peer_id] and carried_calls(r1) == carried + 1
                      and client._routes.by_channel[there] == r2.grpc,
                      "asyncio: list_peers on a stale route is carried, the route points at r2")
                reply = await client.send(there, b"a", timeout=10)
                check(reply == b"echo:a" and carried_calls(r1) == carried + 1,
                      "asyncio: the next call goes straight to r2")
                client._routes.by_channel[there] = None
                reply = await client.send(there, b"b", timeout=10)
                check(reply == b"echo:b" and carried_calls(r1) == carried + 2
                      and client._routes.by_channel[there] == r2.grpc,
                      "asyncio: a send on a stale route is carried, the route points at r2")
                client._routes.by_channel[there] = None
                summary = await client.broadcast(there, b"x", timeout=10)
                check(summary.delivered == 1 and carried_calls(r1) == carried + 3
                      and client._routes.by_channel[there] == r2.grpc,
                      "asyncio: a broadcast on a stale route is carried, the route points at r2")
                client._routes.by_channel[there] = None
                watch = client.watch_peers(there, timeout=10)
                first = await asyncio.wait_for(watch.__aiter__().__anext__(), WAIT)
                watch.cancel()
                check(first.peers == [responder.peer_id] and carried_calls(r1) == carried + 4
                      and client._routes.by_channel[there] == r2.grpc,
                      "asyncio: a watch on a stale route is carried, the route points at r2")
                client._routes.by_channel[there] = None
                joined = await client.respond(there, lambda request: asyncio.sleep(0, b""))
                try:
                    check(joined.peer_id and carried_calls(r1) == carried + 5
                          and client._routes.by_channel[there] == r2.grpc,
                          "asyncio: a join on a stale route is carried, the route points at r2")
                finally:
                    await joined.close()
        finally:
            await responder.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ["SWITCHBOARD_PY_STUBS"] = str(work / "stubs")
    sys.path.insert(0, str(REPO / "clients" / "python"))
    import switchboard_client as sb
    import switchboard_client.aio as aio
    from switchboard_client._pb import pb2

    global client_pb
    client_pb = pb2

    older_relay_case(sb)
    etcd = Etcd()
    relays = []
    try:
        relays.append(Relay(args.server, "127.0.0.1", "r1", etcd.url))
        relays.append(Relay(args.server, "127.0.0.2", "r2", etcd.url))
        r1, r2 = relays
        until("both relays healthy with 2 members", lambda: all(relay.ready(2) for relay in relays))
        with sb.Client(r1.grpc, locate=False) as probe:
            here, there = pick_channels(probe, r2.grpc)
        print(f"channels: {here} on r1, {there} on r2", flush=True)
        blocking_cases(sb, r1, r2, here, there)
        asyncio.run(async_cases(aio, sb, r1, r2, here, there))
    finally:
        for relay in relays:
            relay.stop()
        etcd.stop()
    print("PASS", flush=True)


client_pb = None

if __name__ == "__main__":
    main()
