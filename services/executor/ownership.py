"""Executor replicas share runs through leases (docs/decisions/0110): a driver drives only under its run's
lease; one loop per process renews the leases its drivers hold, fences itself when it cannot, and takes
over the runs whose owner died."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from libs.events.db import DB_UNAVAILABLE

# The engine's Engine and RunDriver, which import this module (so it cannot import theirs).
Engine = RunDriver = Any

log = structlog.get_logger()

# A replica that has not renewed for this share of the lease stops its drivers: the others take its runs
# over only once the lease has expired on the database's clock, so this one has stopped first.
FENCE_AT = 0.6


async def own(driver: RunDriver) -> bool:
    """Take the run's lease for this driver; False when another live replica drives the run."""
    leases = driver.engine.leases
    if leases is None:
        return True
    taken = await leases.acquire(driver.tenant_id, driver.run_id)
    if taken is None:
        log.debug("run_owned_elsewhere", run_id=str(driver.run_id))
        driver.first_steps = []  # already in the log as started: the owner runs them
        return False
    driver.leased = True
    if taken.previous is not None:
        driver.stale = True
        since = taken.since_renewal_s or 0.0
        driver.engine.takeovers.append(since)
        log.warning("run_taken_over", run_id=str(driver.run_id), previous_owner=taken.previous,
                    since_renewal_s=round(since, 3))
    return True


async def disown(driver: RunDriver) -> None:
    """Release a finished driver's lease (best effort: an unreleased lease just expires)."""
    if not driver.leased or driver.engine.stopping:
        return  # a stopping process's leases expire: a released one would look idle to the sweep
    driver.leased = False
    try:
        await asyncio.shield(driver.engine.leases.release(driver.run_id))
    except (*DB_UNAVAILABLE, asyncio.CancelledError):
        pass


async def keep_leases(engine: Engine, interval_s: float | None = None) -> None:
    """Forever: renew held leases, stop drivers whose lease is lost, wake drivers whose run another replica
    appended to, and poke orphaned runs (their drivers then take the lease over)."""
    leases = engine.leases
    assert leases is not None
    interval = interval_s if interval_s is not None else leases.ttl_s / 3
    last_renewed = time.monotonic()
    while True:
        sent = time.monotonic()
        held = [d for d in list(engine.drivers.values()) if d.leased and not d.task.done()]
        try:
            versions = await leases.renew([d.run_id for d in held])
            last_renewed = sent
            for driver in held:
                version = versions.get(driver.run_id)
                if version is None:
                    log.warning("run_lease_lost", run_id=str(driver.run_id))
                    driver.task.cancel()
                elif version > driver.version and not driver.stale:
                    driver.stale = True  # e.g. a cancel another replica's handler appended
                    driver.wake.set()
            for tenant_id, run_id in await leases.orphans():
                engine.poke(tenant_id, run_id)
        except DB_UNAVAILABLE as exc:
            if time.monotonic() - last_renewed > leases.ttl_s * FENCE_AT:
                log.warning("run_leases_fenced", drivers=len(held), error=f"{type(exc).__name__}: {exc}")
                for driver in held:
                    driver.task.cancel()
        await asyncio.sleep(interval)
