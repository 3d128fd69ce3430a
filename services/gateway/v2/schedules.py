"""v2 schedule routes (spec E): create, list, get, patch, delete, and each schedule's occurrence history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from libs.domain import cron
from libs.events.schemas import Outcome
from libs.events.schemas.schedule import CreateSchedule, DeleteSchedule, UpdateSchedule
from libs.security.auth import Principal
from services.gateway.shapes import Message, envelope
from services.gateway.commands import entity_id, now
from services.gateway.core import Core, schedules, workflows
from services.gateway.core.errors import ApiError
from services.gateway.errors import V2Error, accepted_response, responses
from services.gateway.timestamps import iso

UNSET: Any = msgspec.UNSET
Cron = Annotated[str, msgspec.Meta(max_length=200)]
Zone = Annotated[str, msgspec.Meta(max_length=64)]
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
WINDOW_COUNT_CAP = 1000
COMMAND = {**responses(V2Error, 404, 409, 422, 429), **accepted_response()}
READ = responses(V2Error, 404, 429)


class CreateScheduleBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    cron_expression: Cron
    timezone: Zone = "UTC"
    inputs: dict[str, Any] = {}
    missed_execution_policy: str = "run_immediately"
    overlap_policy: str = "skip"
    max_queued: Count = 10
    pause_after_failures: Count = 0
    enabled: bool = True


class PatchScheduleBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    cron_expression: Cron | msgspec.UnsetType = UNSET
    timezone: Zone | msgspec.UnsetType = UNSET
    inputs: dict[str, Any] | msgspec.UnsetType = UNSET
    missed_execution_policy: str | msgspec.UnsetType = UNSET
    overlap_policy: str | msgspec.UnsetType = UNSET
    max_queued: Count | msgspec.UnsetType = UNSET
    pause_after_failures: Count | msgspec.UnsetType = UNSET
    enabled: bool | msgspec.UnsetType = UNSET


class ScheduleBody(msgspec.Struct, kw_only=True):
    id: str
    workflow_id: str
    cron_expression: str
    timezone: str
    inputs: dict[str, Any]
    missed_execution_policy: str
    overlap_policy: str
    max_queued: int
    pause_after_failures: int
    enabled: bool
    paused_reason: str | None
    source: str
    next_run_at: str | None
    last_run_at: str | None
    last_run_id: str | None
    consecutive_failures: int
    created_at: str
    updated_at: str


ScheduleEnvelope = envelope("ScheduleEnvelope", __name__, schedule=ScheduleBody)


ScheduleList = envelope("ScheduleList", __name__, schedules=list[ScheduleBody], count=int)


class Window(msgspec.Struct, kw_only=True):
    after: str | None
    through: str | None
    first: str | None
    last: str | None
    count: int
    more: bool


class Occurrence(msgspec.Struct, kw_only=True, omit_defaults=True):
    scheduled_for: str | None
    status: str
    reason: str | None
    detail: str | None
    trigger: str | None
    policy: str | None
    run_id: str | None
    run_status: str | None
    recorded_at: str | None
    updated_at: str | None
    window: Window | None = None


OccurrenceList = envelope("OccurrenceList", __name__, schedule_id=str, next_run_at=str | None, enabled=bool,
                          paused_reason=str | None, occurrences=list[Occurrence], count=int)


def schedule_body(row) -> ScheduleBody:
    return ScheduleBody(
        id=str(row["id"]), workflow_id=str(row["workflow_id"]), cron_expression=row["cron_expression"],
        timezone=row["timezone"], inputs=msgspec.json.decode(row["inputs"]),
        missed_execution_policy=row["missed_execution_policy"], overlap_policy=row["overlap_policy"],
        max_queued=row["max_queued"], pause_after_failures=row["pause_after_failures"], enabled=row["enabled"],
        paused_reason=row["paused_reason"], source=row["source"], next_run_at=iso(row["next_run_at"]),
        last_run_at=iso(row["last_run_at"]), last_run_id=str(row["last_run_id"]) if row["last_run_id"] else None,
        consecutive_failures=row["consecutive_failures"], created_at=iso(row["created_at"]),
        updated_at=iso(row["updated_at"]))


def _window(row) -> Window:
    """A window (every occurrence in (after, through]): its bounds and how many occurrences it held."""
    found = cron.occurrences(cron.parse(row["cron_expression"]), cron.zone(row["timezone"]), row["after_at"],
                             row["through_at"], limit=WINDOW_COUNT_CAP + 1)
    return Window(after=iso(row["after_at"]), through=iso(row["through_at"]), first=iso(row["occurrence_at"]),
                  last=iso(row["last_at"]), count=min(len(found), WINDOW_COUNT_CAP), more=len(found) > WINDOW_COUNT_CAP)


def occurrence(row) -> Occurrence:
    return Occurrence(
        scheduled_for=iso(row["occurrence_at"]), status=row["status"], reason=row["reason"], detail=row["detail"],
        trigger=row["trigger"], policy=row["policy"], run_id=str(row["run_id"]) if row["run_id"] else None,
        run_status=row["run_status"], recorded_at=iso(row["recorded_at"]), updated_at=iso(row["updated_at"]),
        window=_window(row) if row["through_at"] is not None else None)


def _render(core: Core, principal: Principal, workflow_id: uuid.UUID, code: int):
    async def render(outcome: Outcome):
        row = await schedules.get(core, principal, workflow_id, uuid.UUID(outcome.stream_id.split("-", 1)[1]))
        return code, ScheduleEnvelope(success=True, schedule=schedule_body(row))

    return render


@post("/{workflow_id:uuid}/schedules", status_code=201, responses=COMMAND)
async def create_schedule(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                          workflow_id: FromPath[uuid.UUID],
                          data: JSONBody[CreateScheduleBody]) -> Response[ScheduleEnvelope]:
    values = msgspec.structs.asdict(data)
    schedules.check(values)
    workflow = await workflows.get(core, principal, workflow_id)
    schedules.check(values, workflow)

    def make(command_id: uuid.UUID) -> CreateSchedule:
        return CreateSchedule(schedule_id=entity_id(command_id), workflow_id=workflow.id,
                              created_by=principal.user_id, at=now(), **values)

    return await core.dispatcher.dispatch(request, principal, "scheduler", make,
                                          _render(core, principal, workflow.id, 201), await request.body())


@get("/{workflow_id:uuid}/schedules", responses=READ)
async def list_schedules(principal: NamedDependency[Principal], core: NamedDependency[Core],
                         workflow_id: FromPath[uuid.UUID]) -> ScheduleList:
    workflow = await workflows.get(core, principal, workflow_id)
    rows = await schedules.list_for(core, principal, workflow.id)
    return ScheduleList(success=True, schedules=[schedule_body(r) for r in rows], count=len(rows))


async def _pair(core: Core, principal: Principal, workflow_id: uuid.UUID, schedule_id: uuid.UUID):
    workflow = await workflows.get(core, principal, workflow_id)
    return workflow, await schedules.get(core, principal, workflow.id, schedule_id)


@get("/{workflow_id:uuid}/schedules/{schedule_id:uuid}", responses=READ)
async def get_schedule(principal: NamedDependency[Principal], core: NamedDependency[Core],
                       workflow_id: FromPath[uuid.UUID], schedule_id: FromPath[uuid.UUID]) -> ScheduleEnvelope:
    _, row = await _pair(core, principal, workflow_id, schedule_id)
    return ScheduleEnvelope(success=True, schedule=schedule_body(row))


@patch("/{workflow_id:uuid}/schedules/{schedule_id:uuid}", responses=COMMAND)
async def patch_schedule(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                         workflow_id: FromPath[uuid.UUID], schedule_id: FromPath[uuid.UUID],
                         data: JSONBody[PatchScheduleBody]) -> Response[ScheduleEnvelope]:
    changed = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not UNSET}
    schedules.check(changed)
    workflow, row = await _pair(core, principal, workflow_id, schedule_id)
    if not changed:  # nothing to change: no event, just the schedule as it is
        return Response(ScheduleEnvelope(success=True, schedule=schedule_body(row)), status_code=200)
    schedules.check(changed, workflow)

    def make(_: uuid.UUID) -> UpdateSchedule:
        return UpdateSchedule(schedule_id=row["id"], workflow_id=workflow.id, at=now(), **changed)

    return await core.dispatcher.dispatch(request, principal, "scheduler", make,
                                          _render(core, principal, workflow.id, 200), await request.body())


@delete("/{workflow_id:uuid}/schedules/{schedule_id:uuid}", status_code=200, responses=COMMAND)
async def delete_schedule(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                          workflow_id: FromPath[uuid.UUID], schedule_id: FromPath[uuid.UUID]) -> Response[Message]:
    workflow, row = await _pair(core, principal, workflow_id, schedule_id)

    async def render(_: Outcome):
        return 200, Message(success=True, message="Schedule deleted successfully")

    return await core.dispatcher.dispatch(request, principal, "scheduler", lambda _: DeleteSchedule(
        schedule_id=row["id"], workflow_id=workflow.id, at=now()), render)


def _instant(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise ApiError(400, "at must be an ISO 8601 time with a zone, e.g. 2026-03-23T13:00:00Z", "at")
    return value


@get("/{workflow_id:uuid}/schedules/{schedule_id:uuid}/occurrences", responses=READ)
async def list_occurrences(
    principal: NamedDependency[Principal], core: NamedDependency[Core], workflow_id: FromPath[uuid.UUID],
    schedule_id: FromPath[uuid.UUID],
    status: FromQuery[Literal["fired", "skipped", "missed", "buffered", "queued"] | None] = None,
    at: Annotated[str | None, QueryParameter(description="ISO 8601 time with a zone: why didn't it run then?")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0,
) -> OccurrenceList:
    """Every occurrence's fate, newest first. `?at=<time>` answers "why didn't it run then?": the entry for
    that occurrence, or the window that covers it. `?status=` filters."""
    instant = _instant(at)
    _, schedule = await _pair(core, principal, workflow_id, schedule_id)
    rows, total = await schedules.occurrences(core, principal, schedule["id"], status=status, at=instant,
                                              limit=limit, offset=offset)
    return OccurrenceList(success=True, schedule_id=str(schedule["id"]), next_run_at=iso(schedule["next_run_at"]),
                          enabled=schedule["enabled"], paused_reason=schedule["paused_reason"],
                          occurrences=[occurrence(r) for r in rows], count=total)

