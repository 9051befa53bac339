"""Switchboard gRPC client: send, broadcast, respond and watch presence through the gateway.

    from switchboard_client import Client
    with Client("127.0.0.1:7401") as client:
        print(client.send(channel, b"hello"))
"""

from .client import (
    CHUNK_SIZE,
    DEFAULT_TARGET,
    ApplicationError,
    BroadcastSummary,
    Client,
    Incoming,
    Peers,
    PeerWatch,
    PresenceUpdate,
    Responder,
    SendCall,
    StreamReset,
    SwitchboardError,
    pb2,
    pb2_grpc,
)

__all__ = [
    "CHUNK_SIZE", "DEFAULT_TARGET", "ApplicationError", "BroadcastSummary", "Client", "Incoming",
    "Peers", "PeerWatch", "PresenceUpdate", "Responder", "SendCall", "StreamReset",
    "SwitchboardError", "pb2", "pb2_grpc",
]
