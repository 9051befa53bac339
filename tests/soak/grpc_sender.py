#!/usr/bin/python3
"""Soak gRPC sender: requests and broadcasts through the gateway to the native peers.

Started by soak_test as a worker process: reports every stream as a ledger line on stdout
(see tests/soak/ledger.hpp) and obeys "stop" and "quit" (or end of input) on stdin.
"""

import argparse
import math
import os
import random
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "clients", "python"))
from switchboard_client import Client, SwitchboardError  # noqa: E402

STATUS = ["OK", "NO_RESPONDERS", "PEER_GONE", "DEADLINE_EXCEEDED", "IDLE_TIMEOUT", "CANCELLED",
          "REFUSED", "UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
          "SLOW_CONSUMER", "PROTOCOL_ERROR", "INTERNAL", "APPLICATION"]
# A call that failed before the gateway added its trailer (e.g. the client's own deadline).
GRPC_CODE_STATUS = {"DEADLINE_EXCEEDED": 3, "CANCELLED": 5, "UNAVAILABLE": 2}
MASK = (1 << 64) - 1
_lock = threading.Lock()


def emit(line):
    data = (line + "\n").encode()
    with _lock:
        os.write(1, data)  # one write per line: lines never interleave in the pipe


def body_hash(data):
    """The soak's BodyHash (tests/soak/body.hpp): FNV-1a over little-endian 8-byte words."""
    h = 0xCBF29CE484222325

    def mix(word):
        nonlocal h
        h = ((h ^ word) * 0x100000001B3) & MASK
        h ^= h >> 29

    whole = len(data) // 8 * 8
    for (word,) in struct.iter_unpack("<Q", data[:whole]):
        mix(word)
    if len(data) > whole:
        mix(int.from_bytes(data[whole:], "little"))
    mix(len(data))
    return h


def status_of(error):
    if error.status in STATUS:
        return STATUS.index(error.status)
    name = error.code.name if error.code is not None else ""
    return GRPC_CODE_STATUS.get(name, 12)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc", required=True)
    parser.add_argument("--peer", action="append", default=[], help="INDEX:CHANNEL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-body", type=int, default=1 << 20)
    parser.add_argument("--deadline-ms", type=int, default=15000)
    args = parser.parse_args()
    channels = [spec.split(":", 1)[1] for spec in args.peer]
    rng = random.Random(args.seed)
    stop = threading.Event()
    who = f"grpc-{os.getpid()}"
    client = Client(args.grpc)

    def traffic():
        # Bounded by the stop flag and a count far above what a 600 s run opens.
        for _ in range(1_000_000):
            if stop.is_set():
                return
            size = 0 if rng.random() < 0.05 else int(math.exp(rng.random() *
                                                             math.log(args.max_body)))
            data = os.urandom(size)
            sid = f"{rng.getrandbits(64):016x}"
            metadata = {"sid": sid, "sum": f"{body_hash(data):016x}", "len": str(size)}
            channel = rng.choice(channels)
            start = time.monotonic()
            if rng.random() < 0.75:
                emit(f"OS {sid} req {args.deadline_ms} {who}")
                status, verified, got = 0, 0, 0
                try:
                    response = client.send(channel, data, timeout=args.deadline_ms / 1000.0,
                                           metadata=metadata)
                    got = len(response)
                    verified = 1 if response == data else 0
                except SwitchboardError as error:
                    status = status_of(error)
                elapsed = int((time.monotonic() - start) * 1000)
                emit(f"ES {sid} {status} {verified} {got} {elapsed} 0 0")
            else:
                emit(f"OS {sid} bc {args.deadline_ms} {who}")
                status, delivered, dropped = 0, 0, 0
                try:
                    delivered, dropped = client.broadcast(
                        channel, data, metadata=metadata, timeout=args.deadline_ms / 1000.0)
                except SwitchboardError as error:
                    status = status_of(error)
                elapsed = int((time.monotonic() - start) * 1000)
                emit(f"ES {sid} {status} {1 if status == 0 else 0} {size} {elapsed} "
                     f"{delivered} {dropped}")
            time.sleep(rng.random() * 0.02)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    for line in sys.stdin:
        if line.startswith("stop"):
            stop.set()
        elif line.startswith("quit"):
            break
    stop.set()
    thread.join(args.deadline_ms / 1000.0 + 10.0)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
