"""What the blocking and the asyncio APIs share: statuses and errors, message builders, the
mapping of gateway messages onto Python values, argument checks and channel set-up."""

from __future__ import annotations

import collections.abc
import enum
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, NamedTuple, Union

import grpc

from ._pb import pb2

DEFAULT_TARGET = "127.0.0.1:7401"
#: Body bytes per gRPC message we send (the native relay's default frame payload).
CHUNK_SIZE = 64 * 1024
#: Response messages queued towards the gateway per Respond session before writers wait.
OUTGOING_QUEUE = 64
#: Body bytes buffered per incoming request before the session's reader waits for the handler
#: (only with a relay that has no stream windows: otherwise the relay's window bounds it).
INCOMING_BUFFER = 4 * 1024 * 1024
#: Largest gRPC message either way (a chunk is far smaller; metadata and headers need room).
MAX_MESSAGE = 64 * 1024 * 1024

#: A body: bytes-like, str (sent as UTF-8), or an iterable of those.
Body = Union[bytes, bytearray, memoryview, str, Iterable[Union[bytes, bytearray, memoryview, str]]]
#: A body for the asyncio API: a Body or an async iterable of chunks.
AsyncBody = Union[Body, AsyncIterable[Union[bytes, bytearray, memoryview, str]]]


class Status(enum.StrEnum):
    """A Switchboard status, named as the native protocol and the ``switchboard-status``
    trailer spell it. Members compare equal to their names (``Status.OK == "OK"``)."""

    OK = "OK"
    NO_RESPONDERS = "NO_RESPONDERS"
    PEER_GONE = "PEER_GONE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    IDLE_TIMEOUT = "IDLE_TIMEOUT"
    CANCELLED = "CANCELLED"
    REFUSED = "REFUSED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    INTERNAL = "INTERNAL"
    APPLICATION = "APPLICATION"


class PresenceUpdate(NamedTuple):
    """A presence event: ``kind`` is 'SNAPSHOT' (``peers`` = the whole membership), 'JOINED'
    or 'LEFT' (``peers`` = the one peer); ``version`` is the membership version after it."""

    kind: str
    peers: list[str]
    version: int


class Peers(NamedTuple):
    """A channel's members and its membership version."""

    peers: list[str]
    version: int


class BroadcastSummary(NamedTuple):
    """How a broadcast was delivered."""

    delivered: int
    dropped: int


# ---- Errors --------------------------------------------------------------------------------


def _as_status(name: str | None) -> Status | str | None:
    if name is None:
        return None
    try:
        return Status(name)
    except ValueError:
        return name  # a status this client does not know yet: kept as the relay spelled it


class SwitchboardError(Exception):
    """An RPC or stream that did not end with OK.

    ``code``: the ``grpc.StatusCode`` (None for a stream reset seen by a responder);
    ``status``: the Switchboard ``Status`` from the ``switchboard-status`` trailer (None if the
    call failed before the gateway added one, e.g. a deadline enforced by the client itself);
    ``app_code``: the responder's application code for ``APPLICATION``; ``message``: details.
    ``SwitchboardError.from_rpc_error`` picks the subclass that names the status.
    """

    def __init__(self, code: grpc.StatusCode | None, status: Status | str | None,
                 message: str = "", app_code: int | None = None) -> None:
        self.code = code
        self.status: Status | str | None = _as_status(status)
        self.message = message or ""
        self.app_code = app_code
        label = str(self.status) if self.status else (code.name if code is not None else "ERROR")
        text = f"{label}: {self.message}" if self.message else label
        if app_code is not None:
            text += f" (app code {app_code})"
        super().__init__(text)

    @classmethod
    def from_rpc_error(cls, error: BaseException) -> SwitchboardError:
        """The typed error of a failed gRPC call (blocking or asyncio)."""
        code_of = getattr(error, "code", None)
        code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
        details_of = getattr(error, "details", None)
        details = (details_of() if callable(details_of) else None) or ""
        if not details and not callable(details_of):
            details = str(error)
        trailers_of = getattr(error, "trailing_metadata", None)
        try:
            trailers = trailers_of() if callable(trailers_of) else None
        except Exception:  # noqa: BLE001 - some error objects carry no call
            trailers = None
        status, app_code = trailer_status(trailers)
        return error_class(code, status)(code, status, details, app_code)


class NoRespondersError(SwitchboardError):
    """NO_RESPONDERS: no peer could take the request."""


class PeerGoneError(SwitchboardError):
    """PEER_GONE: the counterpart disconnected."""


class DeadlineExceededError(SwitchboardError):
    """DEADLINE_EXCEEDED or IDLE_TIMEOUT, or a deadline enforced by the gRPC client."""


