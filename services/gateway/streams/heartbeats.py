"""Heartbeats interleaved with a stream's items, on a fixed schedule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from services.gateway.streams.messages import HEARTBEAT


async def with_heartbeats(source: AsyncIterator[Any], interval: float) -> AsyncIterator[Any]:
    """Items of `source`, plus HEARTBEAT every `interval` seconds (on a fixed schedule, whether or not
    items flow). The pending item is awaited in a task that is never cancelled by a heartbeat, so the
    source is only interrupted when this generator is closed (then it is closed too)."""
    loop = asyncio.get_running_loop()
    iterator = source.__aiter__()
    pending: asyncio.Future | None = None
    deadline = loop.time() + interval
    try:
        while True:
            now = loop.time()
            if now >= deadline:
                deadline = max(deadline + interval, now + interval / 2)
                yield HEARTBEAT
                continue
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=deadline - now)
            if not done:
                continue
            task, pending = pending, None
            try:
                item = task.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
