"""v2 schedule routes (spec E): create, list, get, patch, delete, and each schedule's occurrence history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, patch, post

from libs.domain import cron
from libs.security.auth import Principal
from libs.events.errors import DomainError
from libs.domain.schedule_state import check_settings
from libs.events.schemas import Outcome
from libs.events.schemas.schedule import CreateSchedule, DeleteSchedule, UpdateSchedule
from services.gateway import queries, runs
from services.gateway.bodies import decode_body
from services.gateway.commands import entity_id, now
from services.gateway.errors import ApiError
from services.gateway.v2.common import _ctx, _int_param, _uuid, _workflow_or_404

UNSET: Any = msgspec.UNSET
Cron = Annotated[str, msgspec.Meta(max_length=200)]
Zone = Annotated[str, msgspec.Meta(max_length=64)]
WINDOW_COUNT_CAP = 1000
OCCURRENCE_STATUSES = ("fired", "skipped", "missed", "buffered", "queued")


class CreateScheduleBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    cron_expression: Cron
    timezone: Zone = "UTC"
    inputs: dict[str, Any] = {}
    missed_execution_policy: str = "run_immediately"
    overlap_policy: str = "skip"
    max_queued: int = 10
    pause_after_failures: int = 0
    enabled: bool = True


class PatchScheduleBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    cron_expression: Cron | msgspec.UnsetType = UNSET
    timezone: Zone | msgspec.UnsetType = UNSET
    inputs: dict[str, Any] | msgspec.UnsetType = UNSET
    missed_execution_policy: str | msgspec.UnsetType = UNSET
    overlap_policy: str | msgspec.UnsetType = UNSET
    max_queued: int | msgspec.UnsetType = UNSET
    pause_after_failures: int | msgspec.UnsetType = UNSET
    enabled: bool | msgspec.UnsetType = UNSET


_COLUMNS = (
    "id, workflow_id, cron_expression, timezone, inputs::text AS inputs, missed_execution_policy, overlap_policy,"
    " max_queued, pause_after_failures, enabled, paused_reason, source, next_run_at, last_run_at, last_run_id,"
    " consecutive_failures, created_at, updated_at"
)


def schedule_json(row) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "workflow_id": str(row["workflow_id"]), "cron_expression": row["cron_expression"],
        "timezone": row["timezone"], "inputs": msgspec.json.decode(row["inputs"]),
        "missed_execution_policy": row["missed_execution_policy"], "overlap_policy": row["overlap_policy"],
        "max_queued": row["max_queued"], "pause_after_failures": row["pause_after_failures"],
        "enabled": row["enabled"], "paused_reason": row["paused_reason"], "source": row["source"],
        "next_run_at": queries.iso(row["next_run_at"]), "last_run_at": queries.iso(row["last_run_at"]),
        "last_run_id": str(row["last_run_id"]) if row["last_run_id"] else None,
        "consecutive_failures": row["consecutive_failures"],
        "created_at": queries.iso(row["created_at"]), "updated_at": queries.iso(row["updated_at"]),
    }


def _window_json(row) -> dict[str, Any]:
    """A window (every occurrence in (after, through]): its bounds and how many occurrences it held."""
    found = cron.occurrences(cron.parse(row["cron_expression"]), cron.zone(row["timezone"]), row["after_at"],
                             row["through_at"], limit=WINDOW_COUNT_CAP + 1)
    return {"after": queries.iso(row["after_at"]), "through": queries.iso(row["through_at"]),
            "first": queries.iso(row["occurrence_at"]), "last": queries.iso(row["last_at"]),
            "count": min(len(found), WINDOW_COUNT_CAP), "more": len(found) > WINDOW_COUNT_CAP}


def occurrence_json(row) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scheduled_for": queries.iso(row["occurrence_at"]), "status": row["status"], "reason": row["reason"],
        "detail": row["detail"], "trigger": row["trigger"], "policy": row["policy"],
        "run_id": str(row["run_id"]) if row["run_id"] else None, "run_status": row["run_status"],
        "recorded_at": queries.iso(row["recorded_at"]), "updated_at": queries.iso(row["updated_at"]),
    }
    if row["through_at"] is not None:
        body["window"] = _window_json(row)
    return body


def _settings_ok(values: dict[str, Any]) -> None:
    try:
        check_settings(values)
    except DomainError as exc:
        raise ApiError(exc.status, exc.message, exc.field) from None


def _inputs_ok(workflow_row, inputs: dict[str, Any]) -> None:
    """The inputs every scheduled run will carry, checked against the workflow's input schema now."""
    runs.prepare_inputs(msgspec.json.decode(workflow_row["definition"]), inputs)


async def _schedule_row(request: Request, principal: Principal, workflow_id: uuid.UUID, schedule_id: uuid.UUID):
    ctx, _ = _ctx(request)
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        return await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM schedules WHERE tenant_id = $1 AND workflow_id = $2 AND id = $3",  # noqa: S608
            principal.tenant_id, workflow_id, schedule_id)


async def _schedule_or_404(request: Request, principal: Principal, workflow_id: str, schedule_id: str):
    workflow = await _workflow_or_404(request, principal, workflow_id)
    row = await _schedule_row(request, principal, workflow["id"], _uuid(schedule_id, "Schedule"))
    if row is None:
        raise ApiError(404, "Schedule not found")
    return workflow, row


