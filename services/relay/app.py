"""The relay: tails the event store in global order and publishes each event to JetStream.

Nats-Msg-Id is the event id, so republishing after a crash (events sent, checkpoint not yet saved) is
dropped by the stream's duplicate window. One relay leads at a time (a session advisory lock); others wait.
It resumes from the lower of its checkpoint and the last Weft-Position in WEFT_EVENTS, so a stream that lost
its tail (or its whole store) is refilled; and it publishes again logged commands that got no outcome
(services/relay/commands.py).
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

import asyncpg
import nats.errors
import structlog
import nats.js.errors
from nats.js import JetStreamContext

from libs.events.bus import EVENTS_MAX_AGE_S, EVENTS_STREAM, confirmed, ensure_streams, event_subject
from libs.events.settings import Settings, load_settings
from libs.events.order import Cursor, cursor_at
from libs.events.store import NOTIFY_CHANNEL
from libs.telemetry import metrics
from services.relay.commands import CommandRepublisher

log = structlog.get_logger()
RELAY_LOCK_KEY = 0x5745_4654_0000_0003
CHECKPOINT = "relay"
STREAM_CREATED = "relay-stream-created"  # WEFT_EVENTS' creation time (us) when CHECKPOINT was last saved
# The leader lock lives as long as the leader's Postgres session, so that session must end soon after the relay
# does (docs/decisions/0022). A backend busy in a statement (waiting on a lock) does not read its socket and would
# keep the lock until the statement ends: it checks the client every second. A host that vanished without closing
# its socket is noticed by TCP keepalives after about 20 s (the OS default is two hours).
LEADER_SESSION = {
    "client_connection_check_interval": "1s",
    "tcp_keepalives_idle": "5", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3",
}


# What the relay publishes, and nothing more: ids and data as text, the metadata fields that become headers
# read out by Postgres (no JSON decoding of metadata, no uuid or timestamp objects per event).
# The global order without an append lock (docs/decisions/0032, libs/events/order.py): (xid, position) pairs above
# the cursor and below pg_snapshot_xmin, in pair order. Every transaction below that bound has ended, so nothing
# can commit behind the cursor later: no event is skipped. Within a stream, pair order is version order.
# The last column says, from the same snapshot, whether committed events are held back above the bound; with no
# event to read there is still one row (event columns null) carrying it.
_READ = (
    "SELECT e.*, h.held FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) AS s"
    " CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM events WHERE xid >= s.xmin) AS held) AS h"
    " LEFT JOIN LATERAL (SELECT global_position, event_id::text, stream_id, version, type, data::text, tenant_id,"
    " metadata->>'correlation_id', metadata->>'causation_id', metadata->>'traceparent', xid"
    " FROM events WHERE (xid, global_position) > ($1::xid8, $2) AND xid < s.xmin"
    " ORDER BY xid, global_position LIMIT $3) AS e ON true"
)
# Events after the relay's cursor (positions are not in the global order any more, so no subtraction will do).
_LAG = "SELECT count(*) FROM (SELECT 1 FROM events WHERE (xid, global_position) > ($1::xid8, $2) LIMIT $3) AS lag"
_LAG_CAP = 100_000
# How long committed events have waited above the xmin bound (_READ's `held`): the oldest one's age. Not "since the
# relay first saw `held`": under steady concurrent appends some event is nearly always committed above the bound
# for a moment, with nothing slow anywhere. The events above the bound are few (the index on (xid, position)).
_HELD_BACK = (
    "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(recorded_at)), 0)::float8 FROM events"
    " WHERE xid >= pg_snapshot_xmin(pg_current_snapshot())"
)
HELD_BACK_POLL_S = 0.005  # first wait while committed events are held back by an older running transaction


def headers_for(row) -> dict[str, str]:
    """The message headers of one event row (_READ's columns, in order)."""
    position, event_id, stream_id, version, event_type, _, tenant_id, correlation_id, causation_id, parent, xid = row[:11]
    headers = {
        "Nats-Msg-Id": event_id,
        "Weft-Tenant": tenant_id,
        "Weft-Stream": stream_id,
        "Weft-Version": str(version),
        "Weft-Position": str(position),
        "Weft-Xid": str(xid),  # with Weft-Position, the global order's key: live readers deduplicate by the pair
        "Weft-Type": event_type,
    }
    if correlation_id:
        headers["Weft-Correlation-Id"] = correlation_id
    if causation_id:
        headers["Weft-Causation-Id"] = causation_id
    if parent:  # W3C trace context: subscribers continue the appender's trace
        headers["traceparent"] = parent
    return headers


async def stream_state(js: JetStreamContext) -> tuple[int, int]:
    """(when WEFT_EVENTS was created, in microseconds since the epoch; the Weft-Position of its last message,
    0 when it is empty). A stream created anew (its store lost, then declared again) has a new creation time."""
    info = await js.stream_info(EVENTS_STREAM)
    created = int(info.created.timestamp() * 1_000_000) if info.created is not None else 0
    if not info.state.messages:
        return created, 0
    try:
        msg = await js.get_msg(EVENTS_STREAM, seq=info.state.last_seq)
    except nats.js.errors.NotFoundError:  # the last message was removed meanwhile: ask for the last one left
        msg = await js.get_last_msg(EVENTS_STREAM, "weft.evt.>")
    return created, int((msg.headers or {}).get("Weft-Position", 0))


# A refill need not go further back than the stream keeps messages (WEFT_EVENTS' max_age): older events would
# only be stored again for another max_age. The cursor of the last such event in the global order.
_REFILL_FLOOR = (
    "SELECT xid, global_position FROM events WHERE recorded_at < clock_timestamp() - make_interval(secs => $1)"
    " ORDER BY xid DESC, global_position DESC LIMIT 1"
)


class PublishNotConfirmed(Exception):
    """A chunk's PubAcks did not all come in time (NATS away or electing a stream leader)."""


class Relay:
    def __init__(self, dsn: str, js: JetStreamContext, *, poll_s: float = 0.5, batch: int = 256,
                 settings: Settings | None = None):
        self.dsn, self.js, self.poll_s, self.batch = dsn, js, poll_s, batch
        self.settings = settings or load_settings()
        self.commands = CommandRepublisher(js, delay_s=self.settings.command_republish_s)
        self._wake = asyncio.Event()
        self.cursor: Cursor | None = None  # the last event published, (xid, position) (None: not leading)

    async def run(self) -> None:
        """Lead and relay until cancelled; reconnects after database errors."""
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            # Before the database errors: NATS timeouts are TimeoutErrors, and TimeoutError is an OSError.
            except (nats.errors.Error, PublishNotConfirmed) as exc:  # a refused or missing PubAck: publish again
                # (leading anew: the streams are declared again first, in case NATS lost them)
                log.warning("relay_publish_error", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
                log.warning("relay_db_error", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        conn = await asyncpg.connect(self.dsn, server_settings=LEADER_SESSION)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                await asyncio.sleep(1.0)
            log.info("relay_leading")
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            cursor = self.cursor = await self._resume_position(conn)
            saved, saved_at, unsaved = cursor, time.monotonic(), 0
            reconnects, swept_at, held_wait = self._reconnects(), 0.0, HELD_BACK_POLL_S
            while True:
                self._wake.clear()
                if self._reconnects() != reconnects:
                    # NATS came back, maybe without its store: look at the stream again before going on.
                    await self._save(conn, cursor[1])
                    return
                if time.monotonic() - swept_at >= self.settings.command_republish_s / 2:
                    await self.commands.sweep(conn)
                    swept_at = time.monotonic()
                rows = await conn.fetch(_READ, cursor[0], cursor[1], self.batch)
                held = rows[0][-1]
                chunk = rows if rows[0][0] is not None else []
                if chunk:
                    await self.publish(chunk)
                    cursor = (chunk[-1][10], chunk[-1][0])
                    self.cursor, unsaved = cursor, unsaved + len(chunk)
                    # Under load the checkpoint is saved at most once a second (or per 1000 events), not per
                    # chunk: a crash only republishes more, and the dedupe window drops those duplicates.
                    if unsaved >= 1000 or time.monotonic() - saved_at >= 1.0:
                        await self._save(conn, cursor[1])
                        saved, saved_at, unsaved = cursor, time.monotonic(), 0
                    if len(chunk) == self.batch:
                        continue  # more may be waiting
                elif cursor != saved:  # idle: everything published so far is acknowledged; record it
                    await self._save(conn, cursor[1])
                    saved, saved_at, unsaved = cursor, time.monotonic(), 0
                # A short chunk was everything below the xmin bound when it was read. Whatever commits later has
                # notified, and the wake was cleared before the read: waiting returns at once. But events that
                # committed above the bound (an older transaction still runs) get no further NOTIFY when that
                # transaction ends without appending (a lease, a rate limit): read again soon, backing off.
                timeout = self.poll_s
                if held:
                    timeout, held_wait = min(held_wait, self.poll_s), held_wait * 2
                else:
                    held_wait = HELD_BACK_POLL_S
                # NOTIFY only wakes us early; the poll is what guarantees progress.
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            self.cursor = None
            await conn.close(timeout=2)

    def _reconnects(self) -> int:
        return self.js._nc.stats["reconnects"]

    async def _resume_position(self, conn: asyncpg.Connection) -> Cursor:
        """The lower of the checkpoint and the last event the stream holds: what the stream lost (an unsynced
        tail, or its whole store) is published again. The streams are (re)declared first: after losing its
        store, nats-server knows none. Both are kept as a position (one integer); the event at it gives its
        cursor (events are never deleted).

        A stream created anew since the checkpoint was saved (its creation time, kept beside the checkpoint,
        changed) lost everything before its creation, however far its last message is: publishes that were in
        flight when NATS came back can land in the new stream before the relay leads again, so its last
        position says nothing about what it holds. Then everything since the refill floor is published again
        (the duplicate window drops what is there already), and the moved-back checkpoint is saved with the new
        creation time in one transaction, so a crash during the refill refills again."""
        await ensure_streams(self.js, self.settings)
        saved = await conn.fetchrow(
            "SELECT (SELECT position FROM checkpoints WHERE name = $1) AS position,"
            " (SELECT position FROM checkpoints WHERE name = $2) AS created", CHECKPOINT, STREAM_CREATED)
        checkpoint = await cursor_at(conn, saved["position"] or 0)
        created, last = await stream_state(self.js)
        recreated = saved["created"] is not None and saved["created"] != created
        stored = (0, 0) if recreated else await cursor_at(conn, last)
        if stored >= checkpoint:
            cursor = checkpoint
        else:
            floor_row = await conn.fetchrow(_REFILL_FLOOR, EVENTS_MAX_AGE_S)
            floor = (0, 0) if floor_row is None else (floor_row[0], floor_row[1])
            cursor = max(stored, min(floor, checkpoint))
            log.warning("relay_refilling", checkpoint=checkpoint[1], stream_position=last, resume_from=cursor[1],
                        stream_recreated=recreated)
        if saved["created"] != created or cursor != checkpoint:
            async with conn.transaction():
                await self._save(conn, cursor[1])
                await conn.execute(
                    "INSERT INTO checkpoints (name, position) VALUES ($1, $2)"
                    " ON CONFLICT (name) DO UPDATE SET position = excluded.position", STREAM_CREATED, created)
        return cursor

    @staticmethod
    async def _save(conn: asyncpg.Connection, position: int) -> None:
        await conn.execute(
            "INSERT INTO checkpoints (name, position) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            CHECKPOINT,
            position,
        )

    async def publish(self, chunk: list) -> None:
        # Pipelined on one connection: the server stores them in send order. Every PubAck is awaited before
        # the checkpoint moves; a missing or refused one raises, and the chunk is published again.
        publish = self.js.publish_async
        acks = [
            await publish(event_subject(row[6], row[2], row[4]), row[5].encode(),
                          stream=EVENTS_STREAM, headers=headers_for(row), wait_stall=10.0)
            for row in chunk
        ]
        try:
            await confirmed(acks)
        except TimeoutError as exc:  # told apart from a database timeout in `run`
            raise PublishNotConfirmed(f"no PubAck within the wait for {len(acks)} events") from exc

    async def sample(self, pool: asyncpg.Pool) -> None:
        """weft_relay_lag_events (committed, not yet published), weft_relay_held_back_seconds (how long committed
        events have waited behind a running older transaction) and weft_command_backlog (accepted commands whose
        outcome is not recorded yet: the command log's rows, docs/decisions/0030)."""
        metrics.COMMAND_BACKLOG.set(await pool.fetchval("SELECT count(*) FROM command_log"))
        cursor = self.cursor
        if cursor is not None:  # only the leading relay knows how far it is; counted up to _LAG_CAP (a cheap scrape)
            metrics.RELAY_LAG.set(await pool.fetchval(_LAG, *cursor, _LAG_CAP))
        # From the leader only, like the lag (a standby says 0, so max() over relays is the leader's).
        metrics.RELAY_HELD_BACK.set(0.0 if cursor is None else await pool.fetchval(_HELD_BACK))


def create_app(settings=None):
    """The relay as a process: health routes plus the relay loop as a background task."""
    from libs.runtime.service import create_service_app

    settings = settings or load_settings(service="relay")

    async def setup(ctx) -> None:
        relay = Relay(settings.database_url, ctx.js, poll_s=settings.relay_poll_s, settings=settings)
        metrics.add_sampler(partial(relay.sample, ctx.pool))
        ctx.tasks.append(asyncio.create_task(relay.run()))

    return create_service_app(settings, name="relay", setup=setup)
