"""A Python client of the Switchboard gRPC gateway (proto/switchboard/v1/switchboard.proto).

Everything here is synchronous and thread-based, on top of grpcio's blocking streaming API:

- ``Client.send`` / ``Client.send_stream``: one request streamed to a peer, its response back;
- ``Client.broadcast``: one message to every other peer of a channel, returns the summary;
- ``Client.respond``: joins a channel as a peer that serves requests (one handler thread per
  request) and receives broadcasts and presence;
- ``Client.list_peers`` / ``Client.watch_peers``: presence without joining.

Failures raise ``SwitchboardError`` carrying the gRPC status code and the gateway's
``switchboard-status`` trailer (e.g. ``"NO_RESPONDERS"``).
"""

import collections
import queue
import threading
import time

import grpc

from . import _stubs

pb2, pb2_grpc = _stubs.load()

DEFAULT_TARGET = "127.0.0.1:7401"
#: Body bytes per gRPC message we send (the native relay's default frame payload).
CHUNK_SIZE = 64 * 1024
#: Response messages queued towards the gateway per Respond session before writers block.
OUTGOING_QUEUE = 64
#: Body bytes buffered per incoming request before the session's reader waits for the handler
#: (only with a relay that has no stream windows: otherwise the relay's window bounds it).
INCOMING_BUFFER = 4 * 1024 * 1024
#: How often blocked internal waits re-check whether their stream or session has ended.
_POLL = 0.25

_CLOSE = object()

PresenceUpdate = collections.namedtuple("PresenceUpdate", "kind peers version")
PresenceUpdate.__doc__ = ("A presence event: kind is 'SNAPSHOT' (peers = the whole membership), "
                          "'JOINED' or 'LEFT' (peers = the one peer); version is the channel's "
                          "membership version after it.")
Peers = collections.namedtuple("Peers", "peers version")
BroadcastSummary = collections.namedtuple("BroadcastSummary", "delivered dropped")


class SwitchboardError(Exception):
    """An RPC or stream that did not end with OK.

    ``code``: the ``grpc.StatusCode`` (None for a stream reset seen by a responder);
    ``status``: the Switchboard status name from the ``switchboard-status`` trailer (None if the
    call failed before the gateway added one, e.g. a deadline enforced by the client itself);
    ``app_code``: the responder's application code for ``APPLICATION``; ``message``: details.
    """

    def __init__(self, code, status, message="", app_code=None):
        self.code = code
        self.status = status
        self.message = message or ""
        self.app_code = app_code
        label = status or (code.name if code is not None else "ERROR")
        text = f"{label}: {self.message}" if self.message else label
        if app_code is not None:
            text += f" (app code {app_code})"
        super().__init__(text)

    @classmethod
    def from_rpc_error(cls, error):
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        status, app_code = _trailer_status(error)
        return cls(code, status, details, app_code)


class StreamReset(SwitchboardError):
    """The incoming request or broadcast was aborted (cancelled, deadline, sender gone, ...)."""

    def __init__(self, status, message=""):
        super().__init__(None, status, message)


class ApplicationError(Exception):
    """Raise from a request handler to end the response with APPLICATION, ``code`` and
    ``message``, which reach the sender unchanged."""

    def __init__(self, code, message=""):
        super().__init__(message)
        self.code = code
        self.message = message


def _trailer_status(call):
    status, app_code = None, None
    try:
        trailers = call.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - some error objects carry no call
        trailers = ()
    for key, value in trailers:
        if key == "switchboard-status":
            status = value
        elif key == "switchboard-app-code":
            try:
                app_code = int(value)
            except ValueError:
                app_code = None
    return status, app_code


def _status_value(status):
    """The protobuf value of a status given by name ("APPLICATION", or "STATUS_APPLICATION") or
    by its native number (13); the protobuf enum is the native number plus one."""
    if isinstance(status, str):
        return pb2.Status.Value(status if status.startswith("STATUS_") else "STATUS_" + status)
    return int(status) + 1


def _status_name(value):
    """The Switchboard name of a protobuf status, as the ``switchboard-status`` trailer spells
    it (e.g. "NO_RESPONDERS")."""
    try:
        return pb2.Status.Name(value).removeprefix("STATUS_")
    except ValueError:
        return str(value)


