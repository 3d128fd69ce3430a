"""Schedule use cases: read a workflow's schedules and their occurrence history; check settings and inputs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from libs.domain import cron
from libs.domain import inputs as inputs_rule
from libs.domain.schedule_state import check_settings
from libs.events.errors import DomainError
from libs.events.schemas.schedule import CreateSchedule, UpdateSchedule
from libs.security.auth import Principal
from services.gateway.commands import entity_id
from services.gateway.core import Core
from services.gateway.core.commands import refused, send
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


def preview(cron_expression: str, timezone: str, count: int = 5, after: datetime | None = None) -> list[datetime]:
    """The next `count` occurrences after `after` (now), as aware datetimes in the schedule's zone, with the
    scheduler's DST rules (libs/domain/cron.py); 400 naming the field for a bad expression or zone."""
    check({"cron_expression": cron_expression, "timezone": timezone})
    expression, tz = cron.parse(cron_expression), cron.zone(timezone)
    found, cursor = [], after or datetime.now(UTC)
    while len(found) < count:
        cursor = cron.next_after(expression, tz, cursor)
        if cursor is None:
            break
        found.append(cursor.astimezone(tz))
    return found


async def list_all(core: Core, principal: Principal) -> list[asyncpg.Record]:
    """Every schedule of the tenant, with its workflow's name."""
    columns = ", ".join(f"s.{c.strip()}" for c in _COLUMNS.split(",") if " AS " not in c)
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return await conn.fetch(
            f"SELECT {columns}, s.inputs::text AS inputs, w.name FROM schedules s JOIN workflows w"  # noqa: S608
            " ON w.tenant_id = s.tenant_id AND w.id = s.workflow_id WHERE s.tenant_id = $1"
            " ORDER BY s.created_at, s.id", principal.tenant_id)


async def save(core: Core, principal: Principal, workflow: Workflow, values: dict[str, Any],
               schedule_id: uuid.UUID | None = None) -> uuid.UUID:
    """Create (no `schedule_id`) or update a schedule after the same checks as the v2 API; its id."""
    check(values)
    check(values, workflow)
    at = datetime.now(UTC)
    if schedule_id is None:
        outcome = await send(core, principal, "scheduler", lambda command_id: CreateSchedule(
            schedule_id=entity_id(command_id), workflow_id=workflow.id, created_by=principal.user_id, at=at,
            **values))
    else:
        outcome = await send(core, principal, "scheduler", lambda _: UpdateSchedule(
            schedule_id=schedule_id, workflow_id=workflow.id, at=at, **values))
    error = refused(outcome)
    if error is not None:
        raise error
    return uuid.UUID(outcome.stream_id.split("-", 1)[1])
