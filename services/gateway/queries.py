"""Rendering helpers every surface shares, and the two existence checks the streams make."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import asyncpg


def iso(value: datetime | None) -> str | None:
    """The contracts' timestamp form: UTC, millisecond precision, `Z` suffix."""
    if value is None:
        return None
    utc = value.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


async def get_workflow(conn: asyncpg.Connection, tenant_id: str, workflow_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT id FROM workflows WHERE tenant_id = $1 AND id = $2", tenant_id, workflow_id)


async def get_run(conn: asyncpg.Connection, tenant_id: str, workflow_id: uuid.UUID, run_id: uuid.UUID
                  ) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT id FROM runs WHERE tenant_id = $1 AND workflow_id = $2 AND id = $3",
                               tenant_id, workflow_id, run_id)
