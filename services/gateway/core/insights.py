"""Tenant-wide reads for people: recent runs of every workflow, runs per status per day, step durations, and
the event history with a text search. Read models and the event log, scoped by tenant (and RLS)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from libs.security.auth import Principal
from services.gateway.core import Core, status
from services.gateway.core.errors import ApiError

MAX_QUERY = 200


def _query(q: str | None) -> str | None:
    q = (q or "").strip()
    if len(q) > MAX_QUERY:
        raise ApiError(400, f"search must be at most {MAX_QUERY} characters", "q")
    if not q:
        return None
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"  # ILIKE's escapes


async def recent_runs(core: Core, principal: Principal, *, run_status: str | None = None, q: str | None = None,
                      limit: int = 100) -> list[asyncpg.Record]:
    """Runs of every workflow, newest first, by canonical status and a search over workflow name, run id,
    starter and error."""
    if run_status is not None and run_status not in (*status.ACTIVE, *status.TERMINAL):
        raise ApiError(400, f"status must be one of: {', '.join((*status.ACTIVE, *status.TERMINAL))}", "status")
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return await conn.fetch(
            "SELECT r.id, r.workflow_id, w.name, r.run_number, r.status, r.created_by, r.started_at, r.finished_at,"
            " r.error FROM runs r JOIN workflows w ON w.tenant_id = r.tenant_id AND w.id = r.workflow_id"
            " WHERE r.tenant_id = $1 AND ($2::text IS NULL OR r.status = $2) AND ($3::text IS NULL OR w.name ILIKE $3"
            " OR r.id::text ILIKE $3 OR r.created_by ILIKE $3 OR coalesce(r.error, '') ILIKE $3)"
            " ORDER BY r.started_at DESC, r.id LIMIT $4", principal.tenant_id, run_status, _query(q), limit)


async def runs_per_day(core: Core, principal: Principal, days: int = 14) -> dict[str, dict[str, int]]:
    """{day (YYYY-MM-DD, UTC): {canonical status: runs started that day}} for the last `days` days."""
    since = (datetime.now(UTC) - timedelta(days=days - 1)).date()
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT (started_at AT TIME ZONE 'UTC')::date AS day, status, count(*) AS n FROM runs"
            " WHERE tenant_id = $1 AND started_at >= $2 GROUP BY 1, 2", principal.tenant_id,
            datetime(since.year, since.month, since.day, tzinfo=UTC))
    out = {(since + timedelta(days=i)).isoformat(): {} for i in range(days)}
    for row in rows:
        out.setdefault(row["day"].isoformat(), {})[row["status"]] = row["n"]
    return out


async def step_durations(core: Core, principal: Principal, workflow_id: uuid.UUID | None = None,
                         runs: int = 50) -> dict[str, float]:
    """Mean seconds per step id over the last `runs` finished runs (steps that recorded start and finish)."""
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(
            "WITH recent AS (SELECT steps FROM runs WHERE tenant_id = $1 AND ($2::uuid IS NULL OR workflow_id = $2)"
            " AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT $3)"
            " SELECT s.key AS step, avg(extract(epoch FROM (s.value->>'finished_at')::timestamptz"
            " - (s.value->>'started_at')::timestamptz)) AS seconds FROM recent, jsonb_each(recent.steps) s"
            " WHERE s.value ? 'started_at' AND s.value ? 'finished_at' GROUP BY 1 ORDER BY 1",
            principal.tenant_id, workflow_id, runs)
    return {row["step"]: float(row["seconds"]) for row in rows}


async def history(core: Core, principal: Principal, q: str | None = None, limit: int = 100,
                  before: int | None = None) -> list[asyncpg.Record]:
    """The tenant's events, newest first; `q` matches the event type, the stream or any text in its data."""
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return await conn.fetch(
            "SELECT global_position, stream_id, version, type, data::text AS data, metadata->>'actor' AS actor,"
            " recorded_at FROM events WHERE tenant_id = $1 AND ($2::text IS NULL OR type ILIKE $2"
            " OR stream_id ILIKE $2 OR data::text ILIKE $2) AND ($4::bigint IS NULL OR global_position < $4)"
            " ORDER BY global_position DESC LIMIT $3", principal.tenant_id, _query(q), limit, before)
