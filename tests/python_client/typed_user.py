"""A user's code, type checked (never run) against the installed package: the public API's
hints must be visible (py.typed) and complete enough for mypy --strict."""

from __future__ import annotations

from switchboard_client import (BroadcastSummary, Client, Incoming, Peers, PresenceUpdate,
                                Status, SwitchboardError)
from switchboard_client.aio import AsyncClient, AsyncIncoming


def handle(request: Incoming) -> bytes:
    return request.read().upper()


async def handle_async(request: AsyncIncoming) -> bytes:
    return (await request.read()).upper()


def blocking(channel: str) -> tuple[bytes, BroadcastSummary, Peers]:
    with Client("127.0.0.1:7401") as client:
        with client.respond(channel, handle) as session:
            peer: str | None = session.peer_id
            assert peer is not None
        answer: bytes = client.send(channel, b"x", timeout=1.0)
        summary = client.broadcast(channel, b"y")
        update: PresenceUpdate
        for update in client.watch_peers(channel):
            break
        return answer, summary, client.list_peers(channel)


async def asynchronous(channel: str) -> int:
    async with AsyncClient("127.0.0.1:7401") as client:
        async with await client.respond(channel, handle_async) as session:
            windows: bool = session.windows
        try:
            await client.send(channel, b"x")
        except SwitchboardError as error:
            status: Status | str | None = error.status
            return 0 if status == Status.NO_RESPONDERS or windows else 1
        async for chunk in client.send_stream(channel, [b"a", b"b"]):
            size: int = len(chunk)
            return size
        summary: BroadcastSummary = await client.broadcast(channel, "text")
        async for update in client.watch_peers(channel):
            return update.version + summary.delivered
        return 0
