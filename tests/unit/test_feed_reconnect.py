"""The live feed never sends a message that came over a newer NATS connection than the one it subscribed on:
messages the old connection lost (written to a server that died, or in flight to us) lie below it, and once its
id is sent, the client's resume by Last-Event-ID would skip them (seen once in
tests/test_faults_commands.py's store-loss test: one event of three in one transaction never reached the client)."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from types import SimpleNamespace

import msgspec

from services.gateway.streams import feed as feed_module
from services.gateway.streams.feed import EventFeed, Scope
from services.gateway.streams.messages import Connected, Reconnect, StreamEvent


class _Conn:
    async def fetch(self, *_args):
        return []  # nothing to replay: every event arrives live


class _Store:
    @asynccontextmanager
    async def tenant_transaction(self, _tenant):
        yield _Conn()


class _Probe:
    async def round_trip(self, _timeout):
        return None


def _msg(run_id: uuid.UUID, workflow_id: uuid.UUID, event_type: str, xid: int, position: int):
    data = {"run_id": str(run_id), "workflow_id": str(workflow_id)}
    return SimpleNamespace(subject=f"weft.evt.t1.run.{run_id}.{event_type}", data=msgspec.json.encode(data),
                           headers={"Weft-Xid": str(xid), "Weft-Position": str(position),
                                    "Weft-Stream": f"run-{run_id}", "Weft-Type": event_type})


async def test_a_message_over_a_newer_connection_ends_the_feed_instead_of_being_sent(monkeypatch):
    nc = SimpleNamespace(stats={"reconnects": 3}, is_closed=False)
    delivered: list = []

    async def subscribe_owned(_nc, _subject, cb):
        delivered.append(cb)
        return SimpleNamespace(unsubscribe=lambda: asyncio.sleep(0))

    monkeypatch.setattr(feed_module, "subscribe_owned", subscribe_owned)
    workflow_id, run_id = uuid.uuid4(), uuid.uuid4()
    feed = EventFeed(SimpleNamespace(nc=nc, store=_Store(), probe=_Probe()), Scope("t1", workflow_id), 0)
    items = feed.__aiter__()
    assert isinstance(await anext(items), Connected)
    on_msg = delivered[0]

    await on_msg(_msg(run_id, workflow_id, "RunCreated", 10, 100))
    first = await asyncio.wait_for(anext(items), 5)
    assert isinstance(first, StreamEvent) and first.position == 100

    waiting = asyncio.ensure_future(anext(items))  # the feed now waits for the next message
    await asyncio.sleep(0.05)
    nc.stats["reconnects"] += 1  # the connection broke and came back (position 101 was lost with it) ...
    await on_msg(_msg(run_id, workflow_id, "RunStarted", 10, 102))  # ... and 102 came over the new one
    second = await asyncio.wait_for(waiting, 5)
    assert isinstance(second, Reconnect), second  # not 102: the client resumes from 100 and replays 101
    await items.aclose()