class StreamCancelledError(SwitchboardError):
    """CANCELLED: a party cancelled the stream (also a call cancelled locally)."""


class RemoteApplicationError(SwitchboardError):
    """APPLICATION: the responder failed the request; ``app_code`` and ``message`` are its."""


class AccessDeniedError(SwitchboardError):
    """UNAUTHENTICATED or PERMISSION_DENIED."""


class ResourceExhaustedError(SwitchboardError):
    """RESOURCE_EXHAUSTED or SLOW_CONSUMER: a limit of the relay was reached."""


class StreamReset(SwitchboardError):
    """The incoming request or broadcast was aborted (cancelled, deadline, sender gone, ...)."""

    def __init__(self, status: Status | str | None, message: str = "") -> None:
        super().__init__(None, status, message)


class ApplicationError(Exception):
    """Raise from a request handler to end the response with APPLICATION, ``code`` and
    ``message``, which reach the sender unchanged."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_ERROR_BY_STATUS: dict[str, type[SwitchboardError]] = {
    Status.NO_RESPONDERS: NoRespondersError,
    Status.PEER_GONE: PeerGoneError,
    Status.DEADLINE_EXCEEDED: DeadlineExceededError,
    Status.IDLE_TIMEOUT: DeadlineExceededError,
    Status.CANCELLED: StreamCancelledError,
    Status.APPLICATION: RemoteApplicationError,
    Status.UNAUTHENTICATED: AccessDeniedError,
    Status.PERMISSION_DENIED: AccessDeniedError,
    Status.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    Status.SLOW_CONSUMER: ResourceExhaustedError,
}
# Without a trailer (the gRPC library ended the call itself): what its code means.
_ERROR_BY_CODE: dict[grpc.StatusCode, type[SwitchboardError]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: StreamCancelledError,
}


def error_class(code: grpc.StatusCode | None, status: str | None) -> type[SwitchboardError]:
    """The SwitchboardError subclass for a Switchboard status, else for a bare gRPC code."""
    if status is not None:
        return _ERROR_BY_STATUS.get(status, SwitchboardError)
    if code is not None:
        return _ERROR_BY_CODE.get(code, SwitchboardError)
    return SwitchboardError


def trailer_status(trailers: Iterable[tuple[str, Any]] | None) -> tuple[str | None, int | None]:
    """The ``switchboard-status`` and ``switchboard-app-code`` trailers of a call."""
    status: str | None = None
    app_code: int | None = None
    for key, value in trailers or ():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if key == "switchboard-status":
            status = value
        elif key == "switchboard-app-code":
            try:
                app_code = int(value)
            except ValueError:
                app_code = None
    return status, app_code


# ---- Statuses and presence -----------------------------------------------------------------


def status_value(status: Status | str | int) -> int:
    """The protobuf value of a status given by name ("APPLICATION", or "STATUS_APPLICATION") or
    by its native number (13); the protobuf enum is the native number plus one."""
    if isinstance(status, str):
        name = status if status.startswith("STATUS_") else "STATUS_" + status
        try:
            return int(pb2.Status.Value(name))
        except ValueError:
            raise ValueError(f"unknown Switchboard status {status!r}") from None
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"a status is a name or a native number, not {status!r}")
    return status + 1


def status_name(value: int) -> Status | str:
    """The Switchboard name of a protobuf status (e.g. Status.NO_RESPONDERS)."""
    try:
        name = str(pb2.Status.Name(value)).removeprefix("STATUS_")
    except ValueError:
        return str(value)
    return _as_status(name) or name


def update_from_proto(update: Any) -> PresenceUpdate:
    return PresenceUpdate(str(pb2.PresenceUpdate.Kind.Name(update.kind)).removeprefix("KIND_"),
                          list(update.peers), int(update.version))


class PresenceView:
    """A Respond session's view of its channel: this peer, its windows, the other peers."""

    def __init__(self) -> None:
        self.peer_id: str | None = None
        self.windows = False
        self.response_window = 0
        self.incoming_window = 0
        self.peers: set[str] = set()
        self.version = 0

    def _joined(self, joined: Any) -> None:
        self.peer_id = str(joined.peer_id)
        # A relay without stream windows announces none: then it has none.
        self.response_window = int(joined.response_window)
        self.incoming_window = int(joined.incoming_window)
        self.windows = self.response_window > 0

    def _apply_presence(self, update: PresenceUpdate) -> None:
        if update.kind == "SNAPSHOT":
            self.peers = set(update.peers) - {self.peer_id or ""}
        elif update.kind == "JOINED":
            self.peers = self.peers | set(update.peers)
        elif update.kind == "LEFT":
            self.peers = self.peers - set(update.peers)
        self.version = update.version