def _split(data, chunk_size):
    """Yields ``data`` (bytes-like, str, or an iterable of those) as chunks <= chunk_size."""
    if data is None:
        return
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        for offset in range(0, len(view), chunk_size):
            yield bytes(view[offset:offset + chunk_size])
        return
    for piece in data:
        if isinstance(piece, str):
            piece = piece.encode()
        if len(piece) <= chunk_size:
            if len(piece) > 0:
                yield bytes(piece)
            continue
        view = memoryview(piece)
        for offset in range(0, len(view), chunk_size):
            yield bytes(view[offset:offset + chunk_size])


def _update_from_proto(update):
    return PresenceUpdate(pb2.PresenceUpdate.Kind.Name(update.kind).removeprefix("KIND_"),
                          list(update.peers),
                          int(update.version))


# ---- Send ----------------------------------------------------------------------------------


class SendCall:
    """An open Send. Iterate it for the response chunks (bytes); a failed stream raises
    SwitchboardError from the iteration. ``cancel()`` resets the stream at both ends."""

    def __init__(self, call):
        self._call = call

    def __iter__(self):
        try:
            for message in self._call:
                if message.WhichOneof("kind") == "chunk" and message.chunk.data:
                    yield message.chunk.data
        except grpc.RpcError as error:
            raise SwitchboardError.from_rpc_error(error) from None

    def read(self):
        """The whole response (raises SwitchboardError on failure)."""
        return b"".join(self)

    def cancel(self):
        self._call.cancel()

    def trailing_metadata(self):
        return self._call.trailing_metadata()


# ---- Respond -------------------------------------------------------------------------------


