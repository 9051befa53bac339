"""Switchboard gRPC client: send, broadcast, respond and watch presence through the gateway.

Blocking (threads)::

    from switchboard_client import Client
    with Client("127.0.0.1:7401") as client:
        print(client.send(channel, b"hello"))

asyncio::

    from switchboard_client.aio import AsyncClient
    async with AsyncClient("127.0.0.1:7401") as client:
        print(await client.send(channel, b"hello"))
"""

from ._common import (
    CHUNK_SIZE,
    DEFAULT_TARGET,
    AccessDeniedError,
    ApplicationError,
    BroadcastSummary,
    DeadlineExceededError,
    NoRespondersError,
    PeerGoneError,
    Peers,
    PresenceUpdate,
    RemoteApplicationError,
    ResourceExhaustedError,
    Status,
    StreamCancelledError,
    StreamReset,
    SwitchboardError,
)
from ._pb import pb2, pb2_grpc
from .client import Client, Incoming, PeerWatch, Responder, SendCall

__all__ = [
    "CHUNK_SIZE", "DEFAULT_TARGET", "AccessDeniedError", "ApplicationError", "BroadcastSummary",
    "Client", "DeadlineExceededError", "Incoming", "NoRespondersError", "PeerGoneError",
    "PeerWatch", "Peers", "PresenceUpdate", "RemoteApplicationError", "ResourceExhaustedError",
    "Responder", "SendCall", "Status", "StreamCancelledError", "StreamReset", "SwitchboardError",
    "pb2", "pb2_grpc",
]
