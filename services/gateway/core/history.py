"""History use cases (spec A): a user's assistant commands, newest first, filtered and searched; one command's
detail with its steps, results and feedback. Read from the history read model (libs/readmodels/history.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from libs.domain.catalog import assistant_steps
from libs.security.auth import Principal
from services.gateway.core import Core, runs, workflows
from services.gateway.core.errors import NOT_OWNER, ApiError, NotFound

# A's status filter words and the stored statuses each one stands for.
STATUS_FILTER = {"success": "completed", "failed": "failed", "cancelled": "cancelled"}


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    user_id: str
    workflow_id: uuid.UUID
    command: str
    action_id: str | None
    status: str
    last_run_id: uuid.UUID | None
    created_at: datetime
    executed_at: datetime | None
    finished_at: datetime | None


class Page(msgspec.Struct, frozen=True, kw_only=True):
    entries: list[Entry]
    total: int


class Detail(msgspec.Struct, frozen=True, kw_only=True):
    entry: Entry
    steps: list[dict[str, Any]]  # A's step words, each with its status in the latest run
    results: list[dict[str, Any]]  # one per step that produced an output: {id, stepId, output}
    run: runs.Run | None


_COLUMNS = ("id, user_id, workflow_id, command, action_id, status, last_run_id, created_at, executed_at,"
            " finished_at")


def status_filter(word: str | None) -> str | None:
    if word is None:
        return None
    if word not in STATUS_FILTER:
        raise ApiError(400, f"status must be one of: {', '.join(STATUS_FILTER)}", "status")
    return STATUS_FILTER[word]


async def list_page(core: Core, principal: Principal, *, limit: int = 20, offset: int = 0, status: str | None = None,
                    search: str | None = None, start: datetime | None = None, end: datetime | None = None) -> Page:
    """The caller's commands, newest first, with the total of the filter.

    Only the filters given are in the SQL (placeholders only), so each shape of query gets a plan of its own
    that uses its index; a generic plan of "$n IS NULL OR ..." would not."""
    if start is not None and end is not None and start > end:
        raise ApiError(400, "startDate must not be after endDate", "startDate")
    wanted = status_filter(status)
    text = (search or "").strip() or None
    filters, values = [], []
    for clause, value in (("status = ${}", wanted), ("created_at >= ${}", start), ("created_at <= ${}", end)):
        if value is not None:
            values.append(value)
            filters.append(clause.format(len(values) + 2))
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        if text is not None:
            rows, total = await _searched(conn, principal, text, filters, values, limit, offset)
        else:
            condition = " AND ".join(["tenant_id = $1", "user_id = $2", *filters])
            args = [principal.tenant_id, principal.user_id, *values]
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM history WHERE {condition}"
                                    f" ORDER BY created_at DESC, id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
                                    *args, limit, offset)
            if start is None and end is None:  # the kept per-user totals
                total = await conn.fetchval(
                    "SELECT coalesce(sum(n), 0)::bigint FROM history_counts WHERE tenant_id = $1 AND user_id = $2"
                    " AND ($3::text IS NULL OR status = $3)", principal.tenant_id, principal.user_id, wanted)
            else:
                total = await conn.fetchval(f"SELECT count(*) FROM history WHERE {condition}", *args)
    return Page(entries=[Entry(**dict(r)) for r in rows], total=total)


async def _searched(conn: asyncpg.Connection, principal: Principal, text: str, filters: list[str], values: list,
                    limit: int, offset: int) -> tuple[list, int]:
    """A full-text page and its total from one call of history_search (why a function: migration 020), then
    the page's rows by id."""
    n = len(values) + 2
    found = await conn.fetchrow(
        "WITH m AS MATERIALIZED (SELECT id, created_at FROM history_search($1, $2)"
        f" WHERE {' AND '.join(filters) or 'true'})"
        f" SELECT (SELECT count(*) FROM m) AS total, ARRAY(SELECT id FROM m ORDER BY created_at DESC, id"
        f" LIMIT ${n + 1} OFFSET ${n + 2}) AS ids", principal.user_id, text, *values, limit, offset)
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM history WHERE tenant_id = $1 AND user_id = $2 AND id = ANY($3)"
                            " ORDER BY created_at DESC, id", principal.tenant_id, principal.user_id, found["ids"])
    return rows, found["total"]


async def _entry(conn: asyncpg.Connection, principal: Principal, entry_id: uuid.UUID, field: str | None) -> Entry:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM history WHERE tenant_id = $1 AND id = $2",
                              principal.tenant_id, entry_id)
    if row is None:
        raise NotFound("History entry", field)
    if row["user_id"] != principal.user_id:
        raise ApiError(403, "This history entry belongs to another user", field, code=NOT_OWNER)
    return Entry(**dict(row))


async def get(core: Core, principal: Principal, entry_id: uuid.UUID, field: str | None = None) -> Entry:
    """The caller's own history entry: another tenant's is unknown (404), another user's is 403."""
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return await _entry(conn, principal, entry_id, field)


async def detail(core: Core, principal: Principal, entry_id: uuid.UUID) -> Detail:
    entry = await get(core, principal, entry_id)
    workflow = await workflows.get(core, principal, entry.workflow_id)
    run = None if entry.last_run_id is None else await runs.find(core, principal.tenant_id, entry.last_run_id)
    states = run.steps if run is not None else {}
    steps = [{**step, "status": (states.get(step["id"]) or {}).get("status", "pending")}
             for step in assistant_steps(workflow.definition)]
    results = [{"id": step_id, "stepId": step_id, "output": state["output"]}
               for step_id, state in states.items() if isinstance(state, dict) and "output" in state]
    return Detail(entry=entry, steps=steps, results=results, run=run)
