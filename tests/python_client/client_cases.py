"""The installed switchboard_client (blocking and asyncio) against a running relay.

Run by python_client_test.py with the venv's interpreter: --grpc is the relay's gateway.
Every wait is bounded (WAIT); nothing sleeps to let something happen.
"""

import argparse
import asyncio
import hashlib
import os
import sys
import threading
import unittest
import uuid

import switchboard_client as sb
from switchboard_client.aio import AsyncClient

WAIT = 15.0
GRPC = ""


def channel():
    return str(uuid.uuid4())


def blocks(total, size=256 * 1024, seed=b"switchboard"):
    """`total` deterministic pseudo-random bytes in blocks (sha256 in counter mode)."""
    sent = 0
    counter = 0
    while sent < total:
        block = b"".join(hashlib.sha256(seed + (counter * 1000 + i).to_bytes(8, "big")).digest()
                         for i in range(size // 32))[:total - sent]
        counter += 1
        sent += len(block)
        yield block


# One event loop for every case: grpc.aio (grpcio 1.51) binds its poller to the first loop that
# used it, and logs "Event loop is closed" errors once that loop is gone.
LOOP = asyncio.new_event_loop()


def run(coroutine):
    return LOOP.run_until_complete(asyncio.wait_for(coroutine, 120))


class Installed(unittest.TestCase):
    def test_imported_from_the_venv(self):
        self.assertIn("site-packages", sb.__file__)
        self.assertFalse(hasattr(sb, "_stubs"))


class Blocking(unittest.TestCase):
    def test_round_trip_and_metadata(self):
        ch = channel()
        seen = {}

        def handle(request):
            seen["metadata"] = request.metadata
            return request.read().upper()

        with sb.Client(GRPC) as client, client.respond(ch, handle) as session:
            self.assertTrue(session.windows)
            answer = client.send(ch, b"hello", metadata={"k": "v"}, timeout=WAIT)
        self.assertEqual(answer, b"HELLO")
        self.assertEqual(seen["metadata"], {"k": "v"})

    def test_no_responders(self):
        with sb.Client(GRPC) as client:
            with self.assertRaises(sb.NoRespondersError) as caught:
                client.send(channel(), b"x", timeout=WAIT)
        self.assertEqual(caught.exception.status, sb.Status.NO_RESPONDERS)
        self.assertEqual(caught.exception.code.name, "UNAVAILABLE")

    def test_application_error(self):
        ch = channel()

        def handle(request):
            raise sb.ApplicationError(42, "refused by the handler")

        with sb.Client(GRPC) as client, client.respond(ch, handle):
            with self.assertRaises(sb.RemoteApplicationError) as caught:
                client.send(ch, b"x", timeout=WAIT)
        error = caught.exception
        self.assertEqual((error.status, error.app_code, error.message),
                         ("APPLICATION", 42, "refused by the handler"))
        self.assertEqual(error.code.name, "UNKNOWN")

    def test_16_mib_stream_to_an_async_responder(self):
        """A blocking sender (on a thread) streams 16 MiB through an asyncio responder that
        echoes it; both ends check the sha256."""
        ch = channel()
        total = 16 * 1024 * 1024
        expected = hashlib.sha256()
        for block in blocks(total):
            expected.update(block)
        outcome = {}

        def blocking_send():
            received = hashlib.sha256()
            count = 0
            with sb.Client(GRPC) as client:
                for chunk in client.send_stream(ch, blocks(total), timeout=120):
                    received.update(chunk)
                    count += len(chunk)
            return count, received.hexdigest()

        async def main():
            async def echo(request):
                digest = hashlib.sha256()
                async for chunk in request:
                    digest.update(chunk)
                    await request.write(chunk)
                outcome["responder_sha"] = digest.hexdigest()

            async with AsyncClient(GRPC) as client:
                async with await client.respond(ch, echo):
                    return await asyncio.to_thread(blocking_send)

        count, received = run(main())
        self.assertEqual(count, total)
        self.assertEqual(received, expected.hexdigest())
        self.assertEqual(outcome.get("responder_sha"), expected.hexdigest())


class Async(unittest.TestCase):
    def test_round_trip_async_iterators(self):
        async def main():
            ch = channel()

            async def handle(request):
                async for chunk in request:
                    await request.write(chunk.upper())
                return None

            async def body():
                for piece in (b"one ", b"two ", b"three"):
                    yield piece

            async with AsyncClient(GRPC) as client:
                async with await client.respond(ch, handle) as session:
                    self.assertTrue(session.windows)
                    self.assertIsNotNone(session.peer_id)
                    chunks = [c async for c in client.send_stream(ch, body(), timeout=WAIT)]
                    whole = await client.send(ch, "text", timeout=WAIT)
            return b"".join(chunks), whole

        streamed, whole = run(main())
        self.assertEqual(streamed, b"ONE TWO THREE")
        self.assertEqual(whole, b"TEXT")

    def test_concurrent_requests_to_one_async_responder(self):
        """Eight requests in flight at once: each handler waits until all eight are inside a
        handler, which a responder serving one request at a time never reaches."""
        count = 8

        async def main():
            ch = channel()
            inside = 0
            all_in = asyncio.Event()

            async def handle(request):
                nonlocal inside
                body = await request.read()
                inside += 1
                if inside == count:
                    all_in.set()
                await asyncio.wait_for(all_in.wait(), WAIT)
                return body[::-1]

            async with AsyncClient(GRPC) as client:
                async with await client.respond(ch, handle):
                    answers = await asyncio.gather(*(
                        client.send(ch, f"request {i}".encode(), timeout=WAIT)
                        for i in range(count)))
            return answers

        answers = run(main())
        self.assertEqual(answers, [f"request {i}".encode()[::-1] for i in range(count)])

    def test_stalled_requester_delays_only_its_own_request(self):
        """Per-stream windows: one requester that stops reading a large response does not
        hold up another request to the same async responder."""
        big = 8 * 1024 * 1024

        async def main():
            ch = channel()
            big_done = asyncio.Event()

            async def handle(request):
                await request.read()
                if request.metadata.get("size") == "big":
                    await request.write(b"".join(blocks(big)))
                    big_done.set()
                    return None
                return b"small answer"

            async with AsyncClient(GRPC) as client:
                async with await client.respond(ch, handle):
                    stalled = client.send_stream(ch, b"x", metadata={"size": "big"}, timeout=60)
                    iterator = stalled.__aiter__()
                    first = await iterator.__anext__()  # the response has started; stop reading
                    small = await client.send(ch, b"y", timeout=WAIT)
                    self.assertFalse(big_done.is_set(), "8 MiB fit in the windows")
                    rest = [c async for c in iterator]
                    await asyncio.wait_for(big_done.wait(), WAIT)
            return small, len(first) + sum(map(len, rest))

        small, received = run(main())
        self.assertEqual(small, b"small answer")
        self.assertEqual(received, big)

    def test_no_responders_and_application_error(self):
        async def main():
            ch = channel()

            async def handle(request):
                raise sb.ApplicationError(7, "async handler says no")

            async with AsyncClient(GRPC) as client:
                with self.assertRaises(sb.NoRespondersError) as none:
                    await client.send(ch, b"x", timeout=WAIT)
                async with await client.respond(ch, handle):
                    with self.assertRaises(sb.RemoteApplicationError) as app:
                        await client.send(ch, b"x", timeout=WAIT)
            return none.exception, app.exception

        none, app = run(main())
        self.assertEqual((none.status, none.code.name), ("NO_RESPONDERS", "UNAVAILABLE"))
        self.assertEqual((app.status, app.app_code, app.message),
                         ("APPLICATION", 7, "async handler says no"))

    def test_cancellation_reaches_the_responder(self):
        async def main():
            ch = channel()
            started = asyncio.Event()
            handled = asyncio.Event()
            resets = []

            async def handle(request):
                started.set()
                resets.append(await request.wait_reset(WAIT))
                handled.set()

            async with AsyncClient(GRPC) as client:
                async with await client.respond(ch, handle) as session:
                    call = client.send_stream(ch, b"hold", timeout=WAIT)
                    reading = asyncio.ensure_future(call.read())
                    await asyncio.wait_for(started.wait(), WAIT)
                    call.cancel()
                    with self.assertRaises(sb.StreamCancelledError) as caught:
                        await reading
                    await asyncio.wait_for(handled.wait(), WAIT + 1)
                    self.assertFalse(session.closed)
            return caught.exception, resets

        error, resets = run(main())
        self.assertEqual(error.code.name, "CANCELLED")
        self.assertEqual(len(resets), 1)
        self.assertIsNotNone(resets[0], "the responder never saw the cancellation")
        self.assertIn(resets[0][0], ("CANCELLED", "PEER_GONE"))

    def test_deadline(self):
        async def main():
            ch = channel()
            handled = asyncio.Event()
            resets = []

            async def handle(request):
                resets.append(await request.wait_reset(WAIT))
                handled.set()

            async with AsyncClient(GRPC) as client:
                async with await client.respond(ch, handle):
                    with self.assertRaises(sb.DeadlineExceededError) as caught:
                        await client.send(ch, b"x", timeout=0.5)
                    await asyncio.wait_for(handled.wait(), WAIT + 1)
            return caught.exception, resets

        error, resets = run(main())
        self.assertEqual(error.code.name, "DEADLINE_EXCEEDED")
        self.assertIn(error.status, (None, "DEADLINE_EXCEEDED"))
        self.assertTrue(resets and resets[0] is not None, "the responder saw no reset")
        self.assertIn(resets[0][0], ("DEADLINE_EXCEEDED", "CANCELLED"))

    def test_broadcast_summary_reaches_sync_and_async_peers(self):
        async def main():
            ch = channel()
            got_async = asyncio.Queue()
            got_sync = threading.Event()
            sync_bodies = []

            async def on_broadcast(message):
                await got_async.put((message.sender, await message.read()))

            def on_sync_broadcast(message):
                sync_bodies.append(message.read())
                got_sync.set()

            async def no_requests(request):
                return None

            with sb.Client(GRPC) as blocking:
                with blocking.respond(ch, lambda r: None, on_broadcast=on_sync_broadcast):
                    async with AsyncClient(GRPC) as client:
                        async with await client.respond(ch, no_requests,
                                                        on_broadcast=on_broadcast):
                            summary = await client.broadcast(ch, b"to all", timeout=WAIT)
                            sender, body = await asyncio.wait_for(got_async.get(), WAIT)
                            self.assertTrue(await asyncio.to_thread(got_sync.wait, WAIT))
                            sync_summary = await asyncio.to_thread(
                                lambda: blocking.broadcast(ch, [b"from ", b"blocking"],
                                                           timeout=WAIT))
                            _, second = await asyncio.wait_for(got_async.get(), WAIT)
            return summary, sync_summary, sender, body, second, sync_bodies

        summary, sync_summary, sender, body, second, sync_bodies = run(main())
        self.assertEqual(summary, sb.BroadcastSummary(delivered=2, dropped=0))
        self.assertEqual(sync_summary, sb.BroadcastSummary(delivered=2, dropped=0))
        self.assertEqual((sender, body, second), ("", b"to all", b"from blocking"))
        self.assertEqual(sync_bodies[0], b"to all")

    def test_presence_events(self):
        async def main():
            ch = channel()
            seen_by_first = asyncio.Queue()

            async def handle(request):
                return None

            async with AsyncClient(GRPC) as client:
                watch = client.watch_peers(ch, timeout=60)
                updates = watch.__aiter__()
                snapshot = await asyncio.wait_for(updates.__anext__(), WAIT)
                first = await client.respond(ch, handle, on_presence=seen_by_first.put)
                joined_first = await asyncio.wait_for(updates.__anext__(), WAIT)
                second = await client.respond(ch, handle)
                joined_second = await asyncio.wait_for(updates.__anext__(), WAIT)
                listed = await client.list_peers(ch)
                await second.close()
                left = await asyncio.wait_for(updates.__anext__(), WAIT)
                events = []
                while len(events) < 3:  # its snapshot, the second's join, the second's leave
                    events.append(await asyncio.wait_for(seen_by_first.get(), WAIT))
                peers_after = set(first.peers)
                await first.close()
                watch.cancel()
                rest = [u async for u in updates]  # ends quietly once cancelled
            return (snapshot, joined_first, joined_second, left, listed, events, first.peer_id,
                    second.peer_id, peers_after, rest)

        (snapshot, joined_first, joined_second, left, listed, events, first_id, second_id,
         peers_after, rest) = run(main())
        self.assertEqual((snapshot.kind, snapshot.peers), ("SNAPSHOT", []))
        self.assertEqual((joined_first.kind, joined_first.peers), ("JOINED", [first_id]))
        self.assertEqual((joined_second.kind, joined_second.peers), ("JOINED", [second_id]))
        self.assertEqual((left.kind, left.peers), ("LEFT", [second_id]))
        self.assertEqual(sorted(listed.peers), sorted([first_id, second_id]))
        self.assertEqual(listed.version, joined_second.version)
        self.assertLess(joined_first.version, joined_second.version)
        self.assertEqual([e.kind for e in events], ["SNAPSHOT", "JOINED", "LEFT"])
        self.assertEqual(events[1].peers, [second_id])
        self.assertEqual(peers_after, set())
        self.assertEqual(rest, [])


def main():
    global GRPC
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc", required=True)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    GRPC = args.grpc
    print(f"switchboard_client from {os.path.dirname(sb.__file__)}", flush=True)
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    print(f"{result.testsRun - len(result.failures) - len(result.errors)} passed, "
          f"{len(result.failures) + len(result.errors)} failed", flush=True)
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
