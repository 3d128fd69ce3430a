"""Schedule use cases: read a workflow's schedules and their occurrence history; check settings and inputs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from libs.domain import inputs as inputs_rule
from libs.domain.schedule_state import check_settings
from libs.events.errors import DomainError
from libs.security.auth import Principal
from services.gateway.core import Core
from services.gateway.core.errors import ApiError, NotFound
from services.gateway.core.workflows import Workflow

OCCURRENCE_STATUSES = ("fired", "skipped", "missed", "buffered", "queued")
_COLUMNS = (
    "id, workflow_id, cron_expression, timezone, inputs::text AS inputs, missed_execution_policy, overlap_policy,"
    " max_queued, pause_after_failures, enabled, paused_reason, source, next_run_at, last_run_at, last_run_id,"
    " consecutive_failures, created_at, updated_at"
)


def check(values: dict[str, Any], workflow: Workflow | None = None) -> None:
    """Cron, zone and policies valid; the inputs every scheduled run will carry valid for the workflow now."""
    try:
        check_settings(values)
        if workflow is not None and "inputs" in values:
            inputs_rule.prepare_inputs(workflow.definition, values["inputs"])
    except DomainError as exc:
        raise ApiError(exc.status, exc.message, exc.field) from None


async def find(core: Core, principal: Principal, workflow_id: uuid.UUID, schedule_id: uuid.UUID
               ) -> asyncpg.Record | None:
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM schedules WHERE tenant_id = $1 AND workflow_id = $2 AND id = $3",  # noqa: S608
            principal.tenant_id, workflow_id, schedule_id)


async def get(core: Core, principal: Principal, workflow_id: uuid.UUID, schedule_id: uuid.UUID) -> asyncpg.Record:
    row = await find(core, principal, workflow_id, schedule_id)
    if row is None:
        raise NotFound("Schedule")
    return row


async def list_for(core: Core, principal: Principal, workflow_id: uuid.UUID) -> list[asyncpg.Record]:
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return await conn.fetch(
            f"SELECT {_COLUMNS} FROM schedules WHERE tenant_id = $1 AND workflow_id = $2"  # noqa: S608
            " ORDER BY created_at, id", principal.tenant_id, workflow_id)


async def occurrences(core: Core, principal: Principal, schedule_id: uuid.UUID, *, status: str | None,
                      at: datetime | None, limit: int, offset: int) -> tuple[list[asyncpg.Record], int]:
    """Every occurrence's fate, newest first; `at` picks the entry for that instant or the window covering it."""
    where = ("tenant_id = $1 AND schedule_id = $2 AND ($3::text IS NULL OR status = $3) AND ($4::timestamptz IS NULL"
             " OR occurrence_at = $4 OR (after_at < $4 AND through_at >= $4))")
    args = (principal.tenant_id, schedule_id, status, at)
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(
            f"SELECT * FROM schedule_occurrences WHERE {where} ORDER BY occurrence_at DESC, seq DESC"  # noqa: S608
            " LIMIT $5 OFFSET $6", *args, limit, offset)
        total = await conn.fetchval(f"SELECT count(*) FROM schedule_occurrences WHERE {where}", *args)  # noqa: S608
    return rows, total
