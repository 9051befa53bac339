"""A Python client of the Switchboard gRPC gateway (proto/switchboard/v1/switchboard.proto).

Everything here is blocking and thread-based, on top of grpcio's blocking streaming API (the
asyncio API with the same features is ``switchboard_client.aio``):

- ``Client.send`` / ``Client.send_stream``: one request streamed to a peer, its response back;
- ``Client.broadcast``: one message to every other peer of a channel, returns the summary;
- ``Client.respond``: joins a channel as a peer that serves requests (one handler thread per
  request) and receives broadcasts and presence;
- ``Client.list_peers`` / ``Client.watch_peers``: presence without joining.

Pointed at any relay of a cluster, the client asks it (Locate) which relay serves each channel
and sends that channel's calls there (see ``Client`` and the README's "Clusters").

Failures raise ``SwitchboardError`` (a subclass naming the status, e.g. ``NoRespondersError``)
carrying the gRPC status code and the gateway's ``switchboard-status`` trailer.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import grpc

from . import _common
from ._common import (  # noqa: F401 - re-exported for older imports
    CHUNK_SIZE,
    DEFAULT_TARGET,
    INCOMING_BUFFER,
    OUTGOING_QUEUE,
    ApplicationError,
    Body,
    BroadcastSummary,
    Peers,
    PresenceUpdate,
    Status,
    StreamReset,
    SwitchboardError,
)
from ._pb import load_health, pb2, pb2_grpc

#: How often blocked internal waits re-check whether their stream or session has ended.
_POLL = 0.25

_CLOSE = object()

_T = TypeVar("_T")


def _unchanged(error: SwitchboardError) -> SwitchboardError:
    return error


# ---- Send ----------------------------------------------------------------------------------


class SendCall:
    """An open Send. Iterate it for the response chunks (bytes); a failed stream raises
    SwitchboardError from the iteration. ``cancel()`` resets the stream at both ends."""

    def __init__(self, call: Any,
                 on_error: Callable[[SwitchboardError], SwitchboardError] = _unchanged,
                 on_metadata: Callable[[Any], None] | None = None) -> None:
        self._call = call
        self._on_error = on_error
        self._on_metadata = on_metadata  # told the initial metadata at the first message

    def __iter__(self) -> Iterator[bytes]:
        try:
            for message in self._call:
                if self._on_metadata is not None:
                    learn, self._on_metadata = self._on_metadata, None
                    learn(self._call.initial_metadata())
                data = _common.send_response_data(message)
                if data:
                    yield data
        except grpc.RpcError as error:
            raise self._on_error(SwitchboardError.from_rpc_error(error)) from None

    def read(self) -> bytes:
        """The whole response (raises SwitchboardError on failure)."""
        return b"".join(self)

    def cancel(self) -> None:
        self._call.cancel()

    def trailing_metadata(self) -> Any:
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

    def __init__(self, session: Responder, start: Any) -> None:
        self._session = session
        self.id: int = int(start.id)
        self.is_broadcast: bool = bool(start.broadcast)
        self.sender: str = str(start.sender)
        self.metadata: dict[str, str] = dict(start.metadata)
        self.deadline_ms = int(start.deadline_ms)
        self.received_at = time.monotonic()
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._body_ended = False
        self._discard = False
        self._answered = False
        self._credit = session.response_window  # response bytes we may send (with windows)
        self.reset: tuple[Status | str, str] | None = None
        self._done = threading.Event()
        if start.data:
            self._chunks.append(bytes(start.data))
            self._buffered = len(start.data)
        if start.last:
            self._body_ended = True

    # -- what the handler uses --

    @property
    def remaining(self) -> float | None:
        """Seconds left before the stream's deadline, or None without a deadline."""
        if self.deadline_ms == 0:
            return None
        return max(0.0, self.deadline_ms / 1000.0 - (time.monotonic() - self.received_at))

    def __iter__(self) -> Iterator[bytes]:
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

    def read(self) -> bytes:
        return b"".join(self)

    def write(self, data: Body) -> None:
        """Streams response bytes (requests only). Blocks while the session's send queue is
        full and, with stream windows, while this request has no credit; raises StreamReset
        if the stream was reset."""
        self._check_writable()
        for chunk in _common.split(data, CHUNK_SIZE):
            view = memoryview(chunk)
            while view:
                n = self._take_credit(len(view))
                self._send(_common.response_chunk(self.id, bytes(view[:n])))
                view = view[n:]

    def finish(self, data: Body = b"") -> None:
        """Ends the response with OK (after the optional last bytes)."""
        self.write(data)
        self._answered = True
        self._send(_common.response_chunk(self.id, b"", last=True))

    def fail(self, status: Status | str | int = Status.APPLICATION, app_code: int = 0,
             message: str = "") -> None:
        """Ends the response with an error status that reaches the sender unchanged."""
        self._check_writable()
        end = _common.response_end(self.id, status, app_code, message)
        self._answered = True
        self._send(end)

    def cancel(self, status: Status | str | int = Status.CANCELLED, message: str = "") -> None:
        """Aborts the request (or leaves the broadcast)."""
        if self.reset is not None or self._answered:
            return
        cancel = _common.stream_cancel(self.id, status, message)
        self._answered = True
        self._send(cancel)

    def wait_reset(self, timeout: float | None) -> tuple[Status | str, str] | None:
        """Waits up to ``timeout`` seconds for the stream to be reset; returns self.reset."""
        self._done.wait(timeout)
        return self.reset

    # -- what the session uses --

    def _check_writable(self) -> None:
        if self.reset is not None and not self.is_broadcast:
            raise StreamReset(*self.reset)
        error = _common.write_error(self.is_broadcast, self._answered)
        if error is not None:
            raise error

    def _take_credit(self, want: int) -> int:
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
                raise _common.session_gone()
            n = min(want, self._credit)
            self._credit -= n
            return n

    def _add_credit(self, n: int) -> None:
        with self._cond:
            self._credit += n
            self._cond.notify_all()

    def _send(self, message: Any) -> None:
        if not self._session._put(message, lambda: self.reset is not None):
            if self.reset is not None:
                raise StreamReset(*self.reset)
            raise _common.session_gone()

    def _feed(self, data: bytes, last: bool) -> None:
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

    def _reset(self, status: Status | str, message: str) -> None:
        with self._cond:
            if self.reset is None:
                self.reset = (status, message)
            self._cond.notify_all()
        self._done.set()

    def _handler_returned(self) -> None:
        with self._cond:
            self._discard = True
            unread = self._buffered
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()
        # The rest of the body is not wanted; its sender may still finish sending it.
        self._session._grant(self.id, unread)


