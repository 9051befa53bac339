#!/usr/bin/python3
"""Sends stdin as a request to a channel and writes the response to stdout.

    ./scripts/run-relay.sh &                       # the relay; its gateway is on 127.0.0.1:7401
    echo hello | clients/python/examples/send.py --channel CHANNEL [--to PEER] [--timeout 5]
"""
import argparse
import os
import sys

try:
    from switchboard_client import Client, SwitchboardError
except ImportError:  # not installed: the package of this source tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from switchboard_client import Client, SwitchboardError


def stdin_chunks(size=64 * 1024):
    while True:
        chunk = sys.stdin.buffer.read1(size)
        if not chunk:
            return
        yield chunk


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("SWITCHBOARD_GRPC", "127.0.0.1:7401"))
    parser.add_argument("--channel", required=True)
    parser.add_argument("--to", help="the responder's peer id (default: any responder)")
    parser.add_argument("--timeout", type=float, help="deadline of the whole exchange, seconds")
    parser.add_argument("--meta", action="append", default=[], help="KEY=VALUE (repeatable)")
    args = parser.parse_args()
    metadata = dict(entry.split("=", 1) for entry in args.meta)
    with Client(args.server) as client:
        try:
            # The request streams from stdin while the response streams to stdout.
            for chunk in client.send_stream(args.channel, stdin_chunks(), target=args.to,
                                            timeout=args.timeout, metadata=metadata):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        except SwitchboardError as error:
            print(f"send failed: {error} (gRPC {error.code.name if error.code else '-'})",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
