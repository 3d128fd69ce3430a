"""Read models (projections): tables written in the append transaction, rebuildable from the log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from libs.readmodels import history, runs, schedules, workflows
from libs.events.order import read_snapshot
from libs.events.store import RecordedEvent

Handler = Callable[[asyncpg.Connection, Sequence[RecordedEvent]], Awaitable[None]]


def _each(project_one: Callable[[asyncpg.Connection, RecordedEvent], Awaitable[None]]) -> Handler:
    async def project_all(conn: asyncpg.Connection, recorded: Sequence[RecordedEvent]) -> None:
        for rec in recorded:
            await project_one(conn, rec)

    return project_all


# Each handler gets the consecutive events of its category (runs merges a batch's step changes).
_BY_CATEGORY: dict[str, Handler] = {"workflow": _each(workflows.project), "run": runs.project,
                                    "schedule": _each(schedules.project)}
READ_MODEL_TABLES = ("workflows", "runs", "approval_tokens_used", "schedules", "schedule_occurrences", "history",
                     "history_counts")


# Read models fed by events of several categories, after the category's own (history follows workflows and runs).
_ALSO: dict[str, Handler] = {"workflow": history.project_workflow, "run": history.project_runs}


async def project(conn: asyncpg.Connection, recorded: Sequence[RecordedEvent]) -> None:
    start = 0
    while start < len(recorded):
        category = recorded[start].category
        end = start + 1
        while end < len(recorded) and recorded[end].category == category:
            end += 1
        handler = _BY_CATEGORY.get(category)
        if handler is not None:
            await handler(conn, recorded[start:end])
        also = _ALSO.get(category)
        if also is not None:
            await also(conn, recorded[start:end])
        start = end


async def rebuild(conn: asyncpg.Connection, batch: int = 1000) -> int:
    """Empty the read models and replay the whole log into them, in one transaction.

    Needs a connection that bypasses row-level security (all tenants). Readers keep seeing the old
    rows until the transaction commits.
    """
    replayed = 0
    # One REPEATABLE READ snapshot: the log as of its first statement, read in the global order's (xid, position)
    # pairs (docs/decisions/0032). Nothing commits into a fixed snapshot, so no page can skip a late committer.
    async with conn.transaction(isolation="repeatable_read"):
        for table in READ_MODEL_TABLES:
            await conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        cursor = (0, 0)
        while chunk := await read_snapshot(conn, cursor, batch):
            await project(conn, chunk)
            cursor = chunk[-1].cursor
            replayed += len(chunk)
    return replayed


__all__ = ["READ_MODEL_TABLES", "project", "rebuild"]
