"""The asyncio API of the Switchboard gRPC client, on grpcio's ``grpc.aio``.

The same features as the blocking ``switchboard_client.Client``, as coroutines and async
iterators; statuses, errors, messages and argument checks are shared with it (``_common``):

    async with AsyncClient("127.0.0.1:7401") as client:
        answer = await client.send(channel, b"hello")

- ``AsyncClient.send`` / ``send_stream``: one request (bytes, or an async iterable of chunks)
  and its response (an async iterator of chunks);
- ``AsyncClient.broadcast``: one message to every other peer, returns the summary;
- ``AsyncClient.respond``: joins a channel as a peer; each request runs the async handler in
  its own task, so requests are served concurrently, each with its own flow-control windows;
- ``AsyncClient.list_peers`` / ``watch_peers``: presence without joining.

Pointed at any relay of a cluster, the client asks it (Locate) which relay serves each channel
and sends that channel's calls there, as the blocking client does.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence, TypeVar, Union

import grpc
import grpc.aio

from . import _common
from ._common import (
    CHUNK_SIZE,
    DEFAULT_TARGET,
    INCOMING_BUFFER,
    OUTGOING_QUEUE,
    AsyncBody,
    BroadcastSummary,
    Peers,
    PresenceUpdate,
    Status,
    StreamReset,
    SwitchboardError,
)
from ._pb import load_health, pb2, pb2_grpc

#: How often a write waiting for room in the session's queue re-checks its stream.
_POLL = 0.25

_CLOSE = object()

_T = TypeVar("_T")


def _unchanged(error: SwitchboardError) -> SwitchboardError:
    return error


class _Call:
    """A streaming call, opened at once, or as soon as the Locate of its channel answers (a
    callback on that Locate opens it, so calls open in the order they were made)."""

    def __init__(self, call: Any, on_error: Callable[[SwitchboardError], SwitchboardError],
                 on_metadata: Callable[[Any], None] | None = None) -> None:
        self._call = call
        self._cancelled = False
        self._on_error = on_error
        self._on_metadata = on_metadata  # told the initial metadata at the first message
        self._located: asyncio.Task[None] | None = None

    def _open_when_located(self, located: asyncio.Task[None],
                           start: Callable[[], Any]) -> None:
        def open_call(done: asyncio.Task[None]) -> None:
            if done.cancelled() or done.exception() is not None or self._cancelled:
                return
            self._call = start()

        self._located = located
        located.add_done_callback(open_call)

    async def _learn(self, call: Any) -> None:
        if self._on_metadata is not None:
            learn, self._on_metadata = self._on_metadata, None
            learn(await call.initial_metadata())

    async def _opened(self) -> Any:
        """The gRPC call once opened (None if cancelled first); raises a failed Locate's error."""
        if self._call is None and self._located is not None and not self._cancelled:
            await asyncio.shield(self._located)
        return self._call

    def cancel(self) -> None:
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


def _cancelled_locally(call_cancelled: bool) -> bool:
    """True when a CancelledError comes from our own cancel() of the gRPC call, not from a
    cancellation of the task that is waiting on it."""
    task = asyncio.current_task()
    return call_cancelled and (task is None or task.cancelling() == 0)


def _local_cancel_error() -> SwitchboardError:
    return _common.StreamCancelledError(grpc.StatusCode.CANCELLED, None, "cancelled by the client")


# ---- Send ----------------------------------------------------------------------------------


class AsyncSendCall(_Call):
    """An open Send. ``async for`` it for the response chunks (bytes); a failed stream raises
    SwitchboardError from the iteration. ``cancel()`` resets the stream at both ends."""

    def __init__(self, call: Any, on_error: Callable[[SwitchboardError], SwitchboardError]
                 = _unchanged, on_metadata: Callable[[Any], None] | None = None) -> None:
        super().__init__(call, on_error, on_metadata)

    async def _chunks(self) -> AsyncIterator[bytes]:
        call = await self._opened()
        if call is None:
            raise _local_cancel_error()
        try:
            async for message in call:
                await self._learn(call)
                data = _common.send_response_data(message)
                if data:
                    yield data
        except grpc.RpcError as error:
            raise self._on_error(SwitchboardError.from_rpc_error(error)) from None
        except asyncio.CancelledError:
            if _cancelled_locally(self._cancelled):
                raise _local_cancel_error() from None
            raise

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def read(self) -> bytes:
        """The whole response (raises SwitchboardError on failure)."""
        return b"".join([chunk async for chunk in self])

    async def trailing_metadata(self) -> Any:
        call = await self._opened()
        return None if call is None else await call.trailing_metadata()


