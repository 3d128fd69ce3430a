"""The feed of one stream: replay from Postgres, then live messages from core NATS, each event once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from libs.events.order import cursor_at
from libs.runtime.probe import ProbeTimeout, subscribe_owned
from services.gateway.streams.messages import Connected, Reconnect, StreamEvent, run_message

log = structlog.get_logger()

MAX_BUFFER = 10_000  # live messages held for one stream before it is dropped (the client resumes by id)
REPLAY_PAGE = 500
NATS_CHECK_S = 1.0  # how often an idle stream checks that its NATS connection has not reconnected
ROUND_TRIP_S = 5.0  # how long a new stream waits for nats-server to confirm its subscription
_OTHER_RUNS_CAP = 100_000


@dataclass(frozen=True)
class Scope:
    tenant_id: str
    workflow_id: uuid.UUID
    run_id: uuid.UUID | None = None  # None: every run of the workflow

    @property
    def subject(self) -> str:
        # Tenant ids match bus.TENANT_RE (no '.', '*', '>'), so they are safe subject tokens.
        if self.run_id is not None:
            return f"weft.evt.{self.tenant_id}.run.{self.run_id}.*"
        return f"weft.evt.{self.tenant_id}.run.>"

    def hello(self) -> dict[str, Any]:
        body = {"type": "connected", "workflowId": str(self.workflow_id)}
        if self.run_id is not None:
            body["runId"] = str(self.run_id)
        return body


# A workflow's runs are many streams: their events follow the global order (docs/decisions/0032), (xid, position)
# pairs below pg_snapshot_xmin, so an event that commits late is never behind the cursor.
_REPLAY_WORKFLOW = (
    "SELECT e.global_position, e.xid, e.type, e.data::text AS data FROM events e"
    " JOIN runs r ON e.stream_id = 'run-' || r.id::text"
    " WHERE r.tenant_id = $1 AND r.workflow_id = $2 AND e.tenant_id = $1"
    " AND (e.xid, e.global_position) > ($3::xid8, $4) AND e.xid < pg_snapshot_xmin(pg_current_snapshot())"
    " ORDER BY e.xid, e.global_position LIMIT $5"
)
# One run is one stream, and within a stream position order is commit order, lock or no lock: version N+1 is
# inserted only once version N is committed and visible (the expected-version check, then UNIQUE(stream_id,
# version)), and its position is drawn then, above N's. So a position cursor never skips a late committer here.
_REPLAY_RUN = (
    "SELECT global_position, '0'::xid8 AS xid, type, data::text AS data FROM events"
    " WHERE tenant_id = $1 AND stream_id = $2 AND global_position > $3"
    " ORDER BY global_position LIMIT $4"
)
class EventFeed:
    """Connected, then the scope's run events after `after` (replay, then live), in global order, each once.

    The handoff (why there is no gap and no duplicate):
    1. Subscribe to the core-NATS subject first and make a round trip through nats-server on the same
       connection (libs/runtime/probe.py, never nc.flush(): a client that goes away cancels this task, and a
       cancelled flush breaks the shared connection), so the server has registered our interest; from here
       on every message the relay publishes reaches our buffer (bounded, see MAX_BUFFER).
    2. Replay from Postgres every event of the scope after the cursor, in pages, until a short page. The cursor
       is the global order's key, (xid, position) (a run's feed: the position alone, see _REPLAY_RUN); a client
       resumes from an event id (its position), whose xid is looked up. A replay page reads only below
       pg_snapshot_xmin: every event it does not see either sorts after every event it saw (a later page or
       the live buffer gets it) or belongs to a transaction that was still running at the last page's
       snapshot, or committed after it.
    3. The relay publishes an event only after its commit, in (xid, position) order, and only once every
       transaction below its xid has ended (it reads below pg_snapshot_xmin too; xmin never goes back). An
       event the replay did not see is therefore published after the replay's snapshot, so after step 1, and
       it is in the buffer. Events the replay already sent may also be in the buffer (committed earlier but
       relayed late, or republished after a relay failover): they are dropped by key (<= last sent; the relay
       sends Weft-Xid with Weft-Position). Live keys only increase, so one high-water mark is all the dedup
       state needed. Gaps between positions are normal (other streams, other tenants, rolled-back
       identities) and are never treated as loss.
    What could still lose a live message is core NATS itself (at-most-once): if the gateway's connection
    reconnects, or our buffer overflows, the feed ends with Reconnect and the client resumes by id; the
    replay of the next connection fills whatever was missed. A message that arrives over a newer connection than
    the one the feed subscribed on ends the feed before it is sent (`_on_msg`): messages lost with the old
    connection (written to a server that died, or in flight to us) would otherwise sit below it, and its key,
    once sent, would make the client's resume skip them.
    """

    def __init__(self, ctx: Any, scope: Scope, after: int, *, max_buffer: int = MAX_BUFFER,
                 page: int = REPLAY_PAGE) -> None:
        self.ctx, self.scope, self.after, self.max_buffer, self.page = ctx, scope, after, max_buffer, page
        self._queue: asyncio.Queue = asyncio.Queue()
        self._overflow = False
        self._reset = False  # a message came over a newer connection than the subscription's (see _on_msg)
        self._connection: int | None = None  # nc.stats["reconnects"] when the feed subscribed
        self._mine: set[str] = set() if scope.run_id is None else {str(scope.run_id)}
        self._others: set[str] = set()

    async def _on_msg(self, msg: Any) -> None:
        if self._overflow or self._reset:
            return
        if self._connection is not None and self.ctx.nc.stats["reconnects"] != self._connection:
            # nats-py counts a reconnect before it subscribes again, so this message came over the new
            # connection: whatever the old one lost lies below it. Not sent; the feed ends and the client resumes.
            self._reset = True
            self._queue.put_nowait(None)
            return
        if self._queue.qsize() >= self.max_buffer:
            self._overflow = True
            self._queue.put_nowait(None)  # wakes the reader, which ends the feed
            return
        self._queue.put_nowait(msg)

    async def _replay_page(self, after: tuple[int, int] | None) -> tuple[tuple[int, int], list[Any]]:
        """The cursor to replay from (looked up on the first page: `after` is None) and the next page after it."""
        s = self.scope
        async with self.ctx.store.tenant_transaction(s.tenant_id) as conn:
            if s.run_id is None:
                if after is None:
                    after = await cursor_at(conn, self.after)
                return after, await conn.fetch(_REPLAY_WORKFLOW, s.tenant_id, s.workflow_id, *after, self.page)
            after = (0, self.after) if after is None else after
            return after, await conn.fetch(_REPLAY_RUN, s.tenant_id, f"run-{s.run_id}", after[1], self.page)

    async def _belongs(self, run_id: str, event_type: str, data: dict[str, Any]) -> bool:
        """Is this run one of the scope's workflow's runs? Cached; asks the runs table for an unknown run."""
        if run_id in self._mine:
            return True
        if run_id in self._others or self.scope.run_id is not None:
            return False
        if event_type == "RunCreated":
            workflow_id = data.get("workflow_id")
        else:
            try:
                rid = uuid.UUID(run_id)
            except ValueError:
                return False
            async with self.ctx.store.tenant_transaction(self.scope.tenant_id) as conn:
                found = await conn.fetchval("SELECT workflow_id FROM runs WHERE tenant_id = $1 AND id = $2",
                                            self.scope.tenant_id, rid)
            workflow_id = None if found is None else str(found)
        if workflow_id == str(self.scope.workflow_id):
            self._mine.add(run_id)
            return True
        if len(self._others) >= _OTHER_RUNS_CAP:
            self._others.clear()
        self._others.add(run_id)
        return False

    async def __aiter__(self) -> AsyncIterator[StreamEvent | Connected | Reconnect]:
        nc = self.ctx.nc
        self._connection = nc.stats["reconnects"]
        sub = await subscribe_owned(nc, self.scope.subject, self._on_msg)
        try:
            try:  # step 1: the server holds our subscription before the replay reads
                await self.ctx.probe.round_trip(ROUND_TRIP_S)
            except ProbeTimeout:
                yield Reconnect("event connection not ready")
                return
            yield Connected(self.scope.hello())
            last: tuple[int, int] | None = None  # (xid, position); xid 0 throughout for a run's feed
            while True:  # step 2: replay in pages
                last, rows = await self._replay_page(last)
                for row in rows:
                    last = (row["xid"], row["global_position"])
                    yield StreamEvent(last[1], run_message(row["type"], msgspec.json.decode(row["data"])))
                if len(rows) < self.page:
                    break
            by_position = self.scope.run_id is not None
            while True:  # step 3: live, deduplicated by (xid, position), or by position for one run
                if self._overflow:
                    log.warning("stream_buffer_overflow", tenant=self.scope.tenant_id, subject=self.scope.subject)
                    yield Reconnect("buffer overflow")
                    return
                if self._reset or nc.stats["reconnects"] != self._connection or nc.is_closed:
                    yield Reconnect("event connection reset")
                    return
                try:
                    msg = await asyncio.wait_for(self._queue.get(), NATS_CHECK_S)
                except TimeoutError:
                    continue
                if msg is None:
                    continue  # the overflow or reset marker; handled at the top
                headers = msg.headers or {}
                try:
                    key = (0 if by_position else int(headers["Weft-Xid"]), int(headers["Weft-Position"]))
                    stream_id, event_type = headers["Weft-Stream"], headers["Weft-Type"]
                except (KeyError, ValueError):
                    log.warning("stream_message_without_headers", subject=msg.subject)
                    continue
                if key <= last:
                    continue  # already sent by the replay (or a relay republish)
                data = msgspec.json.decode(msg.data)
                run_id = stream_id.partition("-")[2]
                if not await self._belongs(run_id, event_type, data):
                    continue
                last = key
                yield StreamEvent(key[1], run_message(event_type, data))
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - a closed connection has no subscription left to remove
                pass
