"""Run leases (docs/decisions/0110) against real Postgres: one holder at a time, takeover only after
expiry, renewal reports the run's version, release touches only one's own lease, orphans are found."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.executor.leases import RunLeases
from tests.conftest import migrated_database


@pytest.fixture(scope="module")
async def lease_pool(infra) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(await migrated_database(infra, "weft_leases"), min_size=1, max_size=4)
    yield pool
    await pool.close()


async def new_run(pool: asyncpg.Pool, status: str = "running", started_ago_s: float = 0.0) -> uuid.UUID:
    run_id = uuid.uuid4()
    started = datetime.now(UTC) - timedelta(seconds=started_ago_s)
    await pool.execute(
        "INSERT INTO runs (id, tenant_id, workflow_id, status, inputs, created_by, created_at, started_at,"
        " stream_version) VALUES ($1, 'tl', $2, $3, '{}', 'u', $4, $4, 3)", run_id, uuid.uuid4(), status, started)
    return run_id


async def test_one_holder_at_a_time_and_takeover_only_after_expiry(lease_pool) -> None:
    run_id = await new_run(lease_pool)
    a, b = RunLeases(lease_pool, "a", 0.5), RunLeases(lease_pool, "b", 0.5)
    assert await a.acquire("tl", run_id) is not None
    assert await b.acquire("tl", run_id) is None  # a holds it
    assert await a.acquire("tl", run_id) is not None  # re-acquiring one's own lease is fine
    assert await a.renew([run_id]) == {run_id: 3}
    await asyncio.sleep(0.7)  # a stops renewing: its lease expires
    taken = await b.acquire("tl", run_id)
    assert taken is not None and taken.previous == "a" and taken.since_renewal_s >= 0.5
    assert await a.renew([run_id]) == {}  # a learns it lost the run
    await a.release(run_id)  # and cannot release b's lease
    assert await lease_pool.fetchval("SELECT owner FROM run_leases WHERE run_id = $1", run_id) == "b"
    await b.release(run_id)
    assert await lease_pool.fetchval("SELECT count(*) FROM run_leases WHERE run_id = $1", run_id) == 0


async def test_orphans_are_expired_leases_and_long_unleased_running_runs(lease_pool) -> None:
    expired, held, fresh, stale, paused = (await new_run(lease_pool), await new_run(lease_pool),
                                           await new_run(lease_pool), await new_run(lease_pool, started_ago_s=60),
                                           await new_run(lease_pool, "awaiting_approval", started_ago_s=60))
    finished = await new_run(lease_pool, "completed")
    dead, live = RunLeases(lease_pool, "dead", 0.2), RunLeases(lease_pool, "live", 30)
    await dead.acquire("tl", expired)
    await dead.acquire("tl", finished)  # died after the run's last append, before releasing
    await live.acquire("tl", held)
    await asyncio.sleep(0.3)
    found = {run_id for _, run_id in await live.orphans(limit=10_000)}
    assert expired in found and stale in found
    assert not {held, fresh, paused, finished} & found
    assert await lease_pool.fetchval("SELECT count(*) FROM run_leases WHERE run_id = $1", finished) == 0
