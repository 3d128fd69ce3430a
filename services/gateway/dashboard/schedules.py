"""Dashboard pages for schedules: list, create and edit with the next five occurrences previewed in the
schedule's time zone, and each schedule's occurrence history with the reasons."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from libs.security.auth import Principal
from services.gateway.core import Core, schedules, workflows
from services.gateway.core.errors import ApiError, NotFound
from services.gateway.dashboard import forms
from services.gateway.dashboard.render import html, page, see_other

FIELDS = ("workflow_id", "cron_expression", "timezone", "inputs", "missed_execution_policy", "overlap_policy",
          "enabled")
MISSED = ("run_immediately", "skip", "queue")
OVERLAP = ("skip", "buffer_one", "allow")


def _preview(cron_expression: str, timezone: str) -> tuple[list[Any], str]:
    if not cron_expression.strip():
        return [], ""
    try:
        return schedules.preview(cron_expression.strip(), timezone.strip() or "UTC"), ""
    except ApiError as exc:
        return [], exc.message


async def _list(request: Request, principal: Principal, core: Core, *, errors: dict[str, str] | None = None,
                values: dict[str, str] | None = None, code: int = 200) -> Response:
    values = values or {}
    found, _ = await workflows.list_page(core, principal, limit=500)
    upcoming, _ = _preview(values.get("cron_expression", ""), values.get("timezone", "UTC"))
    return page(request, "schedules.html", code, title="Schedules", schedules=await schedules.list_all(core, principal),
                workflows=[w for w in found if w.status != "archived"], errors=errors or {}, values=values,
                upcoming=upcoming, missed=MISSED, overlap=OVERLAP)


@get("/schedules")
async def list_schedules(request: Request, principal: NamedDependency[Principal],
                         core: NamedDependency[Core]) -> Response:
    return await _list(request, principal, core)


@get("/schedules/preview")
async def preview(request: Request, principal: NamedDependency[Principal],
                  cron_expression: Annotated[str, QueryParameter(max_length=200)] = "",
                  timezone: Annotated[str, QueryParameter(max_length=64)] = "UTC") -> Response:
    """The next five occurrences as a fragment (htmx, as the person types)."""
    upcoming, error = _preview(cron_expression, timezone)
    return Response(html("schedule_preview.html", request, upcoming=upcoming, error=error, timezone=timezone),
                    media_type="text/html")


def _values(form: forms.Form) -> dict[str, Any]:
    try:
        inputs = msgspec.json.decode(form.get("inputs", "").strip().encode() or b"{}")
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"inputs are not valid JSON: {exc}", "inputs") from None
    if not isinstance(inputs, dict):
        raise ApiError(400, "inputs must be a JSON object", "inputs")
    return {"cron_expression": form.get("cron_expression").strip(), "timezone": form.get("timezone").strip() or "UTC",
            "inputs": inputs, "missed_execution_policy": form.get("missed_execution_policy", "run_immediately"),
            "overlap_policy": form.get("overlap_policy", "skip"), "enabled": form.get("enabled") == "on"}


async def _workflow(core: Core, principal: Principal, raw: str) -> workflows.Workflow:
    try:
        return await workflows.get(core, principal, uuid.UUID(raw), "workflow_id")
    except ValueError:
        raise ApiError(400, "Choose a workflow", "workflow_id") from None


@post("/schedules")
async def create_schedule(request: Request, principal: NamedDependency[Principal],
                          core: NamedDependency[Core]) -> Response:
    form = await forms.read(request)
    try:
        values = _values(form)
        workflow = await _workflow(core, principal, form.get("workflow_id"))
        schedule_id = await schedules.save(core, principal, workflow, values)
    except ApiError as exc:
        return await _list(request, principal, core, errors=forms.errors_of(exc, FIELDS, "cron_expression"),
                           values=form.values, code=forms.status_of(exc))
    return see_other(f"/dashboard/schedules/{workflow.id}/{schedule_id}")


async def _detail(request: Request, principal: Principal, core: Core, workflow_id: uuid.UUID,
                  schedule_id: uuid.UUID, *, errors: dict[str, str] | None = None,
                  values: dict[str, str] | None = None, code: int = 200) -> Response:
    workflow = await workflows.get(core, principal, workflow_id)
    row = await schedules.get(core, principal, workflow.id, schedule_id)
    current = {"cron_expression": row["cron_expression"], "timezone": row["timezone"], "inputs": row["inputs"],
               "missed_execution_policy": row["missed_execution_policy"], "overlap_policy": row["overlap_policy"],
               "enabled": "on" if row["enabled"] else ""}
    shown = values or current
    upcoming, _ = _preview(shown.get("cron_expression", ""), shown.get("timezone", "UTC"))
    history, total = await schedules.occurrences(core, principal, row["id"], status=None, at=None, limit=50, offset=0)
    return page(request, "schedule.html", code, title=f"Schedule of {workflow.name}", workflow=workflow, schedule=row,
                values=shown, errors=errors or {}, upcoming=upcoming, history=history, total=total, missed=MISSED,
                overlap=OVERLAP)


@get("/schedules/{workflow_id:uuid}/{schedule_id:uuid}")
async def schedule_detail(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                          workflow_id: FromPath[uuid.UUID], schedule_id: FromPath[uuid.UUID]) -> Response:
    return await _detail(request, principal, core, workflow_id, schedule_id)


@post("/schedules/{workflow_id:uuid}/{schedule_id:uuid}")
async def update_schedule(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                          workflow_id: FromPath[uuid.UUID], schedule_id: FromPath[uuid.UUID]) -> Response:
    form = await forms.read(request)
    workflow = await workflows.get(core, principal, workflow_id)
    if await schedules.find(core, principal, workflow.id, schedule_id) is None:
        raise NotFound("Schedule")
    try:
        await schedules.save(core, principal, workflow, _values(form), schedule_id)
    except ApiError as exc:
        return await _detail(request, principal, core, workflow.id, schedule_id, values=form.values,
                             errors=forms.errors_of(exc, FIELDS, "cron_expression"), code=forms.status_of(exc))
    return see_other(f"/dashboard/schedules/{workflow.id}/{schedule_id}")


route_handlers = [list_schedules, preview, create_schedule, schedule_detail, update_schedule]