class Incoming:
    """One incoming request (or broadcast) of a Respond session.

    Iterate it for the body chunks (bytes); ``read()`` returns the whole body. A request is
    answered with ``write()`` (any number of times, full duplex), then ``finish()`` or
    ``fail()``. If the stream is reset (the sender cancelled, the deadline passed, the sender
    left), iteration and ``write()`` raise StreamReset; ``reset`` holds (status, message).

    With stream windows (the default; see ``Client.respond``), ``write()`` waits for this
    request's own credit, which comes back as its requester takes the response, and reading the
    body returns credit to its sender.
    """

    def __init__(self, session, start):
        self._session = session
        self.id = start.id
        self.is_broadcast = start.broadcast
        self.sender = start.sender
        self.metadata = dict(start.metadata)
        self.deadline_ms = int(start.deadline_ms)
        self.received_at = time.monotonic()
        self._cond = threading.Condition()
        self._chunks = collections.deque()
        self._buffered = 0
        self._body_ended = False
        self._discard = False
        self._answered = False
        self._credit = session.response_window  # response bytes we may send (with windows)
        self.reset = None
        self._done = threading.Event()
        if start.data:
            self._chunks.append(start.data)
            self._buffered = len(start.data)
        if start.last:
            self._body_ended = True

    # -- what the handler uses --

    @property
    def remaining(self):
        """Seconds left before the stream's deadline, or None without a deadline."""
        if self.deadline_ms == 0:
            return None
        return max(0.0, self.deadline_ms / 1000.0 - (time.monotonic() - self.received_at))

    def __iter__(self):
        while True:
            with self._cond:
                while not self._chunks and not self._body_ended and self.reset is None:
                    self._cond.wait(_POLL)
                if self._chunks:
                    chunk = self._chunks.popleft()
                    self._buffered -= len(chunk)
                    self._cond.notify_all()
                elif self.reset is not None:
                    raise StreamReset(*self.reset)
                else:
                    return
            self._session._grant(self.id, len(chunk))
            yield chunk

    def read(self):
        return b"".join(self)

    def write(self, data):
        """Streams response bytes (requests only). Blocks while the session's send queue is
        full and, with stream windows, while this request has no credit; raises StreamReset
        if the stream was reset."""
        self._check_writable()
        for chunk in _split(data, CHUNK_SIZE):
            view = memoryview(chunk)
            while view:
                n = self._take_credit(len(view))
                self._send(pb2.RespondRequest(
                    chunk=pb2.ResponseChunk(request_id=self.id, data=bytes(view[:n]))))
                view = view[n:]

    def finish(self, data=b""):
        """Ends the response with OK (after the optional last bytes)."""
        self.write(data)
        self._answered = True
        self._send(pb2.RespondRequest(
            chunk=pb2.ResponseChunk(request_id=self.id, data=b"", last=True)))

    def fail(self, status="APPLICATION", app_code=0, message=""):
        """Ends the response with an error status that reaches the sender unchanged."""
        self._check_writable()
        self._answered = True
        self._send(pb2.RespondRequest(end=pb2.ResponseEnd(
            request_id=self.id, status=_status_value(status), app_code=app_code,
            message=message)))

    def cancel(self, status="CANCELLED", message=""):
        """Aborts the request (or leaves the broadcast)."""
        if self.reset is not None or self._answered:
            return
        self._answered = True
        self._send(pb2.RespondRequest(cancel=pb2.StreamCancel(
            id=self.id, status=_status_value(status), message=message)))

    def wait_reset(self, timeout):
        """Waits up to ``timeout`` seconds for the stream to be reset; returns self.reset."""
        self._done.wait(timeout)
        return self.reset

    # -- what the session uses --

    def _check_writable(self):
        if self.is_broadcast:
            raise SwitchboardError(None, "PROTOCOL_ERROR", "a broadcast takes no response")
        if self.reset is not None:
            raise StreamReset(*self.reset)
        if self._answered:
            raise SwitchboardError(None, None, "the response has already ended")

    def _take_credit(self, want):
        """Waits for credit of this request (with windows) and takes up to ``want`` bytes."""
        if not self._session.windows:
            return want
        with self._cond:
            while (self._credit <= 0 and self.reset is None
                   and not self._session._closed.is_set()):
                self._cond.wait(_POLL)
            if self.reset is not None:
                raise StreamReset(*self.reset)
            if self._credit <= 0:
                raise SwitchboardError(None, "PEER_GONE", "the Respond session has ended")
            n = min(want, self._credit)
            self._credit -= n
            return n

    def _add_credit(self, n):
        with self._cond:
            self._credit += n
            self._cond.notify_all()

    def _send(self, message):
        if not self._session._put(message, lambda: self.reset is not None):
            if self.reset is not None:
                raise StreamReset(*self.reset)
            raise SwitchboardError(None, "PEER_GONE", "the Respond session has ended")

    def _feed(self, data, last):
        """Called by the session's reader. With windows the relay sends no more than this
        stream's credit, so it never waits; without, it blocks (bounded by session end /
        handler end) while this stream already buffers INCOMING_BUFFER bytes."""
        discarded = False
        with self._cond:
            while (not self._session.windows and self._buffered >= INCOMING_BUFFER
                   and not self._discard and self.reset is None
                   and not self._session._closed.is_set()):
                self._cond.wait(_POLL)
            if data and not self._discard:
                self._chunks.append(data)
                self._buffered += len(data)
            else:
                discarded = True
            if last:
                self._body_ended = True
            self._cond.notify_all()
        if discarded and data:
            self._session._grant(self.id, len(data))

    def _reset(self, status, message):
        with self._cond:
            if self.reset is None:
                self.reset = (status, message)
            self._cond.notify_all()
        self._done.set()

    def _handler_returned(self):
        with self._cond:
            self._discard = True
            unread = self._buffered
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()
        # The rest of the body is not wanted; its sender may still finish sending it.
        self._session._grant(self.id, unread)


