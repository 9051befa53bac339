"""The native wire protocol (docs/PROTOCOL.md) as far as raw test peers need it: frame builders,
parsers and a blocking socket peer that reads only when asked to."""

import select
import socket
import struct
import time
import uuid

HELLO, WELCOME, PRESENCE, PING, GOAWAY, ERROR = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OPEN, DATA, END, RESET, WINDOW = 0x10, 0x11, 0x12, 0x13, 0x14
KIND_PEER, KIND_ANY, KIND_BROADCAST = 0, 1, 2
FIN, ACK, MORE = 0x01, 0x01, 0x02
RESOURCE_EXHAUSTED, PROTOCOL_ERROR = 9, 11
STATUS_NAMES = ["OK", "NO_RESPONDERS", "PEER_GONE", "DEADLINE_EXCEEDED", "IDLE_TIMEOUT",
                "CANCELLED", "REFUSED", "UNAUTHENTICATED", "PERMISSION_DENIED",
                "RESOURCE_EXHAUSTED", "SLOW_CONSUMER", "PROTOCOL_ERROR", "INTERNAL",
                "APPLICATION"]


def status_name(status):
    return STATUS_NAMES[status] if status < len(STATUS_NAMES) else str(status)


def frame(kind, flags, stream, payload):
    return struct.pack(">BBHII", kind, flags, 0, stream, len(payload)) + payload


def hello_frame(channel, window=1 << 20, accept_requests=False, peer=None, max_frame=65536):
    payload = (b"SWBD" + struct.pack(">HH", 1, 1 if accept_requests else 0) +
               uuid.UUID(channel).bytes + (uuid.UUID(peer).bytes if peer else bytes(16)) +
               struct.pack(">IIH", max_frame, window, 0))
    return frame(HELLO, 0, 0, payload)


def open_frame(stream, kind, peer=None, body=b"", fin=False):
    payload = struct.pack(">BBHII", kind, 0, 0, 0, 0) + (peer or bytes(16)) + body
    return frame(OPEN, FIN if fin else 0, stream, payload)


def ping(opaque, ack=False):
    return frame(PING, ACK if ack else 0, 0, struct.pack(">Q", opaque))


def parse_error(payload):
    status, length = struct.unpack(">HH", payload[:4])
    return status, payload[4:4 + length].decode(errors="replace")


def parse_reset(payload):
    status, length, _ = struct.unpack(">HHI", payload[:8])
    return status, payload[8:8 + length].decode(errors="replace")


class Peer:
    """A raw native connection. `receive_buffer` fixes SO_RCVBUF before connecting, so a peer
    that does not read stalls the relay's writes after a few KiB."""

    def __init__(self, port, receive_buffer=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or self.eof:
            return False
        ready, _, _ = select.select([self.sock], [], [], left)
        if not ready:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def next_frame(self, timeout=5.0):
        """(type, flags, stream, payload) within `timeout`, or None; PINGs are answered."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 12:
                kind, flags, _, stream, length = struct.unpack(">BBHII", self.buffer[:12])
                if len(self.buffer) >= 12 + length:
                    payload = self.buffer[12:12 + length]
                    self.buffer = self.buffer[12 + length:]
                    if kind == PING and not flags & ACK:
                        self.send(ping(struct.unpack(">Q", payload)[0], ack=True))
                        continue
                    return kind, flags, stream, payload
            if not self._fill(deadline):
                return None

    def expect(self, kind, timeout=5.0):
        """The next frame of `kind`, skipping others, within `timeout`; or None."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.next_frame(max(0.0, deadline - time.monotonic()))
            if got is None or got[0] == kind:
                return got

    def expect_closed(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.eof:
            if self.next_frame(max(0.0, deadline - time.monotonic())) is None and not self.eof:
                return False
        return True

    def expect_nothing(self, quiet):
        return self.next_frame(quiet) is None and not self.eof

    def join(self, channel, window=1 << 20, accept_requests=False):
        """HELLO, then WELCOME and the presence snapshot; returns the peer id."""
        self.send(hello_frame(channel, window, accept_requests))
        welcome = self.expect(WELCOME)
        if welcome is None:
            raise RuntimeError("no WELCOME")
        peer_id = str(uuid.UUID(bytes=welcome[3][4:20]))
        while True:
            presence = self.expect(PRESENCE)
            if presence is None:
                raise RuntimeError("no presence snapshot")
            if not presence[1] & MORE:
                return peer_id
