"""Inline projections: read models written in the append transaction, rebuildable from the log."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from libs.events.projections import runs, schedules, workflows
from libs.events.store import RecordedEvent, read_all

_BY_CATEGORY = {"workflow": workflows.project, "run": runs.project, "schedule": schedules.project}
READ_MODEL_TABLES = ("workflows", "runs", "approval_tokens_used", "schedules", "schedule_occurrences")


async def project(conn: asyncpg.Connection, recorded: Sequence[RecordedEvent]) -> None:
    for rec in recorded:
        handler = _BY_CATEGORY.get(rec.category)
        if handler is not None:
            await handler(conn, rec)


async def rebuild(conn: asyncpg.Connection, batch: int = 1000) -> int:
    """Empty the read models and replay the whole log into them, in one transaction.

    Needs a connection that bypasses row-level security (all tenants). Readers keep seeing the old
    rows until the transaction commits.
    """
    replayed = 0
    async with conn.transaction():
        for table in READ_MODEL_TABLES:
            await conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        position = 0
        while chunk := await read_all(conn, position, batch):
            await project(conn, chunk)
            position = chunk[-1].global_position
            replayed += len(chunk)
    return replayed


__all__ = ["READ_MODEL_TABLES", "project", "rebuild"]