Handler = Callable[[Incoming], "bytes | str | None"]


class Responder(_common.PresenceView):
    """A Respond session: one peer on one channel. Created by ``Client.respond``.

    ``peer_id``: this peer's id; ``peers``: the other peers now (a set); ``version``: the
    membership version; ``windows``: whether the relay granted stream windows (then
    ``response_window`` and ``incoming_window`` are its per-stream credits). ``close()`` leaves
    the channel. Usable as a context manager.
    """

    def __init__(self, stub: Any, channel: str, handler: Handler, peer_id: str | None = None,
                 token: str = "", on_presence: Callable[[PresenceUpdate], Any] | None = None,
                 on_broadcast: Callable[[Incoming], Any] | None = None,
                 join_timeout: float = 10.0,
                 grpc_metadata: Sequence[tuple[str, str]] | None = None,
                 stream_windows: bool = True,
                 on_error: Callable[[SwitchboardError], Any] | None = None,
                 on_metadata: Callable[[Any], None] | None = None) -> None:
        super().__init__()
        self.channel = channel
        self.error: SwitchboardError | None = None
        self._on_error = on_error
        self._on_metadata = on_metadata  # told the initial metadata at the first message
        self._handler = handler
        self._on_presence = on_presence
        self._on_broadcast = on_broadcast
        self._out: queue.Queue[Any] = queue.Queue(maxsize=OUTGOING_QUEUE)
        self._streams: dict[int, Incoming] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._events: queue.Queue[Any] = queue.Queue()
        self._workers: set[threading.Thread] = set()
        join = _common.join_request(channel, peer_id, token, stream_windows)
        self._call = stub.Respond(self._outgoing(join), metadata=grpc_metadata)
        self._reader = threading.Thread(target=self._read_loop, name="switchboard-respond-reader",
                                        daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch_loop,
                                            name="switchboard-respond-events", daemon=True)
        self._reader.start()
        self._dispatcher.start()
        if not self._ready.wait(join_timeout):
            self._call.cancel()
            raise _common.DeadlineExceededError(
                grpc.StatusCode.DEADLINE_EXCEEDED, None,
                f"no Joined and presence snapshot within {join_timeout} s")
        if self.error is not None:
            raise self.error

    # -- public --

    def close(self, graceful: bool = False, timeout: float = 5.0) -> None:
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

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the session ends (relay gone, cancelled); returns True if it did."""
        return self._closed.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> Responder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --

    def _outgoing(self, join: Any) -> Iterator[Any]:
        yield join
        while not self._closed.is_set():
            try:
                item = self._out.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is _CLOSE:
                return
            yield item

    def _put(self, message: Any, abandoned: Callable[[], bool]) -> bool:
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

    def _read_loop(self) -> None:
        try:
            for message in self._call:
                if self._on_metadata is not None:
                    learn, self._on_metadata = self._on_metadata, None
                    learn(self._call.initial_metadata())
                kind = message.WhichOneof("kind")
                if kind == "joined":
                    self._joined(message.joined)
                elif kind == "presence":
                    update = _common.update_from_proto(message.presence)
                    self._apply_presence(update)
                    self._events.put(update)
                    if update.kind == "SNAPSHOT":
                        self._ready.set()
                elif kind == "start":
                    self._start(message.start)
                elif kind == "chunk":
                    with self._lock:
                        stream = self._streams.get(message.chunk.id)
                    if stream is not None:
                        stream._feed(bytes(message.chunk.data), message.chunk.last)
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
                        stream._reset(_common.status_name(message.reset.status),
                                      message.reset.message)
        except grpc.RpcError as error:
            if not self._closed.is_set():
                self.error = SwitchboardError.from_rpc_error(error)
        finally:
            if self.error is None and not self._closed.is_set():
                self.error = SwitchboardError(grpc.StatusCode.UNAVAILABLE, None,
                                              "the gateway ended the Respond session")
            if self.error is not None and self._on_error is not None:
                self._on_error(self.error)
            self._closed.set()
            with self._lock:
                streams = list(self._streams.values())
                self._streams.clear()
            for stream in streams:
                stream._reset(Status.PEER_GONE, "the Respond session ended")
            self._events.put(_CLOSE)
            self._ready.set()

    def _grant(self, stream_id: int, n: int) -> None:
        """With windows: tells the relay that ``n`` more bytes of an incoming stream were
        taken (read, or dropped unread), so its sender may send that many more."""
        if self.windows and n > 0:
            self._put(_common.stream_window(stream_id, n), lambda: False)

    def _start(self, start: Any) -> None:
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

    def _finished(self, stream: Incoming) -> None:
        stream._handler_returned()
        with self._lock:
            if self._streams.get(stream.id) is stream:
                del self._streams[stream.id]
            self._workers.discard(threading.current_thread())

    def _run_request(self, request: Incoming) -> None:
        try:
            result = self._handler(request)
            if not request._answered and request.reset is None:
                request.finish(result if result is not None else b"")
        except StreamReset:
            pass
        except Exception as error:  # noqa: BLE001 - reported to the sender
            self._try_fail(request, *_common.handler_failure(error))
        finally:
            self._finished(request)

    def _run_broadcast(self, message: Incoming) -> None:
        assert self._on_broadcast is not None
        try:
            self._on_broadcast(message)
        except StreamReset:
            pass
        except Exception:  # noqa: BLE001 - a broadcast callback has nobody to report to
            message.cancel(Status.CANCELLED, "the broadcast callback failed")
        finally:
            self._finished(message)

    @staticmethod
    def _try_fail(request: Incoming, app_code: int, message: str) -> None:
        if request._answered or request.reset is not None:
            return
        try:
            request.fail(Status.APPLICATION, app_code, message)
        except SwitchboardError:
            pass

    def _dispatch_loop(self) -> None:
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

    def __init__(self, call: Any,
                 on_error: Callable[[SwitchboardError], SwitchboardError] = _unchanged,
                 on_metadata: Callable[[Any], None] | None = None) -> None:
        self._call = call
        self._cancelled = False
        self._on_error = on_error
        self._on_metadata = on_metadata  # told the initial metadata at the first message

    def __iter__(self) -> Iterator[PresenceUpdate]:
        try:
            for response in self._call:
                if self._on_metadata is not None:
                    learn, self._on_metadata = self._on_metadata, None
                    learn(self._call.initial_metadata())
                yield _common.update_from_proto(response.update)
        except grpc.RpcError as error:
            if self._cancelled and error.code() == grpc.StatusCode.CANCELLED:
                return
            raise self._on_error(SwitchboardError.from_rpc_error(error)) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()


# ---- The client ----------------------------------------------------------------------------


class Client:
    """A connection to a Switchboard gateway. Thread-safe; close() (or a with block) ends it."""

    def __init__(self, target: str = DEFAULT_TARGET, token: str = "",
                 options: Sequence[tuple[str, Any]] | None = None, tls: bool = False,
                 ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, server_name: str | None = None,
                 locate: bool = True) -> None:
        """``tls``: connect over TLS (implied by ``ca_file`` or ``cert_file``). ``ca_file``: PEM
        CA bundle for the gateway's certificate (None: gRPC's default roots); ``cert_file`` and
        ``key_file``: a client certificate for a gateway requiring mutual TLS; ``server_name``:
        the name checked in the gateway's certificate (None: the host of ``target``).

        ``locate`` (default True): before the first call on a channel, ask ``target`` which
        relay of its cluster serves it (Locate, once per channel) and send that channel's calls
        there, over a second connection with the same settings; a relay alone, or one without
        Locate, serves every channel itself. False: every call goes to ``target``."""
        self.target = target
        self.token = token or ""
        self.locate = locate
        self._channel_options = _common.channel_options(options, server_name)
        self._credentials = _common.channel_credentials(tls, ca_file, cert_file, key_file)
        self.channel = self._open(target)
        self.stub = pb2_grpc.SwitchboardServiceStub(self.channel)
        self._routes = _common.Routes()
        self._routes_lock = threading.Lock()

    def _open(self, target: str) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(target, self._credentials, options=self._channel_options)
        return grpc.insecure_channel(target, options=self._channel_options)

    def _stub(self, channel: str) -> Any:
        """The stub for ``channel``'s calls: locates the channel on first use (with ``locate``)."""
        if not self.locate:
            return self.stub
        try:
            address = self._routes.by_channel[_common.check_channel(channel)]
        except KeyError:
            try:
                answer = self.stub.Locate(_common.locate_request(channel, self.token),
                                          timeout=_common.LOCATE_TIMEOUT)
                address = _common.located_address(answer)
            except grpc.RpcError as error:
                if not _common.locate_not_answered(error):
                    raise SwitchboardError.from_rpc_error(error) from None
                address = None  # no Locate, or not allowed to ask: the relay given
            self._routes.by_channel[channel] = address
        if address is None or address == self.target:
            return self.stub
        with self._routes_lock:
            stub = self._routes.stubs.get(address)
            if stub is None:
                self._routes.channels[address] = self._open(address)
                stub = pb2_grpc.SwitchboardServiceStub(self._routes.channels[address])
                self._routes.stubs[address] = stub
            return stub

    def _located(self, channel: str) -> Callable[[SwitchboardError], SwitchboardError]:
        """What a failed call on ``channel`` passes its error through: a channel that moved
        is located again by the next call."""
        routes = self._routes
        return lambda error: routes.note(channel, error)

    def _learning(self, channel: str) -> Callable[[Any], None]:
        """What a call on ``channel`` passes its initial metadata to: a relay that carried it
        to the relay serving the channel names that one, where the next call then goes."""
        routes = self._routes
        return lambda metadata: routes.learn(channel, metadata)

    def _retried_once(self, channel: str, start: Callable[[Any], _T]) -> _T:
        """``start(stub)``, once more after locating again if the relay did not serve the
        channel (only for calls that fail before any of their data is sent)."""
        try:
            return start(self._stub(channel))
        except SwitchboardError as error:
            if not (self.locate and _common.channel_moved(error)):
                raise
            self._routes.forget(channel)
        return start(self._stub(channel))

    def forget_location(self, channel: str | None = None) -> None:
        """Drops the cached Locate answer of ``channel`` (None: of every channel)."""
        if channel is None:
            self._routes.by_channel.clear()
        else:
            self._routes.forget(channel)

    def close(self) -> None:
        with self._routes_lock:
            others = list(self._routes.channels.values())
            self._routes.channels.clear()
            self._routes.stubs.clear()
        for other in others:
            other.close()
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_stream(self, channel: str, data: Body = b"", target: str | None = None,
                    timeout: float | None = None, metadata: Mapping[str, str] | None = None,
                    idle_timeout_ms: int = 0, sender_peer_id: str | None = None,
                    chunk_size: int = CHUNK_SIZE) -> SendCall:
        """Opens a Send and returns a SendCall to iterate for the response chunks.

        ``data``: bytes, str, or an iterable of bytes (consumed as gRPC asks for it, so a
        generator streams without holding the body); ``target``: a peer id, None = any
        responder; ``timeout``: the stream's deadline in seconds; ``metadata``: a dict of
        request headers the responder sees."""
        opening = _common.send_open(channel, self.token, target, metadata, idle_timeout_ms,
                                    sender_peer_id)
        _common.check_chunk_size(chunk_size)

        def messages() -> Iterator[Any]:
            yield pb2.SendRequest(open=opening)
            for chunk in _common.split(data, chunk_size):
                yield _common.send_request(chunk)

        return SendCall(self._stub(channel).Send(messages(), timeout=timeout),
                        self._located(channel), self._learning(channel))

    def send(self, channel: str, data: Body = b"", target: str | None = None,
             timeout: float | None = None, metadata: Mapping[str, str] | None = None,
             idle_timeout_ms: int = 0, sender_peer_id: str | None = None) -> bytes:
        """Sends a request and returns the whole response (bytes); raises SwitchboardError."""
        return self.send_stream(channel, data, target=target, timeout=timeout,
                                metadata=metadata, idle_timeout_ms=idle_timeout_ms,
                                sender_peer_id=sender_peer_id).read()

    def broadcast(self, channel: str, data: Body = b"", metadata: Mapping[str, str] | None = None,
                  sender_peer_id: str | None = None, idle_timeout_ms: int = 0,
                  timeout: float | None = None, chunk_size: int = CHUNK_SIZE) -> BroadcastSummary:
        """Streams ``data`` to every other peer of ``channel``; returns (delivered, dropped)."""
        opening = _common.broadcast_open(channel, self.token, metadata, idle_timeout_ms,
                                         sender_peer_id)
        _common.check_chunk_size(chunk_size)

        def messages() -> Iterator[Any]:
            yield pb2.BroadcastRequest(open=opening)
            for chunk in _common.split(data, chunk_size):
                yield _common.broadcast_request(chunk)

        call = self._stub(channel).Broadcast(messages(), timeout=timeout)
        summary = None
        try:
            for message in call:
                if message.HasField("summary"):
                    summary = message.summary
        except grpc.RpcError as error:
            raise self._routes.note(channel, SwitchboardError.from_rpc_error(error)) from None
        self._routes.learn(channel, call.initial_metadata())
        return _common.summary_of(summary)

    def respond(self, channel: str, handler: Handler, peer_id: str | None = None,
                on_presence: Callable[[PresenceUpdate], Any] | None = None,
                on_broadcast: Callable[[Incoming], Any] | None = None,
                join_timeout: float = 10.0, stream_windows: bool = True) -> Responder:
        """Joins ``channel`` as a peer serving requests; returns a Responder once joined.

        ``handler(request)`` runs on its own thread per request (an Incoming): it reads the
        body, writes the response, and either returns (bytes to send, or None; the response
        then ends OK), raises ApplicationError(code, message), or calls fail(). Callbacks:
        ``on_presence(PresenceUpdate)`` in order on one thread; ``on_broadcast(Incoming)`` on
        a thread per broadcast.

        ``stream_windows`` (default True) asks the relay for per-stream credit, so that a
        requester that stops reading its response delays only its own request; False (or a
        relay without it) keeps the session-wide backpressure of older relays."""
        on_error = self._located(channel)
        return self._retried_once(channel, lambda stub: Responder(
            stub, channel, handler, peer_id=peer_id, token=self.token, on_presence=on_presence,
            on_broadcast=on_broadcast, join_timeout=join_timeout, stream_windows=stream_windows,
            on_error=on_error, on_metadata=self._learning(channel)))

    def list_peers(self, channel: str, timeout: float | None = 10.0) -> Peers:
        """The members of ``channel`` now, without joining it."""
        request = pb2.ListPeersRequest(channel=_common.check_channel(channel), token=self.token)

        def ask(stub: Any) -> Any:
            try:
                answer, call = stub.ListPeers.with_call(request, timeout=timeout)
            except grpc.RpcError as error:
                raise SwitchboardError.from_rpc_error(error) from None
            self._routes.learn(channel, call.initial_metadata())
            return answer

        answer = self._retried_once(channel, ask)
        return Peers(list(answer.peers), int(answer.version))

    def watch_peers(self, channel: str, timeout: float | None = None) -> PeerWatch:
        """The members of ``channel`` (a SNAPSHOT), then every change, without joining it."""
        request = pb2.WatchPeersRequest(channel=_common.check_channel(channel), token=self.token)
        return PeerWatch(self._stub(channel).WatchPeers(request, timeout=timeout),
                         self._located(channel), self._learning(channel))

    def health(self, service: str = "", timeout: float = 5.0) -> str:
        """The gateway's grpc.health.v1 status name for ``service`` (e.g. 'SERVING')."""
        health_pb2, health_pb2_grpc = load_health()
        if health_pb2 is None:
            raise RuntimeError("grpc-proto's health.proto is not installed")
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            raise SwitchboardError.from_rpc_error(error) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
