"""Run leases in Postgres: which executor replica drives which run, renewal, and takeover of expired ones
(docs/decisions/0110)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

# Takes the lease when it is free, ours, or expired; reports whom it was taken from and how long ago that
# owner last renewed (the takeover time). All times are the database's clock, so replicas' clocks never
# have to agree.
_ACQUIRE = """
WITH prev AS (SELECT owner, expires_at FROM run_leases WHERE run_id = $1)
INSERT INTO run_leases AS l (run_id, tenant_id, owner, expires_at)
VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4))
ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
    WHERE l.owner = excluded.owner OR l.expires_at < clock_timestamp()
RETURNING (SELECT owner FROM prev) AS previous,
          extract(epoch FROM clock_timestamp() - ((SELECT expires_at FROM prev) - make_interval(secs => $4)))
              AS since_renewal_s
"""
# Renews the leases we still hold and returns each run's version, so a driver learns of an event another
# replica appended (a cancel handled there) within one renewal.
_RENEW = """
UPDATE run_leases l SET expires_at = clock_timestamp() + make_interval(secs => $3)
FROM runs r
WHERE l.owner = $1 AND l.run_id = ANY($2::uuid[]) AND r.id = l.run_id
RETURNING l.run_id, r.stream_version
"""
# Unfinished runs nobody drives: an expired lease (its replica died or lost the database), or a running run
# with no lease at all for longer than a lease's time (a replica died between a StartRun's commit and its
# driver's first acquire). A paused run without a lease is idle by design: its next command pokes it.
_ORPHANS = """
SELECT r.tenant_id, r.id FROM runs r LEFT JOIN run_leases l ON l.run_id = r.id
WHERE r.status IN ('pending', 'running', 'awaiting_approval')
  AND (l.expires_at < clock_timestamp()
       OR (l.run_id IS NULL AND r.status <> 'awaiting_approval'
           AND r.started_at < clock_timestamp() - make_interval(secs => $1)))
LIMIT $2
"""

# A replica killed after its run's last append but before releasing leaves a lease nothing will take over.
_SWEEP_FINISHED = """
DELETE FROM run_leases l USING runs r
WHERE r.id = l.run_id AND l.expires_at < clock_timestamp()
  AND r.status NOT IN ('pending', 'running', 'awaiting_approval')
"""


@dataclass(frozen=True)
class Taken:
    previous: str | None  # the owner it was taken from, None when the run had no lease
    since_renewal_s: float | None  # how long ago that owner last renewed


class RunLeases:
    def __init__(self, pool: asyncpg.Pool, owner: str, ttl_s: float):
        self.pool, self.owner, self.ttl_s = pool, owner, ttl_s

    async def acquire(self, tenant_id: str, run_id: uuid.UUID) -> Taken | None:
        """The lease, or None when another live replica holds it."""
        row = await self.pool.fetchrow(_ACQUIRE, run_id, tenant_id, self.owner, self.ttl_s)
        if row is None:
            return None
        previous = row["previous"] if row["previous"] != self.owner else None
        return Taken(previous, float(row["since_renewal_s"]) if previous is not None else None)

    async def renew(self, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Renew what we still hold; returns {run_id: stream version} for those (a missing id was lost)."""
        if not run_ids:
            return {}
        rows = await self.pool.fetch(_RENEW, self.owner, run_ids, self.ttl_s)
        return {row["run_id"]: row["stream_version"] for row in rows}

    async def release(self, run_id: uuid.UUID) -> None:
        await self.pool.execute("DELETE FROM run_leases WHERE run_id = $1 AND owner = $2", run_id, self.owner)

    async def orphans(self, limit: int = 500) -> list[tuple[str, uuid.UUID]]:
        """Unfinished runs nobody drives (their drivers take the lease over); drops dead leases of finished runs."""
        await self.pool.execute(_SWEEP_FINISHED)
        rows = await self.pool.fetch(_ORPHANS, self.ttl_s, limit)
        return [(row["tenant_id"], row["id"]) for row in rows]
