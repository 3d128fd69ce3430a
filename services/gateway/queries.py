"""Read-model queries. Each runs in a tenant transaction, so row-level security backs the WHERE clauses."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg
import msgspec

# Canonical run status -> the v2 contract's word (DESIGN section 5).
V2_RUN_STATUS = {
    "pending": "running",
    "running": "running",
    "awaiting_approval": "running",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "terminated",
}
V2_STATUS_FILTER = {
    "running": ["pending", "running", "awaiting_approval"],
    "completed": ["completed"],
    "failed": ["failed"],
    "terminated": ["cancelled"],
}


def iso(value: datetime | None) -> str | None:
    """The contracts' timestamp form: UTC, millisecond precision, `Z` suffix."""
    if value is None:
        return None
    utc = value.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _json(raw: str | None) -> Any:
    return None if raw is None else msgspec.json.decode(raw)


def workflow_json(row: asyncpg.Record, *, with_definition: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(row["id"]),
        "customer_id": row["tenant_id"],
        "name": row["name"],
        "description": row["description"],
    }
    if with_definition:
        body["definition"] = _json(row["definition"])
    body.update(
        version=row["version"],
        status=row["status"],
        created_by=row["created_by"],
        created_at=iso(row["created_at"]),
        updated_at=iso(row["updated_at"]),
    )
    return body


def run_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "workflow_id": str(row["workflow_id"]),
        "status": V2_RUN_STATUS.get(row["status"], row["status"]),
        "inputs": _json(row["inputs"]),
        "outputs": _json(row["outputs"]),
        "error": row["error"],
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
    }


_WORKFLOW_COLUMNS = (
    "id, tenant_id, name, description, definition::text AS definition, version, status, created_by,"
    " created_at, updated_at, stream_version"
)
_RUN_COLUMNS = (
    "id, workflow_id, status, inputs::text AS inputs, outputs::text AS outputs, error, steps::text AS steps,"
    " started_at, finished_at"
)


async def get_workflow(conn: asyncpg.Connection, tenant_id: str, workflow_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE tenant_id = $1 AND id = $2", tenant_id, workflow_id
    )


async def list_workflows(
    conn: asyncpg.Connection, tenant_id: str, status: str | None, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    rows = await conn.fetch(
        f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)"
        " ORDER BY created_at DESC, id LIMIT $3 OFFSET $4",
        tenant_id, status, limit, offset,
    )
    total = await conn.fetchval(
        "SELECT count(*) FROM workflows WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)", tenant_id, status
    )
    return rows, total


async def get_run(
    conn: asyncpg.Connection, tenant_id: str, workflow_id: uuid.UUID, run_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE tenant_id = $1 AND workflow_id = $2 AND id = $3",
        tenant_id, workflow_id, run_id,
    )


async def list_runs(
    conn: asyncpg.Connection, tenant_id: str, workflow_id: uuid.UUID, statuses: list[str] | None, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    where = "tenant_id = $1 AND workflow_id = $2 AND ($3::text[] IS NULL OR status = ANY($3))"
    rows = await conn.fetch(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE {where} ORDER BY started_at DESC, id LIMIT $4 OFFSET $5",
        tenant_id, workflow_id, statuses, limit, offset,
    )
    total = await conn.fetchval(f"SELECT count(*) FROM runs WHERE {where}", tenant_id, workflow_id, statuses)
    return rows, total
