#!/usr/bin/python3
"""Joins a channel as a responder that upper-cases each request; prints presence and broadcasts.

    clients/python/examples/respond.py --channel CHANNEL     # Ctrl-C to leave
"""
import argparse
import os
import signal
import sys
import threading

try:
    from switchboard_client import ApplicationError, Client
except ImportError:  # not installed: the package of this source tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from switchboard_client import ApplicationError, Client


def handle(request):
    """Runs on its own thread per request: stream the body back upper-cased."""
    if request.metadata.get("fail"):
        raise ApplicationError(42, "asked to fail")
    for chunk in request:
        request.write(chunk.upper())
    # Returning ends the response with OK.


def on_presence(update):
    print(f"presence {update.kind} {' '.join(update.peers) or '-'} version={update.version}",
          file=sys.stderr, flush=True)


def on_broadcast(message):
    body = message.read()
    print(f"broadcast from {message.sender or 'an anonymous sender'}: {len(body)} bytes",
          file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("SWITCHBOARD_GRPC", "127.0.0.1:7401"))
    parser.add_argument("--channel", required=True)
    parser.add_argument("--peer-id", help="keep an identity across runs")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Client(args.server) as client:
        with client.respond(args.channel, handle, peer_id=args.peer_id, on_presence=on_presence,
                            on_broadcast=on_broadcast) as session:
            print(f"ready peer={session.peer_id} channel={args.channel}", file=sys.stderr,
                  flush=True)
            while not stop.is_set() and not session.closed:
                stop.wait(0.5)
            if session.error:
                print(f"session ended: {session.error}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
