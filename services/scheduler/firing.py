"""The schedule firing loop: sleep until the earliest next_run_at (a NOTIFY on any schedule change wakes it
earlier), then bring every due schedule up to now.

One replica leads at a time (a session advisory lock, like the relay); the others wait as hot standbys and
take over within a second of the leader's connection dropping. The lock only avoids wasted work: exactly one
run per occurrence holds without it (expected-version appends, run ids derived from the occurrence).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import asyncpg
import structlog

from libs.events.db import DB_UNAVAILABLE
from services.scheduler.ticks import Ticker
from services.scheduler.timers import sleep_until

log = structlog.get_logger()
LEADER_LOCK_KEY = 0x5745_4654_0000_0007
NOTIFY_CHANNEL = "weft_schedules"


class ScheduleFirer:
    def __init__(self, dsn: str, ticker: Ticker, *, poll_s: float = 30.0, batch: int = 500, concurrency: int = 8,
                 standby_poll_s: float = 0.5, idle_retry_s: float = 30.0):
        self.dsn, self.ticker, self.poll_s, self.batch = dsn, ticker, poll_s, batch
        self.standby_poll_s, self.idle_retry_s = standby_poll_s, idle_retry_s
        self.limit = asyncio.Semaphore(concurrency)
        self.wake = asyncio.Event()
        self.leading = False
        # Due schedules whose tick decided nothing or failed: (next_run_at seen then, monotonic retry time). Not
        # looked at again before that time unless next_run_at changes: a guard against a hot loop (the
        # decider always moves a live schedule's cursor past now, so this is for bugs and outages only).
        self._idle: dict = {}

    async def run(self) -> None:
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
                log.warning("scheduler_db_error", error=f"{type(exc).__name__}: {exc}")
                self.leading = False
                await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK_KEY):
                await asyncio.sleep(self.standby_poll_s)
            self.leading = True
            log.info("scheduler_leading")
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self.wake.set())
            while True:
                self.wake.clear()
                if await self.fire_due(conn):
                    continue  # the ticks moved next_run_at; look again before sleeping
                next_due: datetime | None = await conn.fetchval(
                    "SELECT min(next_run_at) FROM schedules WHERE next_run_at IS NOT NULL AND id <> ALL($1::uuid[])",
                    list(self._idle))
                timeout = self.poll_s
                if next_due is not None:
                    timeout = min(self.poll_s, (next_due - self.ticker.clock()).total_seconds())
                if self._idle:
                    timeout = min(timeout, max(0.0, min(r for _, r in self._idle.values()) - time.monotonic()))
                await sleep_until(self.wake, timeout)
        finally:
            self.leading = False
            await conn.close(timeout=2)

    async def fire_due(self, conn: asyncpg.Connection) -> int:
        """Tick every schedule due by now (one batch, oldest first); returns how many ticked with an effect."""
        rows = await conn.fetch(
            "SELECT tenant_id, id, next_run_at FROM schedules WHERE next_run_at <= $1 ORDER BY next_run_at LIMIT $2",
            self.ticker.clock(), self.batch)
        now = time.monotonic()
        self._idle = {sid: idle for sid, idle in self._idle.items() if idle[1] > now}
        rows = [r for r in rows if self._idle.get(r["id"], (None,))[0] != r["next_run_at"]]
        if not rows:
            return 0
        results = await asyncio.gather(*(self._tick(r) for r in rows))
        return sum(1 for n in results if n)

    async def _tick(self, row) -> int:
        async with self.limit:
            try:
                done = await self.ticker.tick(row["tenant_id"], row["id"])
            except DB_UNAVAILABLE:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad schedule must not stop the others
                log.exception("schedule_tick_failed", schedule_id=str(row["id"]), error=str(exc))
                done = 0
        if done:
            self._idle.pop(row["id"], None)
        else:
            self._idle[row["id"]] = (row["next_run_at"], time.monotonic() + self.idle_retry_s)
            log.warning("schedule_due_but_idle", schedule_id=str(row["id"]), next_run_at=str(row["next_run_at"]))
        return done