# ---- Arguments and messages ----------------------------------------------------------------


def check_channel(channel: str) -> str:
    # Only the type: whether it is a valid id is the gateway's to say (INVALID_ARGUMENT).
    if not isinstance(channel, str):
        raise TypeError(f"a channel is an id string, not {channel!r}")
    return channel


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, collections.abc.Mapping):
        raise TypeError("metadata is a mapping of str to str")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata is a mapping of str to str, not {key!r}: {value!r}")
    return dict(metadata)


def check_chunk_size(chunk_size: int) -> int:
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    return chunk_size


def _pieces(piece: Any, chunk_size: int) -> Iterator[bytes]:
    if isinstance(piece, str):
        piece = piece.encode()
    if not isinstance(piece, (bytes, bytearray, memoryview)):
        raise TypeError(f"a body chunk is bytes or str, not {type(piece).__name__}")
    if len(piece) <= chunk_size:
        if len(piece) > 0:
            yield bytes(piece)
        return
    view = memoryview(piece)
    for offset in range(0, len(view), chunk_size):
        yield bytes(view[offset:offset + chunk_size])


def split(data: Body | None, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yields ``data`` (bytes-like, str, or an iterable of those) as chunks <= chunk_size."""
    if data is None:
        return
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        yield from _pieces(data, chunk_size)
        return
    for piece in data:
        yield from _pieces(piece, chunk_size)


async def asplit(data: AsyncBody | None, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
    """``split`` for the asyncio API: also takes an async iterable of chunks."""
    if isinstance(data, collections.abc.AsyncIterable):
        async for piece in data:
            for chunk in _pieces(piece, chunk_size):
                yield chunk
        return
    for chunk in split(data, chunk_size):
        yield chunk


def send_open(channel: str, token: str, target: str | None, metadata: Mapping[str, str] | None,
              idle_timeout_ms: int, sender_peer_id: str | None) -> Any:
    return pb2.SendOpen(channel=check_channel(channel), target=target or "",
                        idle_timeout_ms=idle_timeout_ms, metadata=check_metadata(metadata),
                        sender_peer_id=sender_peer_id or "", token=token)


def broadcast_open(channel: str, token: str, metadata: Mapping[str, str] | None,
                   idle_timeout_ms: int, sender_peer_id: str | None) -> Any:
    return pb2.BroadcastOpen(channel=check_channel(channel), metadata=check_metadata(metadata),
                             sender_peer_id=sender_peer_id or "", token=token,
                             idle_timeout_ms=idle_timeout_ms)


def send_request(chunk: bytes) -> Any:
    return pb2.SendRequest(chunk=pb2.Chunk(data=chunk))


def broadcast_request(chunk: bytes) -> Any:
    return pb2.BroadcastRequest(chunk=pb2.Chunk(data=chunk))


def join_request(channel: str, peer_id: str | None, token: str, stream_windows: bool) -> Any:
    return pb2.RespondRequest(join=pb2.Join(channel=check_channel(channel), peer_id=peer_id or "",
                                            token=token or "", stream_windows=stream_windows))


def response_chunk(request_id: int, data: bytes, last: bool = False) -> Any:
    return pb2.RespondRequest(chunk=pb2.ResponseChunk(request_id=request_id, data=data, last=last))


def response_end(request_id: int, status: Status | str | int, app_code: int, message: str) -> Any:
    return pb2.RespondRequest(end=pb2.ResponseEnd(request_id=request_id,
                                                  status=status_value(status),
                                                  app_code=app_code, message=message))


def stream_cancel(stream_id: int, status: Status | str | int, message: str) -> Any:
    return pb2.RespondRequest(cancel=pb2.StreamCancel(id=stream_id, status=status_value(status),
                                                      message=message))


def stream_window(stream_id: int, n: int) -> Any:
    return pb2.RespondRequest(window=pb2.StreamWindow(id=stream_id, bytes=n))


def send_response_data(message: Any) -> bytes | None:
    """The response bytes a SendResponse carries, or None."""
    if message.WhichOneof("kind") == "chunk" and message.chunk.data:
        return bytes(message.chunk.data)
    return None


def summary_of(summary: Any) -> BroadcastSummary:
    if summary is None:
        raise SwitchboardError(grpc.StatusCode.INTERNAL, None,
                               "the broadcast ended OK without a summary")
    return BroadcastSummary(int(summary.delivered), int(summary.dropped))


def handler_failure(error: Exception) -> tuple[int, str]:
    """The APPLICATION code and message a handler's exception ends its response with."""
    if isinstance(error, ApplicationError):
        return error.code, error.message[:512]
    return 1, f"handler raised {type(error).__name__}: {error}"[:512]


def write_error(is_broadcast: bool, answered: bool) -> SwitchboardError | None:
    """Why an incoming stream takes no (more) response bytes, or None if it does."""
    if is_broadcast:
        return SwitchboardError(None, Status.PROTOCOL_ERROR, "a broadcast takes no response")
    if answered:
        return SwitchboardError(None, None, "the response has already ended")
    return None


def session_gone() -> SwitchboardError:
    return PeerGoneError(None, Status.PEER_GONE, "the Respond session has ended")


# ---- Channels ------------------------------------------------------------------------------


def _read_file(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def channel_options(options: Iterable[tuple[str, Any]] | None,
                    server_name: str | None) -> list[tuple[str, Any]]:
    result: list[tuple[str, Any]] = [("grpc.max_receive_message_length", MAX_MESSAGE),
                                     ("grpc.max_send_message_length", MAX_MESSAGE)]
    if server_name:
        result.append(("grpc.ssl_target_name_override", server_name))
    return result + list(options or [])


def channel_credentials(tls: bool, ca_file: str | None, cert_file: str | None,
                        key_file: str | None) -> grpc.ChannelCredentials | None:
    """TLS credentials (``tls``, implied by ``ca_file`` or ``cert_file``), or None."""
    if not (tls or ca_file or cert_file):
        return None
    return grpc.ssl_channel_credentials(root_certificates=_read_file(ca_file),
                                        private_key=_read_file(key_file),
                                        certificate_chain=_read_file(cert_file))


# ---- Clusters: which relay serves a channel ------------------------------------------------

#: How long a Locate may take before the call that needed it fails.
LOCATE_TIMEOUT = 10.0
#: The beginnings of the UNAVAILABLE messages of a relay that does not serve the channel (it is
#: served by another relay, or it is moving): the cached answer is then stale.
_MOVED_MESSAGES = ("channel is served by relay", "channel unavailable on this relay")


def locate_request(channel: str, token: str) -> Any:
    return pb2.LocateRequest(channel=check_channel(channel), token=token)


def located_address(answer: Any) -> str | None:
    """The gRPC address a Locate answer sends the channel's calls to; None for "here"."""
    if answer.here or not answer.grpc_address:
        return None
    return str(answer.grpc_address)


#: Locate failures after which the client uses the relay it was given: a relay without Locate
#: (older) serves every channel; a token without the presence permission may not ask, but may
#: still be enough for the call itself (which fails clearly if that relay does not serve it).
_LOCATE_NOT_ANSWERED = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.UNAUTHENTICATED)


def locate_not_answered(error: BaseException) -> bool:
    """True when a failed Locate means: use the relay the client was given."""
    code_of = getattr(error, "code", None)
    return callable(code_of) and code_of() in _LOCATE_NOT_ANSWERED


SERVED_BY = "switchboard-served-by"


def served_by(metadata: Any) -> str | None:
    """The gRPC address of the relay serving the channel, as a relay that carried the call
    names it in the call's initial metadata; None for a call not carried."""
    for key, value in metadata or ():
        if key == SERVED_BY and isinstance(value, str) and value:
            return value
    return None


def channel_moved(error: SwitchboardError) -> bool:
    """True when a call failed because the relay asked does not serve its channel (now)."""
    return (error.code == grpc.StatusCode.UNAVAILABLE
            and error.message.startswith(_MOVED_MESSAGES))


class Routes:
    """Where each channel's calls go: the located gRPC address per channel (None: the relay
    the client was created for) and one gRPC channel per other address. Plain dict operations
    only, so the blocking client may share it between threads (it adds a lock for opening)."""

    def __init__(self) -> None:
        self.by_channel: dict[str, str | None] = {}
        self.channels: dict[str, Any] = {}  # address -> grpc channel
        self.stubs: dict[str, Any] = {}  # address -> SwitchboardServiceStub

    def known(self, channel: str) -> bool:
        return channel in self.by_channel

    def forget(self, channel: str) -> None:
        self.by_channel.pop(channel, None)

    def note(self, channel: str, error: SwitchboardError) -> SwitchboardError:
        """Forgets ``channel``'s answer if ``error`` says it moved; returns ``error``."""
        if channel_moved(error):
            self.forget(channel)
        return error

    def learn(self, channel: str, metadata: Any) -> None:
        """Sends ``channel``'s next calls straight to the relay a carried call named (its
        initial ``metadata``); only for a located channel (not with ``locate=False``)."""
        address = served_by(metadata)
        if address is not None and channel in self.by_channel:
            self.by_channel[channel] = address