# ---- Respond -------------------------------------------------------------------------------


class AsyncIncoming:
    """One incoming request (or broadcast) of an asyncio Respond session.

    ``async for`` it for the body chunks; ``await read()`` for the whole body. A request is
    answered with ``await write()`` (any number of times, full duplex), then ``finish()`` or
    ``fail()`` (or by the handler returning). A reset stream (sender cancelled, deadline, sender
    left) makes iteration and ``write()`` raise StreamReset; ``reset`` holds (status, message).
    With stream windows, ``write()`` waits for this request's own credit only.
    """

    def __init__(self, session: AsyncResponder, start: Any) -> None:
        self._session = session
        self.id: int = int(start.id)
        self.is_broadcast: bool = bool(start.broadcast)
        self.sender: str = str(start.sender)
        self.metadata: dict[str, str] = dict(start.metadata)
        self.deadline_ms = int(start.deadline_ms)
        self.received_at = time.monotonic()
        self._changed = asyncio.Event()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._body_ended = bool(start.last)
        self._discard = False
        self._answered = False
        self._credit = session.response_window
        self.reset: tuple[Status | str, str] | None = None
        if start.data:
            self._chunks.append(bytes(start.data))
            self._buffered = len(start.data)

    # -- what the handler uses --

    @property
    def remaining(self) -> float | None:
        """Seconds left before the stream's deadline, or None without a deadline."""
        if self.deadline_ms == 0:
            return None
        return max(0.0, self.deadline_ms / 1000.0 - (time.monotonic() - self.received_at))

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            await self._wait(lambda: bool(self._chunks) or self._body_ended
                             or self.reset is not None)
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                self._wake()
            elif self.reset is not None:
                raise StreamReset(*self.reset)
            else:
                return
            await self._session._grant(self.id, len(chunk))
            yield chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    async def write(self, data: AsyncBody) -> None:
        """Streams response bytes (requests only): bytes, str, or an (async) iterable of them."""
        self._check_writable()
        async for chunk in _common.asplit(data, CHUNK_SIZE):
            view = memoryview(chunk)
            while view:
                n = await self._take_credit(len(view))
                await self._send(_common.response_chunk(self.id, bytes(view[:n])))
                view = view[n:]

    async def finish(self, data: AsyncBody = b"") -> None:
        """Ends the response with OK (after the optional last bytes)."""
        await self.write(data)
        self._answered = True
        await self._send(_common.response_chunk(self.id, b"", last=True))

    async def fail(self, status: Status | str | int = Status.APPLICATION, app_code: int = 0,
                   message: str = "") -> None:
        """Ends the response with an error status that reaches the sender unchanged."""
        self._check_writable()
        end = _common.response_end(self.id, status, app_code, message)
        self._answered = True
        await self._send(end)

    async def cancel(self, status: Status | str | int = Status.CANCELLED,
                     message: str = "") -> None:
        """Aborts the request (or leaves the broadcast)."""
        if self.reset is not None or self._answered:
            return
        cancel = _common.stream_cancel(self.id, status, message)
        self._answered = True
        await self._send(cancel)

    async def wait_reset(self, timeout: float | None) -> tuple[Status | str, str] | None:
        """Waits up to ``timeout`` seconds for the stream to be reset; returns self.reset."""
        try:
            await asyncio.wait_for(self._wait(lambda: self.reset is not None), timeout)
        except asyncio.TimeoutError:
            pass
        return self.reset

    # -- what the session uses --

    def _wake(self) -> None:
        self._changed.set()

    async def _wait(self, ready: Callable[[], bool]) -> None:
        # One event for every condition of this stream: a waiter re-checks its own after each
        # change (all run on one event loop, so no change is missed between check and wait).
        while not ready():
            self._changed.clear()
            await self._changed.wait()

    def _check_writable(self) -> None:
        if self.reset is not None and not self.is_broadcast:
            raise StreamReset(*self.reset)
        error = _common.write_error(self.is_broadcast, self._answered)
        if error is not None:
            raise error

    async def _take_credit(self, want: int) -> int:
        if not self._session.windows:
            return want
        await self._wait(lambda: self._credit > 0 or self.reset is not None
                         or self._session.closed)
        if self.reset is not None:
            raise StreamReset(*self.reset)
        if self._credit <= 0:
            raise _common.session_gone()
        n = min(want, self._credit)
        self._credit -= n
        return n

    def _add_credit(self, n: int) -> None:
        self._credit += n
        self._wake()

    async def _send(self, message: Any) -> None:
        if not await self._session._put(message, lambda: self.reset is not None):
            if self.reset is not None:
                raise StreamReset(*self.reset)
            raise _common.session_gone()

    async def _feed(self, data: bytes, last: bool) -> None:
        """Called by the session's reader; waits (without windows only) while this stream
        already buffers INCOMING_BUFFER bytes its handler has not read."""
        if not self._session.windows:
            await self._wait(lambda: self._buffered < INCOMING_BUFFER or self._discard
                             or self.reset is not None or self._session.closed)
        discarded = not data or self._discard
        if not discarded:
            self._chunks.append(data)
            self._buffered += len(data)
        if last:
            self._body_ended = True
        self._wake()
        if discarded and data:
            await self._session._grant(self.id, len(data))

    def _reset(self, status: Status | str, message: str) -> None:
        if self.reset is None:
            self.reset = (status, message)
        self._wake()

    async def _handler_returned(self) -> None:
        self._discard = True
        unread = self._buffered
        self._chunks.clear()
        self._buffered = 0
        self._wake()
        await self._session._grant(self.id, unread)


