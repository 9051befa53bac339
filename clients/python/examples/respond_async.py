#!/usr/bin/python3
"""An asyncio responder: upper-cases each request in its own task; prints presence and broadcasts.

    clients/python/examples/respond_async.py --channel CHANNEL     # Ctrl-C to leave
"""
import argparse
import asyncio
import os
import signal
import sys

try:
    from switchboard_client import ApplicationError
    from switchboard_client.aio import AsyncClient
except ImportError:  # not installed: the package of this source tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from switchboard_client import ApplicationError
    from switchboard_client.aio import AsyncClient


async def handle(request):
    """Runs in its own task per request: stream the body back upper-cased."""
    if request.metadata.get("fail"):
        raise ApplicationError(42, "asked to fail")
    async for chunk in request:
        await request.write(chunk.upper())
    # Returning ends the response with OK.


def on_presence(update):
    print(f"presence {update.kind} {' '.join(update.peers) or '-'} version={update.version}",
          file=sys.stderr, flush=True)


async def on_broadcast(message):
    body = await message.read()
    print(f"broadcast from {message.sender or 'an anonymous sender'}: {len(body)} bytes",
          file=sys.stderr, flush=True)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("SWITCHBOARD_GRPC", "127.0.0.1:7401"))
    parser.add_argument("--channel", required=True)
    parser.add_argument("--peer-id", help="keep an identity across runs")
    args = parser.parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncClient(args.server) as client:
        session = await client.respond(args.channel, handle, peer_id=args.peer_id,
                                       on_presence=on_presence, on_broadcast=on_broadcast)
        async with session:
            print(f"ready peer={session.peer_id} channel={args.channel}", file=sys.stderr,
                  flush=True)
            ended = asyncio.ensure_future(session.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([ended, stopped], return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            stopped.cancel()
            if session.error:
                print(f"session ended: {session.error}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
