"""Round trips through nats-server on a shared connection, which no caller can break by going away.

Why not `nc.flush()`: nats-py queues a PONG future per flush on the connection. A caller cancelled while it
waits (an HTTP client that went away, a timeout) leaves its future cancelled but queued, and the next PONG
raises InvalidStateError inside the connection's read loop, which then stops reading for every user of the
connection, while `is_connected` stays true (issue 15). A request task must never own work on the shared
connection.

Here a round trip is a message to a subject only this process subscribes to. nats-server handles one
connection's protocol in order, so when our message comes back, everything written before it (a SUB, a PUB)
has been processed by the server. A cancelled or timed-out caller only drops its own entry in a dict that we
own; the connection never sees it. The same round trip tells readiness whether the connection can still
publish and receive.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import nats


class ProbeTimeout(Exception):
    """nats-server did not echo the probe in time: the connection cannot publish or cannot read."""


class NatsProbe:
    def __init__(self, nc: nats.NATS) -> None:
        self.nc = nc
        self._prefix = f"_WEFT.probe.{uuid.uuid4().hex}"
        self._waiting: dict[str, asyncio.Future] = {}
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_echo)

    async def _on_echo(self, msg: Any) -> None:
        future = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if future is not None and not future.done():
            future.set_result(None)

    async def round_trip(self, timeout: float) -> None:
        """Return once nats-server has processed everything this connection wrote before the call; raise
        ProbeTimeout after `timeout` seconds. Cancelling the caller is always safe."""
        token = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self.nc.publish(f"{self._prefix}.{token}", b"")
            await asyncio.wait_for(future, timeout)
        except (asyncio.TimeoutError, nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError):
            raise ProbeTimeout(f"nats-server did not answer within {timeout}s") from None
        finally:
            self._waiting.pop(token, None)

    async def healthy(self, timeout: float = 1.0) -> bool:
        if not self.nc.is_connected:
            return False
        try:
            await self.round_trip(timeout)
        except ProbeTimeout:
            return False
        return True


async def subscribe_owned(nc: nats.NATS, subject: str, cb: Callable[[Any], Awaitable[None]]) -> Any:
    """nc.subscribe from a task that may be cancelled: if the caller goes away while the subscription is
    being made, it is removed once made, so no subscription outlives its caller."""
    task = asyncio.ensure_future(nc.subscribe(subject, cb=cb))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_unsubscribe_orphan)
        raise


_orphans: set[asyncio.Future] = set()  # strong references to the removals in flight


def _unsubscribe_orphan(task: asyncio.Future) -> None:
    if task.cancelled() or task.exception() is not None:
        return

    async def drop() -> None:
        try:
            await task.result().unsubscribe()
        except Exception:  # noqa: BLE001 - a closed connection has no subscription left to remove
            pass

    removal = asyncio.ensure_future(drop())
    _orphans.add(removal)
    removal.add_done_callback(_orphans.discard)
