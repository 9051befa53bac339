#!/usr/bin/python3
"""Broadcasts stdin to every other peer of a channel and prints the delivery summary.

    echo "hello all" | clients/python/examples/broadcast.py --channel CHANNEL
"""
import argparse
import os
import sys

try:
    from switchboard_client import Client, SwitchboardError
except ImportError:  # not installed: the package of this source tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from switchboard_client import Client, SwitchboardError


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("SWITCHBOARD_GRPC", "127.0.0.1:7401"))
    parser.add_argument("--channel", required=True)
    args = parser.parse_args()
    with Client(args.server) as client:
        try:
            delivered, dropped = client.broadcast(args.channel, iter(
                lambda: sys.stdin.buffer.read1(64 * 1024), b""))
        except SwitchboardError as error:
            print(f"broadcast failed: {error}", file=sys.stderr)
            return 1
    print(f"delivered={delivered} dropped={dropped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
