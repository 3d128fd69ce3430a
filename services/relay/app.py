"""The relay: tails the event store in global order and publishes each event to JetStream.

Nats-Msg-Id is the event id, so republishing after a crash (events sent, checkpoint not yet saved) is
dropped by the stream's duplicate window. One relay leads at a time (a session advisory lock); others wait.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

import asyncpg
import nats.errors
import structlog
from nats.js import JetStreamContext

from libs.events.bus import COMMANDS_STREAM, EVENTS_STREAM, event_subject
from libs.events.store import NOTIFY_CHANNEL, RecordedEvent, read_all
from libs.telemetry import metrics

log = structlog.get_logger()
RELAY_LOCK_KEY = 0x5745_4654_0000_0003
CHECKPOINT = "relay"


def headers_for(rec: RecordedEvent) -> dict[str, str]:
    headers = {
        "Nats-Msg-Id": str(rec.event_id),
        "Weft-Tenant": rec.tenant_id,
        "Weft-Stream": rec.stream_id,
        "Weft-Version": str(rec.version),
        "Weft-Position": str(rec.global_position),
        "Weft-Type": rec.type,
    }
    for key in ("correlation_id", "causation_id"):
        if rec.metadata.get(key):
            headers[f"Weft-{key.replace('_', '-').title()}"] = str(rec.metadata[key])
    if rec.metadata.get("traceparent"):  # W3C trace context: subscribers continue the appender's trace
        headers["traceparent"] = rec.metadata["traceparent"]
    return headers


class Relay:
    def __init__(self, dsn: str, js: JetStreamContext, *, poll_s: float = 0.5, batch: int = 256):
        self.dsn, self.js, self.poll_s, self.batch = dsn, js, poll_s, batch
        self._wake = asyncio.Event()
        self.position: int | None = None  # the last global position published (None: not leading)

    async def run(self) -> None:
        """Lead and relay until cancelled; reconnects after database errors."""
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
                log.warning("relay_db_error", error=str(exc))
                await asyncio.sleep(1.0)
            except (nats.errors.Error, TimeoutError) as exc:  # a refused or missing PubAck: publish again
                log.warning("relay_publish_error", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                await asyncio.sleep(1.0)
            log.info("relay_leading")
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            position = await conn.fetchval("SELECT position FROM checkpoints WHERE name = $1", CHECKPOINT) or 0
            saved, saved_at = position, time.monotonic()
            while True:
                self._wake.clear()
                chunk = await read_all(conn, position, self.batch)
                self.position = position
                if chunk:
                    await self.publish(chunk)
                    position = self.position = chunk[-1].global_position
                    # Under load the checkpoint is saved at most once a second (or per 1000 events), not per
                    # chunk: a crash only republishes more, and the dedupe window drops those duplicates.
                    if position - saved >= 1000 or time.monotonic() - saved_at >= 1.0:
                        await self._save(conn, position)
                        saved, saved_at = position, time.monotonic()
                    continue
                if position != saved:  # idle: everything published so far is acknowledged; record it
                    await self._save(conn, position)
                    saved, saved_at = position, time.monotonic()
                # NOTIFY only wakes us early; the poll is what guarantees progress.
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
                except TimeoutError:
                    pass
        finally:
            self.position = None
            await conn.close(timeout=2)

    @staticmethod
    async def _save(conn: asyncpg.Connection, position: int) -> None:
        await conn.execute(
            "INSERT INTO checkpoints (name, position) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            CHECKPOINT,
            position,
        )

    async def publish(self, chunk: list[RecordedEvent]) -> None:
        # Pipelined on one connection: the server stores them in send order. Every PubAck is awaited before
        # the checkpoint moves; a missing or refused one raises, and the chunk is published again.
        acks = [
            await self.js.publish_async(
                event_subject(rec.tenant_id, rec.stream_id, rec.type),
                rec.data,
                stream=EVENTS_STREAM,
                headers=headers_for(rec),
                wait_stall=10.0,
            )
            for rec in chunk
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*acks), 10.0)
        except BaseException:
            for ack in acks:
                ack.cancel()
            raise

    async def sample(self, pool: asyncpg.Pool) -> None:
        """weft_relay_lag_events (committed, not yet published) and weft_command_backlog (commands in
        WEFT_COMMANDS, a work queue: each stays until its consumer acks it after the outcome commits)."""
        stream = await self.js.stream_info(COMMANDS_STREAM)
        metrics.COMMAND_BACKLOG.set(stream.state.messages)
        if self.position is not None:  # only the leading relay knows how far it is
            newest = await pool.fetchval("SELECT coalesce(max(global_position), 0) FROM events")
            metrics.RELAY_LAG.set(max(0, newest - self.position))


def create_app(settings=None):
    """The relay as a process: health routes plus the relay loop as a background task."""
    from libs.runtime.service import create_service_app
    from libs.events.settings import load_settings

    settings = settings or load_settings(service="relay")

    async def setup(ctx) -> None:
        relay = Relay(settings.database_url, ctx.js, poll_s=settings.relay_poll_s)
        metrics.add_sampler(partial(relay.sample, ctx.pool))
        ctx.tasks.append(asyncio.create_task(relay.run()))

    return create_service_app(settings, name="relay", setup=setup)
