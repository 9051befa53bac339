"""Raw HTTP/2 (RFC 9113) for attack tests: frames written by hand, HPACK literal fields without
Huffman coding or indexing, and a reader thread that records what the server sends back."""

import socket
import struct
import threading

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = \
    range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE = 0x3, 0x4
ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL", 11: "ENHANCE_YOUR_CALM"}


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def settings(**values):
    ids = {"max_concurrent_streams": SETTINGS_MAX_CONCURRENT_STREAMS,
           "initial_window_size": SETTINGS_INITIAL_WINDOW_SIZE}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in values.items()))


def _integer(value, prefix_bits):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = [limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name, value):
    """A header field as a literal without indexing, new name, no Huffman coding."""
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


def grpc_request_headers(path, authority="127.0.0.1"):
    return b"".join(literal(n, v) for n, v in [
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
        ("content-type", "application/grpc"), ("te", "trailers")])


def grpc_message(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class Connection:
    """A client connection: sends the preface and SETTINGS, then records the server's frames."""

    def __init__(self, port, initial_window=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lock = threading.Lock()
        self.goaway = None      # (error code name, debug text)
        self.resets = {}        # stream id -> error code name
        self.headers = {}       # stream id -> count of HEADERS frames (response headers, trailers)
        self.data_bytes = 0
        self.closed = threading.Event()
        values = {} if initial_window is None else {"initial_window_size": initial_window}
        self.send(PREFACE + settings(**values))
        threading.Thread(target=self._read, daemon=True).start()

    def send(self, data):
        """Sends; returns False once the server has closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _read(self):
        buffer = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                buffer += chunk
                while len(buffer) >= 9:
                    length = int.from_bytes(buffer[:3], "big")
                    if len(buffer) < 9 + length:
                        break
                    kind, flags, stream = struct.unpack(">BBI", buffer[3:9])
                    payload = buffer[9:9 + length]
                    buffer = buffer[9 + length:]
                    self._on_frame(kind, flags, stream & 0x7FFFFFFF, payload)
        except OSError:
            pass
        self.closed.set()

    def _on_frame(self, kind, flags, stream, payload):
        with self.lock:
            if kind == SETTINGS and not flags & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                self.send(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                code = struct.unpack(">I", payload[4:8])[0]
                self.goaway = (ERROR_NAMES.get(code, str(code)),
                               payload[8:].decode(errors="replace"))
            elif kind == RST_STREAM:
                code = struct.unpack(">I", payload[:4])[0]
                self.resets[stream] = ERROR_NAMES.get(code, str(code))
            elif kind == HEADERS:
                self.headers[stream] = self.headers.get(stream, 0) + 1
            elif kind == DATA:
                self.data_bytes += len(payload)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
