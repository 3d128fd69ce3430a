"""Drives runs: one driver task per active run (services/executor/driver.py) folds its events, starts every
ready step concurrently, records each result as an event, and sleeps until a step finishes, a timer is due, or
an event arrives. The Engine here keeps one driver per run, pokes it when something outside it changed the
run, and recovers unfinished runs after a restart.

The engine is I/O and scheduling only: what to do next, what a step's result records (retry, backoff,
waits, approval pauses) and every event it appends are the pure decider's (domain.py); no step type is
special here (docs/decisions/0060)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import structlog

from libs.events.aggregate import fold
from libs.events.store import EventStore, RecordedEvent
from services.executor import domain
from services.executor.driver import RunDriver
from services.executor.leases import RunLeases
from services.executor.progress import step_context
from services.executor.steps import StepDeps

__all__ = ["Engine", "RunDriver", "step_context"]

log = structlog.get_logger()


def _now() -> datetime:
    return datetime.now(UTC)


class Engine:
    def __init__(self, store: EventStore, deps: StepDeps | None = None, clock: Callable[[], datetime] = _now,
                 rng: random.Random | None = None, leases: RunLeases | None = None):
        self.store, self.deps, self.clock = store, deps or StepDeps(), clock
        self.rng = rng or random.Random()
        # None: this process is the only executor (in-process tests); else runs are driven under a lease.
        self.leases = leases
        self.takeovers: list[float] = []  # seconds since the previous owner's last renewal, per takeover
        self.stopping = False
        self.drivers: dict[tuple[str, uuid.UUID], RunDriver] = {}

    def prepare(self, tenant_id: str, run_id: uuid.UUID) -> RunDriver:
        """A driver for a new run, not yet running: its first pass is appended with RunCreated, then `poke`
        starts it."""
        return RunDriver(self, tenant_id, run_id)

    def poke(self, tenant_id: str, run_id: uuid.UUID, stream: list[RecordedEvent] | None = None,
             prepared: RunDriver | None = None) -> RunDriver:
        """Make sure a driver looks at this run now. Idempotent; cheap to call on every run event.
        `stream`, the run's whole log as just written by the caller, spares a new driver reading it;
        `prepared` is the driver whose first pass that log includes (its steps start now)."""
        key = (tenant_id, run_id)
        driver = self.drivers.get(key)
        if driver is not None and not driver.task.done():
            driver.stale = True  # something outside the driver changed the run: read the log again
            driver.wake.set()
            return driver
        driver = prepared or RunDriver(self, tenant_id, run_id)
        if stream:
            driver.known(stream)
        self.drivers[key] = driver
        driver.task = asyncio.create_task(driver.drive(), name=f"run-{run_id}")
        driver.task.add_done_callback(lambda _t, k=key, d=driver: self._forget(k, d))
        return driver

    def _forget(self, key, driver) -> None:
        if self.drivers.get(key) is driver:
            del self.drivers[key]
        if not driver.task.cancelled() and driver.task.exception() is not None:
            log.error("run_driver_failed", run_id=str(key[1]), error=repr(driver.task.exception()))

    async def advance(self, tenant_id: str, run_id: uuid.UUID) -> str | None:
        """Drive a run until it needs nothing more right now (tests and tools); returns its status."""
        driver = self.poke(tenant_id, run_id)
        await asyncio.shield(driver.task)
        recorded = await self.store.read_stream(tenant_id, f"run-{run_id}")
        return fold(domain.initial, domain.evolve, recorded).status or None

    async def recover(self, pool: asyncpg.Pool) -> int:
        """After a restart: look at every unfinished run again, re-arming its timers and redoing crashed steps."""
        # awaiting_approval too: a paused run may have other branches still running.
        rows = await pool.fetch(
            "SELECT tenant_id, id FROM runs WHERE status IN ('pending', 'running', 'awaiting_approval')")
        for row in rows:
            self.poke(row["tenant_id"], row["id"])
        return len(rows)

    async def stop(self) -> None:
        self.stopping = True  # leases are kept, to expire: the sweep takes over runs of any status then
        drivers = list(self.drivers.values())
        for driver in drivers:
            driver.task.cancel()
        await asyncio.gather(*(d.task for d in drivers), return_exceptions=True)