AsyncHandler = Callable[[AsyncIncoming], Awaitable[Union[bytes, str, None]]]
PresenceCallback = Callable[[PresenceUpdate], Any]
BroadcastCallback = Callable[[AsyncIncoming], Awaitable[Any]]


class AsyncResponder(_common.PresenceView):
    """An asyncio Respond session: one peer on one channel. Created by
    ``await AsyncClient.respond(...)``; ``async with`` it (or ``await close()``) to leave.

    ``peer_id``, ``peers``, ``version``, ``windows``, ``response_window``, ``incoming_window``
    as in the blocking ``Responder``; ``error`` says why the session ended, if the relay ended it.
    """

    def __init__(self, stub: Any, channel: str, handler: AsyncHandler,
                 peer_id: str | None, token: str, on_presence: PresenceCallback | None,
                 on_broadcast: BroadcastCallback | None,
                 grpc_metadata: Sequence[tuple[str, str]] | None, stream_windows: bool,
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
        self._out: asyncio.Queue[Any] = asyncio.Queue(maxsize=OUTGOING_QUEUE)
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._streams: dict[int, AsyncIncoming] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        join = _common.join_request(channel, peer_id, token, stream_windows)
        self._call = stub.Respond(self._outgoing(join), metadata=grpc_metadata)
        self._reader = asyncio.create_task(self._read_loop(), name="switchboard-respond-reader")
        self._dispatcher = asyncio.create_task(self._dispatch_loop(),
                                               name="switchboard-respond-events")

    async def _joined_within(self, join_timeout: float) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), join_timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise _common.DeadlineExceededError(
                grpc.StatusCode.DEADLINE_EXCEEDED, None,
                f"no Joined and presence snapshot within {join_timeout} s") from None
        if self.error is not None:
            await self.close()
            raise self.error

    # -- public --

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Waits until the session ends (relay gone, closed); returns True if it did."""
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self, graceful: bool = False, timeout: float = 5.0) -> None:
        """Leaves the channel. With ``graceful``, first waits (up to ``timeout`` s) for the
        handlers in flight; handlers still running are then cancelled, and their requests end
        with PEER_GONE at their senders."""
        if graceful and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        self._closing = True
        self._closed.set()
        for stream in list(self._streams.values()):
            stream._wake()  # a reader or writer waiting for this stream sees the session end
        self._call.cancel()
        # Ends the request iterator too (grpcio leaves its task waiting on it otherwise); what
        # is still queued is not sent any more.
        if self._out.full():
            self._out.get_nowait()
        self._out.put_nowait(_CLOSE)
        self._reader.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(self._reader, *self._tasks, return_exceptions=True)
        self._events.put_nowait(_CLOSE)
        await asyncio.gather(self._dispatcher, return_exceptions=True)

    async def __aenter__(self) -> AsyncResponder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals --

    async def _outgoing(self, join: Any) -> AsyncIterator[Any]:
        yield join
        while True:
            item = await self._out.get()
            if item is _CLOSE:
                return
            yield item

    async def _put(self, message: Any, abandoned: Callable[[], bool]) -> bool:
        """Queues a message towards the gateway; False if the session or the stream ended."""
        while not self._closed.is_set():
            if abandoned():
                return False
            try:
                self._out.put_nowait(message)
                return True
            except asyncio.QueueFull:
                pass
            try:
                await asyncio.wait_for(self._out.put(message), _POLL)
                return True
            except asyncio.TimeoutError:
                continue
        return False

    async def _grant(self, stream_id: int, n: int) -> None:
        if self.windows and n > 0:
            await self._put(_common.stream_window(stream_id, n), lambda: False)

    async def _read_loop(self) -> None:
        try:
            async for message in self._call:
                if self._on_metadata is not None:
                    learn, self._on_metadata = self._on_metadata, None
                    learn(await self._call.initial_metadata())
                kind = message.WhichOneof("kind")
                if kind == "joined":
                    self._joined(message.joined)
                elif kind == "presence":
                    update = _common.update_from_proto(message.presence)
                    self._apply_presence(update)
                    self._events.put_nowait(update)
                    if update.kind == "SNAPSHOT":
                        self._ready.set()
                elif kind == "start":
                    await self._start(message.start)
                elif kind == "chunk":
                    stream = self._streams.get(message.chunk.id)
                    if stream is not None:
                        await stream._feed(bytes(message.chunk.data), message.chunk.last)
                    else:
                        await self._grant(message.chunk.id, len(message.chunk.data))
                elif kind == "window":
                    stream = self._streams.get(message.window.id)
                    if stream is not None:
                        stream._add_credit(message.window.bytes)
                elif kind == "reset":
                    stream = self._streams.pop(message.reset.id, None)
                    if stream is not None:
                        stream._reset(_common.status_name(message.reset.status),
                                      message.reset.message)
        except grpc.RpcError as error:
            if not self._closing:
                self.error = SwitchboardError.from_rpc_error(error)
        except asyncio.CancelledError:
            if not self._closing:
                raise
        finally:
            if self.error is None and not self._closing:
                self.error = SwitchboardError(grpc.StatusCode.UNAVAILABLE, None,
                                              "the gateway ended the Respond session")
            if self.error is not None and self._on_error is not None:
                self._on_error(self.error)
            self._closed.set()
            streams = list(self._streams.values())
            self._streams.clear()
            for stream in streams:
                stream._reset(Status.PEER_GONE, "the Respond session ended")
            self._ready.set()

    async def _start(self, start: Any) -> None:
        if start.broadcast and self._on_broadcast is None:
            # Nobody wants broadcasts: its chunks find no stream and are dropped (and granted).
            await self._grant(start.id, len(start.data))
            return
        stream = AsyncIncoming(self, start)
        self._streams[stream.id] = stream
        run = self._run_broadcast if start.broadcast else self._run_request
        task = asyncio.create_task(run(stream), name=f"switchboard-request-{stream.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finished(self, stream: AsyncIncoming) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
        await stream._handler_returned()

    async def _run_request(self, request: AsyncIncoming) -> None:
        try:
            result = await self._handler(request)
            if not request._answered and request.reset is None:
                await request.finish(result if result is not None else b"")
        except StreamReset:
            pass
        except Exception as error:  # noqa: BLE001 - reported to the sender
            await self._try_fail(request, *_common.handler_failure(error))
        finally:
            await self._finished(request)

    async def _run_broadcast(self, message: AsyncIncoming) -> None:
        assert self._on_broadcast is not None
        try:
            await self._on_broadcast(message)
        except StreamReset:
            pass
        except Exception:  # noqa: BLE001 - a broadcast callback has nobody to report to
            await message.cancel(Status.CANCELLED, "the broadcast callback failed")
        finally:
            await self._finished(message)

    @staticmethod
    async def _try_fail(request: AsyncIncoming, app_code: int, message: str) -> None:
        if request._answered or request.reset is not None:
            return
        try:
            await request.fail(Status.APPLICATION, app_code, message)
        except SwitchboardError:
            pass

    async def _dispatch_loop(self) -> None:
        while True:
            update = await self._events.get()
            if update is _CLOSE:
                return
            if self._on_presence is not None:
                try:
                    await _maybe_await(self._on_presence(update))
                except Exception:  # noqa: BLE001 - a callback's failure must not end the session
                    pass


# ---- Presence without joining --------------------------------------------------------------


class AsyncPeerWatch(_Call):
    """``async for`` it for PresenceUpdate (a SNAPSHOT first, then JOINED/LEFT). ``cancel()``
    stops it; the iteration then ends quietly."""

    def __init__(self, call: Any, on_error: Callable[[SwitchboardError], SwitchboardError]
                 = _unchanged, on_metadata: Callable[[Any], None] | None = None) -> None:
        super().__init__(call, on_error, on_metadata)

    async def _updates(self) -> AsyncIterator[PresenceUpdate]:
        call = await self._opened()
        if call is None:
            return
        try:
            async for response in call:
                await self._learn(call)
                yield _common.update_from_proto(response.update)
        except grpc.RpcError as error:
            if self._cancelled and error.code() == grpc.StatusCode.CANCELLED:
                return
            raise self._on_error(SwitchboardError.from_rpc_error(error)) from None
        except asyncio.CancelledError:
            if _cancelled_locally(self._cancelled):
                return
            raise

    def __aiter__(self) -> AsyncIterator[PresenceUpdate]:
        return self._updates()



# ---- The client ----------------------------------------------------------------------------


class AsyncClient:
    """A connection to a Switchboard gateway for asyncio code. Create it inside a running event
    loop; ``await close()`` (or ``async with``) ends it. Arguments as for ``Client``."""

    def __init__(self, target: str = DEFAULT_TARGET, token: str = "",
                 options: Sequence[tuple[str, Any]] | None = None, tls: bool = False,
                 ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, server_name: str | None = None,
                 locate: bool = True) -> None:
        self.target = target
        self.token = token or ""
        self.locate = locate
        self._channel_options = _common.channel_options(options, server_name)
        self._credentials = _common.channel_credentials(tls, ca_file, cert_file, key_file)
        self.channel = self._open(target)
        self.stub = pb2_grpc.SwitchboardServiceStub(self.channel)
        self._routes = _common.Routes()
        self._lookups: dict[str, asyncio.Task[None]] = {}

    def _open(self, target: str) -> grpc.aio.Channel:
        if self._credentials is not None:
            return grpc.aio.secure_channel(target, self._credentials,
                                           options=self._channel_options)
        return grpc.aio.insecure_channel(target, options=self._channel_options)

    def _known_stub(self, channel: str) -> Any:
        """The stub for ``channel``'s calls if it needs no Locate (now), else None."""
        if not self.locate:
            return self.stub
        try:
            address = self._routes.by_channel[_common.check_channel(channel)]
        except KeyError:
            return None
        if address is None or address == self.target:
            return self.stub
        stub = self._routes.stubs.get(address)
        if stub is None:
            self._routes.channels[address] = self._open(address)
            stub = pb2_grpc.SwitchboardServiceStub(self._routes.channels[address])
            self._routes.stubs[address] = stub
        return stub

    async def _locate(self, channel: str) -> None:
        try:
            answer = await self.stub.Locate(_common.locate_request(channel, self.token),
                                            timeout=_common.LOCATE_TIMEOUT)
            address = _common.located_address(answer)
        except grpc.RpcError as error:
            if not _common.locate_not_answered(error):
                raise SwitchboardError.from_rpc_error(error) from None
            address = None  # no Locate, or not allowed to ask: the relay given
        self._routes.by_channel[channel] = address

    def _locating(self, channel: str) -> asyncio.Task[None]:
        """The Locate of ``channel`` in flight, started if none is (one per channel)."""
        task = self._lookups.get(channel)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._locate(channel))
            self._lookups[channel] = task

            def done(finished: asyncio.Task[None]) -> None:
                if self._lookups.get(channel) is finished:
                    del self._lookups[channel]
                if not finished.cancelled():
                    finished.exception()  # retrieved: its awaiters, if any, raise it

            task.add_done_callback(done)
        return task

    def _stub_now(self, channel: str) -> Any:
        """The stub for a located channel (the relay given, if the answer was dropped since)."""
        stub = self._known_stub(channel)
        return stub if stub is not None else self.stub

    async def _stub(self, channel: str) -> Any:
        """The stub for ``channel``'s calls: locates the channel on first use (with ``locate``)."""
        stub = self._known_stub(channel)
        if stub is not None:
            return stub
        await asyncio.shield(self._locating(channel))
        return self._stub_now(channel)

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

    async def _retried_once(self, channel: str, start: Callable[[Any], Awaitable[_T]]) -> _T:
        """``await start(stub)``, once more after locating again if the relay did not serve
        the channel (only for calls that fail before any of their data is sent)."""
        try:
            return await start(await self._stub(channel))
        except SwitchboardError as error:
            if not (self.locate and _common.channel_moved(error)):
                raise
            self._routes.forget(channel)
        return await start(await self._stub(channel))

    def forget_location(self, channel: str | None = None) -> None:
        """Drops the cached Locate answer of ``channel`` (None: of every channel)."""
        if channel is None:
            self._routes.by_channel.clear()
        else:
            self._routes.forget(channel)

    async def close(self) -> None:
        others = list(self._routes.channels.values())
        self._routes.channels.clear()
        self._routes.stubs.clear()
        for other in others:
            await other.close()
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def send_stream(self, channel: str, data: AsyncBody = b"", target: str | None = None,
                    timeout: float | None = None, metadata: Mapping[str, str] | None = None,
                    idle_timeout_ms: int = 0, sender_peer_id: str | None = None,
                    chunk_size: int = CHUNK_SIZE) -> AsyncSendCall:
        """Opens a Send; ``async for`` the result for the response chunks. ``data``: bytes,
        str, or an (async) iterable of chunks, consumed as gRPC asks for it."""
        opening = _common.send_open(channel, self.token, target, metadata, idle_timeout_ms,
                                    sender_peer_id)
        _common.check_chunk_size(chunk_size)

        async def messages() -> AsyncIterator[Any]:
            yield pb2.SendRequest(open=opening)
            async for chunk in _common.asplit(data, chunk_size):
                yield _common.send_request(chunk)

        stub = self._known_stub(channel)
        if stub is not None:
            return AsyncSendCall(stub.Send(messages(), timeout=timeout), self._located(channel),
                                 self._learning(channel))
        call = AsyncSendCall(None, self._located(channel), self._learning(channel))
        call._open_when_located(self._locating(channel), lambda: self._stub_now(channel).Send(
            messages(), timeout=timeout))
        return call

    async def send(self, channel: str, data: AsyncBody = b"", target: str | None = None,
                   timeout: float | None = None, metadata: Mapping[str, str] | None = None,
                   idle_timeout_ms: int = 0, sender_peer_id: str | None = None) -> bytes:
        """Sends a request and returns the whole response; raises SwitchboardError."""
        return await self.send_stream(channel, data, target=target, timeout=timeout,
                                      metadata=metadata, idle_timeout_ms=idle_timeout_ms,
                                      sender_peer_id=sender_peer_id).read()

    async def broadcast(self, channel: str, data: AsyncBody = b"",
                        metadata: Mapping[str, str] | None = None,
                        sender_peer_id: str | None = None, idle_timeout_ms: int = 0,
                        timeout: float | None = None,
                        chunk_size: int = CHUNK_SIZE) -> BroadcastSummary:
        """Streams ``data`` to every other peer of ``channel``; returns (delivered, dropped)."""
        opening = _common.broadcast_open(channel, self.token, metadata, idle_timeout_ms,
                                         sender_peer_id)
        _common.check_chunk_size(chunk_size)

        async def messages() -> AsyncIterator[Any]:
            yield pb2.BroadcastRequest(open=opening)
            async for chunk in _common.asplit(data, chunk_size):
                yield _common.broadcast_request(chunk)

        call = (await self._stub(channel)).Broadcast(messages(), timeout=timeout)
        summary = None
        try:
            async for message in call:
                if message.HasField("summary"):
                    summary = message.summary
        except grpc.RpcError as error:
            raise self._routes.note(channel, SwitchboardError.from_rpc_error(error)) from None
        self._routes.learn(channel, await call.initial_metadata())
        return _common.summary_of(summary)

    async def respond(self, channel: str, handler: AsyncHandler, peer_id: str | None = None,
                      on_presence: PresenceCallback | None = None,
                      on_broadcast: BroadcastCallback | None = None,
                      join_timeout: float = 10.0, stream_windows: bool = True) -> AsyncResponder:
        """Joins ``channel`` as a peer serving requests; returns the session once joined.

        ``await handler(request)`` runs in its own task per request (an AsyncIncoming): it
        reads the body, writes the response, and returns (bytes or None: the response then
        ends OK), raises ApplicationError(code, message), or calls ``fail()``.
        ``on_presence(update)`` (a function or a coroutine function) sees the presence events
        in order; ``await on_broadcast(message)`` runs in a task per broadcast."""
        on_error = self._located(channel)

        async def join(stub: Any) -> AsyncResponder:
            session = AsyncResponder(stub, channel, handler, peer_id, self.token, on_presence,
                                     on_broadcast, None, stream_windows, on_error,
                                     self._learning(channel))
            await session._joined_within(join_timeout)
            return session

        return await self._retried_once(channel, join)

    async def list_peers(self, channel: str, timeout: float | None = 10.0) -> Peers:
        """The members of ``channel`` now, without joining it."""
        request = pb2.ListPeersRequest(channel=_common.check_channel(channel), token=self.token)

        async def ask(stub: Any) -> Any:
            call = stub.ListPeers(request, timeout=timeout)
            try:
                answer = await call
            except grpc.RpcError as error:
                raise SwitchboardError.from_rpc_error(error) from None
            self._routes.learn(channel, await call.initial_metadata())
            return answer

        answer = await self._retried_once(channel, ask)
        return Peers(list(answer.peers), int(answer.version))

    def watch_peers(self, channel: str, timeout: float | None = None) -> AsyncPeerWatch:
        """The members of ``channel`` (a SNAPSHOT), then every change, without joining it."""
        request = pb2.WatchPeersRequest(channel=_common.check_channel(channel), token=self.token)
        stub = self._known_stub(channel)
        if stub is not None:
            return AsyncPeerWatch(stub.WatchPeers(request, timeout=timeout),
                                  self._located(channel), self._learning(channel))
        watch = AsyncPeerWatch(None, self._located(channel), self._learning(channel))
        watch._open_when_located(self._locating(channel), lambda: self._stub_now(channel)
                                 .WatchPeers(request, timeout=timeout))
        return watch

    async def health(self, service: str = "", timeout: float = 5.0) -> str:
        """The gateway's grpc.health.v1 status name for ``service`` (e.g. 'SERVING')."""
        health_pb2, health_pb2_grpc = load_health()
        if health_pb2 is None:
            raise RuntimeError("grpc-proto's health.proto is not installed")
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=service),
                                      timeout=timeout)
        except grpc.RpcError as error:
            raise SwitchboardError.from_rpc_error(error) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