class Responder:
    """A Respond session: one peer on one channel. Created by ``Client.respond``.

    ``peer_id``: this peer's id; ``peers``: the other peers now (a set); ``version``: the
    membership version; ``windows``: whether the relay granted stream windows (then
    ``response_window`` and ``incoming_window`` are its per-stream credits). ``close()`` leaves
    the channel. Usable as a context manager.
    """

    def __init__(self, stub, channel, handler, peer_id=None, token="", on_presence=None,
                 on_broadcast=None, join_timeout=10.0, grpc_metadata=None, stream_windows=True):
        self.channel = channel
        self.peer_id = None
        self.windows = False
        self.response_window = 0
        self.incoming_window = 0
        self.peers = set()
        self.version = 0
        self.error = None
        self._handler = handler
        self._on_presence = on_presence
        self._on_broadcast = on_broadcast
        self._out = queue.Queue(maxsize=OUTGOING_QUEUE)
        self._streams = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._events = queue.Queue()
        self._workers = set()
        join = pb2.Join(channel=channel, peer_id=peer_id or "", token=token or "",
                        stream_windows=stream_windows)
        self._call = stub.Respond(self._outgoing(join), metadata=grpc_metadata)
        self._reader = threading.Thread(target=self._read_loop, name="switchboard-respond-reader",
                                        daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch_loop,
                                            name="switchboard-respond-events", daemon=True)
        self._reader.start()
        self._dispatcher.start()
        if not self._ready.wait(join_timeout):
            self._call.cancel()
            raise SwitchboardError(grpc.StatusCode.DEADLINE_EXCEEDED, None,
                                   f"no Joined and presence snapshot within {join_timeout} s")
        if self.error is not None:
            raise self.error

    # -- public --

    def close(self, graceful=False, timeout=5.0):
        """Leaves the channel. With ``graceful``, first waits (up to ``timeout`` s) for the
        requests in flight to be answered. Requests still open get PEER_GONE at their senders."""
        if graceful:
            limit = time.monotonic() + timeout
            with self._lock:
                workers = list(self._workers)
            for worker in workers:
                worker.join(max(0.0, limit - time.monotonic()))
        self._closed.set()
        self._call.cancel()
        self._reader.join(timeout)
        self._dispatcher.join(timeout)

    def wait(self, timeout=None):
        """Blocks until the session ends (relay gone, cancelled); returns True if it did."""
        return self._closed.wait(timeout)

    @property
    def closed(self):
        return self._closed.is_set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals --

    def _outgoing(self, join):
        yield pb2.RespondRequest(join=join)
        while not self._closed.is_set():
            try:
                item = self._out.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is _CLOSE:
                return
            yield item

    def _put(self, message, abandoned):
        """Queues a message towards the gateway; False if the session or stream ended."""
        while not self._closed.is_set():
            if abandoned():
                return False
            try:
                self._out.put(message, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _read_loop(self):
        try:
            for message in self._call:
                kind = message.WhichOneof("kind")
                if kind == "joined":
                    self.peer_id = message.joined.peer_id
                    # An older relay announces no windows: then it has none.
                    self.response_window = message.joined.response_window
                    self.incoming_window = message.joined.incoming_window
                    self.windows = self.response_window > 0
                elif kind == "presence":
                    self._apply_presence(_update_from_proto(message.presence))
                elif kind == "start":
                    self._start(message.start)
                elif kind == "chunk":
                    with self._lock:
                        stream = self._streams.get(message.chunk.id)
                    if stream is not None:
                        stream._feed(message.chunk.data, message.chunk.last)
                    else:
                        self._grant(message.chunk.id, len(message.chunk.data))
                elif kind == "window":
                    with self._lock:
                        stream = self._streams.get(message.window.id)
                    if stream is not None:
                        stream._add_credit(message.window.bytes)
                elif kind == "reset":
                    with self._lock:
                        stream = self._streams.pop(message.reset.id, None)
                    if stream is not None:
                        stream._reset(_status_name(message.reset.status), message.reset.message)
        except grpc.RpcError as error:
            if not self._closed.is_set():
                self.error = SwitchboardError.from_rpc_error(error)
        finally:
            if self.error is None and not self._closed.is_set():
                self.error = SwitchboardError(grpc.StatusCode.UNAVAILABLE, None,
                                              "the gateway ended the Respond session")
            self._closed.set()
            with self._lock:
                streams = list(self._streams.values())
                self._streams.clear()
            for stream in streams:
                stream._reset("PEER_GONE", "the Respond session ended")
            self._events.put(_CLOSE)
            self._ready.set()

    def _apply_presence(self, update):
        if update.kind == "SNAPSHOT":
            self.peers = set(update.peers) - {self.peer_id}
        elif update.kind == "JOINED":
            self.peers = self.peers | set(update.peers)
        elif update.kind == "LEFT":
            self.peers = self.peers - set(update.peers)
        self.version = update.version
        self._events.put(update)
        if update.kind == "SNAPSHOT":
            self._ready.set()

    def _grant(self, stream_id, n):
        """With windows: tells the relay that ``n`` more bytes of an incoming stream were
        taken (read, or dropped unread), so its sender may send that many more."""
        if self.windows and n > 0:
            self._put(pb2.RespondRequest(window=pb2.StreamWindow(id=stream_id, bytes=n)),
                      lambda: False)

    def _start(self, start):
        stream = Incoming(self, start)
        if start.broadcast and self._on_broadcast is None:
            # Nobody wants broadcasts: its chunks find no stream and are dropped (and granted).
            self._grant(start.id, len(start.data))
            return
        # Registered until reset or until its handler returns: chunks and resets find it.
        with self._lock:
            self._streams[start.id] = stream
        target = self._run_broadcast if start.broadcast else self._run_request
        worker = threading.Thread(target=target, args=(stream,), daemon=True,
                                  name=f"switchboard-request-{start.id}")
        with self._lock:
            self._workers.add(worker)
        worker.start()

    def _finished(self, stream):
        stream._handler_returned()
        with self._lock:
            if self._streams.get(stream.id) is stream:
                del self._streams[stream.id]
            self._workers.discard(threading.current_thread())

    def _run_request(self, request):
        try:
            result = self._handler(request)
            if not request._answered and request.reset is None:
                request.finish(result if result is not None else b"")
        except StreamReset:
            pass
        except ApplicationError as error:
            self._try_fail(request, error.code, error.message)
        except Exception as error:  # noqa: BLE001 - reported to the sender
            self._try_fail(request, 1, f"handler raised {type(error).__name__}: {error}")
        finally:
            self._finished(request)

    def _run_broadcast(self, message):
        try:
            self._on_broadcast(message)
        except StreamReset:
            pass
        except Exception:  # noqa: BLE001 - a broadcast callback has nobody to report to
            message.cancel("CANCELLED", "the broadcast callback failed")
        finally:
            self._finished(message)

    @staticmethod
    def _try_fail(request, app_code, message):
        if request._answered or request.reset is not None:
            return
        try:
            request.fail("APPLICATION", app_code, message[:512])
        except SwitchboardError:
            pass

    def _dispatch_loop(self):
        while True:
            update = self._events.get()
            if update is _CLOSE:
                return
            if self._on_presence is not None:
                try:
                    self._on_presence(update)
                except Exception:  # noqa: BLE001 - a callback's failure must not end the session
                    pass


# ---- Presence without joining --------------------------------------------------------------


class PeerWatch:
    """Iterate for PresenceUpdate (a SNAPSHOT first, then JOINED/LEFT). ``cancel()`` stops it;
    the iteration then ends quietly."""

    def __init__(self, call):
        self._call = call
        self._cancelled = False

    def __iter__(self):
        try:
            for response in self._call:
                yield _update_from_proto(response.update)
        except grpc.RpcError as error:
            if self._cancelled and error.code() == grpc.StatusCode.CANCELLED:
                return
            raise SwitchboardError.from_rpc_error(error) from None

    def cancel(self):
        self._cancelled = True
        self._call.cancel()


# ---- The client ----------------------------------------------------------------------------


def _read_file(path):
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class Client:
    """A connection to a Switchboard gateway. Thread-safe; close() (or a with block) ends it."""

    def __init__(self, target=DEFAULT_TARGET, token="", options=None, tls=False, ca_file=None,
                 cert_file=None, key_file=None, server_name=None):
        """``tls``: connect over TLS (implied by ``ca_file`` or ``cert_file``). ``ca_file``: PEM
        CA bundle for the gateway's certificate (None: gRPC's default roots); ``cert_file`` and
        ``key_file``: a client certificate for a gateway requiring mutual TLS; ``server_name``:
        the name checked in the gateway's certificate (None: the host of ``target``)."""
        self.target = target
        self.token = token or ""
        channel_options = [("grpc.max_receive_message_length", 64 * 1024 * 1024),
                           ("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if server_name:
            channel_options.append(("grpc.ssl_target_name_override", server_name))
        channel_options += list(options or [])
        if tls or ca_file or cert_file:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read_file(ca_file),
                private_key=_read_file(key_file),
                certificate_chain=_read_file(cert_file))
            self.channel = grpc.secure_channel(target, credentials, options=channel_options)
        else:
            self.channel = grpc.insecure_channel(target, options=channel_options)
        self.stub = pb2_grpc.SwitchboardServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_stream(self, channel, data=b"", target=None, timeout=None, metadata=None,
                    idle_timeout_ms=0, sender_peer_id=None, chunk_size=CHUNK_SIZE):
        """Opens a Send and returns a SendCall to iterate for the response chunks.

        ``data``: bytes, str, or an iterable of bytes (consumed as gRPC asks for it, so a
        generator streams without holding the body); ``target``: a peer id, None = any
        responder; ``timeout``: the stream's deadline in seconds; ``metadata``: a dict of
        request headers the responder sees."""
        opening = pb2.SendOpen(channel=channel, target=target or "",
                               idle_timeout_ms=idle_timeout_ms, metadata=metadata or {},
                               sender_peer_id=sender_peer_id or "", token=self.token)

        def messages():
            yield pb2.SendRequest(open=opening)
            for chunk in _split(data, chunk_size):
                yield pb2.SendRequest(chunk=pb2.Chunk(data=chunk))

        return SendCall(self.stub.Send(messages(), timeout=timeout))

    def send(self, channel, data=b"", target=None, timeout=None, metadata=None,
             idle_timeout_ms=0, sender_peer_id=None):
        """Sends a request and returns the whole response (bytes); raises SwitchboardError."""
        return self.send_stream(channel, data, target=target, timeout=timeout,
                                metadata=metadata, idle_timeout_ms=idle_timeout_ms,
                                sender_peer_id=sender_peer_id).read()

    def broadcast(self, channel, data=b"", metadata=None, sender_peer_id=None,
                  idle_timeout_ms=0, timeout=None, chunk_size=CHUNK_SIZE):
        """Streams ``data`` to every other peer of ``channel``; returns (delivered, dropped)."""
        opening = pb2.BroadcastOpen(channel=channel, metadata=metadata or {},
                                    sender_peer_id=sender_peer_id or "", token=self.token,
                                    idle_timeout_ms=idle_timeout_ms)

        def messages():
            yield pb2.BroadcastRequest(open=opening)
            for chunk in _split(data, chunk_size):
                yield pb2.BroadcastRequest(chunk=pb2.Chunk(data=chunk))

        summary = None
        try:
            for message in self.stub.Broadcast(messages(), timeout=timeout):
                if message.HasField("summary"):
                    summary = message.summary
        except grpc.RpcError as error:
            raise SwitchboardError.from_rpc_error(error) from None
        if summary is None:
            raise SwitchboardError(grpc.StatusCode.INTERNAL, None,
                                   "the broadcast ended OK without a summary")
        return BroadcastSummary(int(summary.delivered), int(summary.dropped))

    def respond(self, channel, handler, peer_id=None, on_presence=None, on_broadcast=None,
                join_timeout=10.0, stream_windows=True):
        """Joins ``channel`` as a peer serving requests; returns a Responder once joined.

        ``handler(request)`` runs on its own thread per request (an Incoming): it reads the
        body, writes the response, and either returns (bytes to send, or None; the response
        then ends OK), raises ApplicationError(code, message), or calls fail(). Callbacks:
        ``on_presence(PresenceUpdate)`` in order on one thread; ``on_broadcast(Incoming)`` on
        a thread per broadcast.

        ``stream_windows`` (default True) asks the relay for per-stream credit, so that a
        requester that stops reading its response delays only its own request; False (or a
        relay without it) keeps the session-wide backpressure of older relays."""
        return Responder(self.stub, channel, handler, peer_id=peer_id, token=self.token,
                         on_presence=on_presence, on_broadcast=on_broadcast,
                         join_timeout=join_timeout, stream_windows=stream_windows)

    def list_peers(self, channel, timeout=10.0):
        try:
            answer = self.stub.ListPeers(pb2.ListPeersRequest(channel=channel, token=self.token),
                                         timeout=timeout)
        except grpc.RpcError as error:
            raise SwitchboardError.from_rpc_error(error) from None
        return Peers(list(answer.peers), int(answer.version))

    def watch_peers(self, channel, timeout=None):
        return PeerWatch(self.stub.WatchPeers(
            pb2.WatchPeersRequest(channel=channel, token=self.token), timeout=timeout))

    def health(self, service="", timeout=5.0):
        """The gateway's grpc.health.v1 status name for ``service`` (e.g. 'SERVING')."""
        health_pb2, health_pb2_grpc = _stubs.load_health()
        if health_pb2 is None:
            raise RuntimeError("grpc-proto's health.proto is not installed")
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            raise SwitchboardError.from_rpc_error(error) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
