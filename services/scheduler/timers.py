"""The timer firing loop: sleep until the earliest pending timer is due (NOTIFY wakes it earlier), hand every
due timer's command to the command log, mark it fired, then publish it.

Every replica runs it. A due timer is claimed with FOR UPDATE SKIP LOCKED inside the transaction that marks
it fired and writes its command into `command_log` (docs/decisions/0030). So a fired timer's command is done
only when its outcome is recorded, not when it was published: if the publish is lost (a crash after the
commit, NATS down, JetStream's store lost), the relay publishes it again, with the same Nats-Msg-Id and command
id (a no-op for the receiving handler, which records processed commands).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import nats
import structlog
from nats.js import JetStreamContext

from libs.events.bus import COMMANDS_STREAM, command_subject
from libs.events.db import DB_UNAVAILABLE
from libs.events.faults import crash_point
from libs.events.timers import NOTIFY_CHANNEL
from libs.telemetry import metrics

log = structlog.get_logger()


# The claimed timers' commands into the command log, in the transaction that marks them fired.
_LOG_COMMANDS = (
    "INSERT INTO command_log (command_id, tenant_id, subject, payload)"
    " SELECT command_id, tenant_id, 'weft.cmd.' || service || '.' || tenant_id || '.' || command_type,"
    " convert_to(envelope::text, 'UTF8') FROM timers WHERE timer_id = ANY($1::uuid[])"
    " ON CONFLICT (command_id) DO NOTHING"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


async def sleep_until(wake: asyncio.Event, timeout: float) -> None:
    """Wait for `wake` or `timeout` seconds, whichever comes first."""
    if timeout <= 0:
        return
    try:
        await asyncio.wait_for(wake.wait(), timeout)
    except TimeoutError:
        pass


class TimerFirer:
    def __init__(self, dsn: str, js: JetStreamContext, *, poll_s: float = 30.0, batch: int = 256,
                 clock: Callable[[], datetime] = utcnow):
        self.dsn, self.js, self.poll_s, self.batch, self.clock = dsn, js, poll_s, batch, clock
        self.wake = asyncio.Event()
        self.fired = 0  # timers this process published (and marked fired)

    async def run(self) -> None:
        """Fire timers until cancelled; waits out database and NATS outages."""
        while True:
            try:
                await self._loop()
            except asyncio.CancelledError:
                raise
            except (*DB_UNAVAILABLE, asyncpg.PostgresError, nats.errors.Error, TimeoutError) as exc:
                log.warning("timer_loop_error", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def _loop(self) -> None:
        # One connection of its own: it listens, and runs the claim transactions (all tenants: owner role).
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self.wake.set())
            while True:
                self.wake.clear()
                if await self.fire_due(conn) >= self.batch:
                    continue  # more may be due
                next_due = await conn.fetchval("SELECT min(due_at) FROM timers WHERE status = 'pending'")
                timeout = self.poll_s
                if next_due is not None:
                    timeout = min(self.poll_s, (next_due - self.clock()).total_seconds())
                await sleep_until(self.wake, timeout)
        finally:
            await conn.close(timeout=2)

    async def fire_due(self, conn: asyncpg.Connection) -> int:
        """Log and mark fired every pending timer due by now (one batch), then publish them; returns how many."""
        async with conn.transaction():
            # SKIP LOCKED: a timer another replica is publishing right now is its business, not ours. The row
            # lock also orders a concurrent cancel_timer: it waits, then finds the timer fired.
            rows = await conn.fetch(
                "SELECT timer_id, tenant_id, service, command_type, command_id, envelope::text AS envelope, due_at"
                " FROM timers WHERE status = 'pending' AND due_at <= $1 ORDER BY due_at LIMIT $2"
                " FOR UPDATE SKIP LOCKED",
                self.clock(), self.batch,
            )
            if not rows:
                return 0
            await conn.execute(_LOG_COMMANDS, [r["timer_id"] for r in rows])
            await conn.execute(
                "UPDATE timers SET status = 'fired', fired_at = clock_timestamp() WHERE timer_id = ANY($1::uuid[])",
                [r["timer_id"] for r in rows],
            )
        crash_point("timer_logged")
        # The fast path; the relay's republish is the slow one, so a failed publish here only costs a delay.
        try:
            await asyncio.gather(*(
                self.js.publish(
                    command_subject(r["service"], r["tenant_id"], r["command_type"]),
                    r["envelope"].encode(),
                    stream=COMMANDS_STREAM,
                    headers={"Nats-Msg-Id": str(r["command_id"])},
                    timeout=10.0,
                )
                for r in rows
            ))
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("timer_publish_deferred", count=len(rows), error=f"{type(exc).__name__}: {exc}")
        self.fired += len(rows)
        now = self.clock()
        for r in rows:
            metrics.TIMER_DELAY.observe(max(0.0, (now - r["due_at"]).total_seconds()))
        log.debug("timers_fired", count=len(rows))
        return len(rows)


# A pending timer this long past its due time counts as late (weft_timers_late): the loop normally fires
# one within milliseconds of its due time, or of a NOTIFY.
LATE_AFTER_S = 10.0


def timers_sampler(pool: asyncpg.Pool):
    """weft_timers_due and weft_timers_late, every tenant (the service's owner connection)."""

    async def sample() -> None:
        row = await pool.fetchrow(
            "SELECT count(*) AS due, count(*) FILTER (WHERE due_at < now() - make_interval(secs => $1)) AS late"
            " FROM timers WHERE status = 'pending' AND due_at <= now()", LATE_AFTER_S)
        metrics.TIMERS_DUE.set(row["due"])
        metrics.TIMERS_LATE.set(row["late"])

    return sample