def _render(request: Request, principal: Principal, workflow_id: uuid.UUID, status: int):
    async def render(outcome: Outcome):
        row = await _schedule_row(request, principal, workflow_id, uuid.UUID(outcome.stream_id.split("-", 1)[1]))
        if row is None:  # deleted again between commit and read
            raise ApiError(404, "Schedule not found")
        return status, {"success": True, "schedule": schedule_json(row)}

    return render


@post("/{workflow_id:str}/schedules")
async def create_schedule(request: Request, principal: Principal, workflow_id: str) -> Response:
    raw = await request.body()
    body = decode_body(raw, CreateScheduleBody)
    values = msgspec.structs.asdict(body)
    _settings_ok(values)
    workflow = await _workflow_or_404(request, principal, workflow_id)
    _inputs_ok(workflow, body.inputs)
    _, dispatcher = _ctx(request)

    def make(command_id: uuid.UUID) -> CreateSchedule:
        return CreateSchedule(schedule_id=entity_id(command_id), workflow_id=workflow["id"],
                              created_by=principal.user_id, at=now(), **values)

    return await dispatcher.dispatch(request, principal, "scheduler", make,
                                     _render(request, principal, workflow["id"], 201), raw)


@get("/{workflow_id:str}/schedules")
async def list_schedules(request: Request, principal: Principal, workflow_id: str) -> dict[str, Any]:
    workflow = await _workflow_or_404(request, principal, workflow_id)
    ctx, _ = _ctx(request)
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM schedules WHERE tenant_id = $1 AND workflow_id = $2"  # noqa: S608
            " ORDER BY created_at, id", principal.tenant_id, workflow["id"])
    return {"success": True, "schedules": [schedule_json(r) for r in rows], "count": len(rows)}


@get("/{workflow_id:str}/schedules/{schedule_id:str}")
async def get_schedule(request: Request, principal: Principal, workflow_id: str, schedule_id: str) -> dict[str, Any]:
    _, row = await _schedule_or_404(request, principal, workflow_id, schedule_id)
    return {"success": True, "schedule": schedule_json(row)}


@patch("/{workflow_id:str}/schedules/{schedule_id:str}")
async def patch_schedule(request: Request, principal: Principal, workflow_id: str, schedule_id: str) -> Response:
    raw = await request.body()
    body = decode_body(raw, PatchScheduleBody)
    changed = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not UNSET}
    _settings_ok(changed)
    workflow, row = await _schedule_or_404(request, principal, workflow_id, schedule_id)
    if not changed:  # nothing to change: no event, just the schedule as it is
        return Response({"success": True, "schedule": schedule_json(row)}, status_code=200)
    if "inputs" in changed:
        _inputs_ok(workflow, changed["inputs"])
    _, dispatcher = _ctx(request)

    def make(_: uuid.UUID) -> UpdateSchedule:
        return UpdateSchedule(schedule_id=row["id"], workflow_id=workflow["id"], at=now(), **changed)

    return await dispatcher.dispatch(request, principal, "scheduler", make,
                                     _render(request, principal, workflow["id"], 200), raw)


@delete("/{workflow_id:str}/schedules/{schedule_id:str}", status_code=200)
async def delete_schedule(request: Request, principal: Principal, workflow_id: str, schedule_id: str) -> Response:
    workflow, row = await _schedule_or_404(request, principal, workflow_id, schedule_id)
    _, dispatcher = _ctx(request)

    async def render(_: Outcome):
        return 200, {"success": True, "message": "Schedule deleted successfully"}

    return await dispatcher.dispatch(request, principal, "scheduler", lambda _: DeleteSchedule(
        schedule_id=row["id"], workflow_id=workflow["id"], at=now()), render)


def _at_param(request: Request) -> datetime | None:
    raw = request.query_params.get("at")
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise ApiError(400, "at must be an ISO 8601 time with a zone, e.g. 2026-03-23T13:00:00Z", "at")
    return value


@get("/{workflow_id:str}/schedules/{schedule_id:str}/occurrences")
async def list_occurrences(request: Request, principal: Principal, workflow_id: str,
                           schedule_id: str) -> dict[str, Any]:
    """Every occurrence's fate, newest first. `?at=<time>` answers "why didn't it run then?": the entry for
    that occurrence, or the window that covers it. `?status=` filters."""
    status = request.query_params.get("status")
    if status is not None and status not in OCCURRENCE_STATUSES:
        raise ApiError(400, f"status must be one of: {', '.join(OCCURRENCE_STATUSES)}", "status")
    at = _at_param(request)
    limit = _int_param(request, "limit", 50, 1, 500)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    _, schedule = await _schedule_or_404(request, principal, workflow_id, schedule_id)
    ctx, _ = _ctx(request)
    where = ("tenant_id = $1 AND schedule_id = $2 AND ($3::text IS NULL OR status = $3) AND ($4::timestamptz IS NULL"
             " OR occurrence_at = $4 OR (after_at < $4 AND through_at >= $4))")
    args = (principal.tenant_id, schedule["id"], status, at)
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(
            f"SELECT * FROM schedule_occurrences WHERE {where} ORDER BY occurrence_at DESC, seq DESC"  # noqa: S608
            " LIMIT $5 OFFSET $6", *args, limit, offset)
        total = await conn.fetchval(f"SELECT count(*) FROM schedule_occurrences WHERE {where}", *args)  # noqa: S608
    return {"success": True, "schedule_id": str(schedule["id"]), "next_run_at": queries.iso(schedule["next_run_at"]),
            "enabled": schedule["enabled"], "paused_reason": schedule["paused_reason"],
            "occurrences": [occurrence_json(r) for r in rows], "count": total}
