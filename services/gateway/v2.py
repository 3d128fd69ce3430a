"""The v2 tenant API (spec E): workflow CRUD, execute, runs. A thin adapter over commands and read models."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, patch, post
from litestar.di import Provide

from libs.events.auth import Principal
from libs.events.definition import validate_definition
from libs.events.errors import DomainError
from libs.events.run_view import RunView
from libs.events.schemas import Outcome
from libs.events.schemas.plan import ParseInstruction
from libs.events.schemas.run import TerminateRun
from libs.events.schemas.workflow import CreateWorkflow, DeleteWorkflow, UpdateWorkflow
from services.gateway import queries, runs
from services.gateway.auth import authenticate
from services.gateway.bodies import CreateWorkflowBody, ExecuteBody, ParseBody, PatchWorkflowBody, decode_body
from services.gateway.commands import Dispatcher, entity_id, now
from services.gateway.errors import ApiError
from services.gateway.plans import plan_event

WORKFLOW_STATUSES = ("active", "archived")


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, f"{what} not found") from None  # a malformed id can name nothing


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", name) from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}", name)
    return value


def _check_definition(definition: Any) -> None:
    try:
        validate_definition(definition)
    except DomainError as exc:
        raise ApiError(exc.status, exc.message, exc.field) from exc


def _ctx(request: Request):
    return request.app.state.ctx, request.app.state.dispatcher


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {
        "status": "ok",
        "service": "workflows-api-v2",
        "version": "2.0.0",
        "timestamp": queries.iso(now()),
    }


def plan_json(event) -> dict[str, Any]:
    """A generated plan in the v2 parse shape, plus what a reviewer needs (hash, cost, planner)."""
    body: dict[str, Any] = {
        "type": "generated",
        "name": event.name,
        "description": event.description,
        "steps": event.definition["nodes"],
        "confidence": event.confidence,
        "source": event.source,
        "valid": True,
        "schedule": event.schedule,
        "planHash": event.plan_hash,
        "estimatedCostUsd": event.est_cost_usd,
        "outboundSteps": event.outbound_steps,
        "planner": {"model": event.model, "promptVersion": event.prompt_version, "cached": event.cached,
                    "promptTokens": event.prompt_tokens, "completionTokens": event.completion_tokens},
    }
    if event.source == "offline-planner":
        body["message"] = "Planned by the offline planner (no LLM configured); confidence is low, review the steps."
    return body


@post("/parse", status_code=200)
async def parse_instruction(request: Request, principal: Principal) -> Response:
    raw = await request.body()
    body = decode_body(raw, ParseBody)
    instruction = body.instruction.strip()
    if len(instruction) < 5:
        raise ApiError(400, "instruction must be at least 5 characters", "instruction")
    started = time.perf_counter()
    ctx, dispatcher = _ctx(request)
    tools = body.context.availableTools if body.context else None

    def make(command_id: uuid.UUID) -> ParseInstruction:
        return ParseInstruction(plan_id=entity_id(command_id), instruction=instruction, available_tools=tools,
                                organization_id=body.context.organizationId if body.context else None, at=now())

    async def render(outcome: Outcome):
        event = await plan_event(ctx.store, principal.tenant_id, outcome.stream_id)
        return 200, {"success": True, "workflow": plan_json(event),
                     "parseTimeMs": round((time.perf_counter() - started) * 1000)}

    return await dispatcher.dispatch(request, principal, "planner", make, render, raw,
                                     timeout_s=request.app.state.settings.planning_timeout_s)


@get("/")
async def list_workflows(request: Request, principal: Principal) -> dict[str, Any]:
    status = request.query_params.get("status")
    if status is not None and status not in WORKFLOW_STATUSES:
        raise ApiError(400, "status must be one of: active, archived", "status")
    limit = _int_param(request, "limit", 50, 1, 500)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    ctx, _ = _ctx(request)
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        rows, total = await queries.list_workflows(conn, principal.tenant_id, status, limit, offset)
    return {"success": True, "workflows": [queries.workflow_json(r, with_definition=False) for r in rows], "count": total}


async def _render_workflow(request: Request, principal: Principal, outcome: Outcome, status: int):
    ctx, _ = _ctx(request)
    workflow_id = uuid.UUID(outcome.stream_id.split("-", 1)[1])
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        row = await queries.get_workflow(conn, principal.tenant_id, workflow_id)
    if row is None:  # deleted again between commit and read; report what was committed
        raise ApiError(404, "Workflow not found")
    return status, {"success": True, "workflow": queries.workflow_json(row)}


@post("/")
async def create_workflow(request: Request, principal: Principal) -> Response:
    raw = await request.body()
    body = decode_body(raw, CreateWorkflowBody)
    _check_definition(body.definition)
    _, dispatcher = _ctx(request)

    def make(command_id: uuid.UUID) -> CreateWorkflow:
        return CreateWorkflow(
            workflow_id=entity_id(command_id), name=body.name, description=body.description,
            definition=body.definition, version=body.version, created_by=principal.user_id, at=now(),
        )

    async def render(outcome: Outcome):
        return await _render_workflow(request, principal, outcome, 201)

    return await dispatcher.dispatch(request, principal, "planner", make, render, raw)


async def _workflow_or_404(request: Request, principal: Principal, workflow_id: str):
    ctx, _ = _ctx(request)
    wid = _uuid(workflow_id, "Workflow")
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        row = await queries.get_workflow(conn, principal.tenant_id, wid)
    if row is None:
        raise ApiError(404, "Workflow not found")
    return row


@get("/{workflow_id:str}")
async def get_workflow(request: Request, principal: Principal, workflow_id: str) -> dict[str, Any]:
    row = await _workflow_or_404(request, principal, workflow_id)
    return {"success": True, "workflow": queries.workflow_json(row)}


@patch("/{workflow_id:str}")
async def patch_workflow(request: Request, principal: Principal, workflow_id: str) -> Response:
    raw = await request.body()
    body = decode_body(raw, PatchWorkflowBody)
    if body.status is not msgspec.UNSET and body.status not in WORKFLOW_STATUSES:
        raise ApiError(400, "status must be one of: active, archived", "status")
    if body.definition is not msgspec.UNSET:
        _check_definition(body.definition)
    row = await _workflow_or_404(request, principal, workflow_id)
    _, dispatcher = _ctx(request)

    def make(_: uuid.UUID) -> UpdateWorkflow:
        return UpdateWorkflow(
            workflow_id=row["id"], name=body.name, description=body.description, definition=body.definition,
            version=body.version, status=body.status, at=now(),
        )

    async def render(outcome: Outcome):
        return await _render_workflow(request, principal, outcome, 200)

    return await dispatcher.dispatch(request, principal, "planner", make, render, raw)


@delete("/{workflow_id:str}", status_code=200)
async def delete_workflow(request: Request, principal: Principal, workflow_id: str) -> Response:
    row = await _workflow_or_404(request, principal, workflow_id)
    _, dispatcher = _ctx(request)

    async def render(_: Outcome):
        return 200, {"success": True, "message": "Workflow deleted successfully"}

    return await dispatcher.dispatch(
        request, principal, "planner", lambda _: DeleteWorkflow(workflow_id=row["id"], at=now()), render
    )


@post("/{workflow_id:str}/execute")
async def execute_workflow(request: Request, principal: Principal, workflow_id: str) -> Response:
    raw = await request.body()
    body = decode_body(raw, ExecuteBody, empty_ok=True)
    row = await _workflow_or_404(request, principal, workflow_id)
    if row["status"] != "active":
        raise ApiError(409, f"Workflow is {row['status']}; only active workflows can be executed", "status")
    ctx, dispatcher = _ctx(request)
    definition = msgspec.json.decode(row["definition"])
    inputs = runs.prepare_inputs(definition, body.inputs)
    make = runs.start_command(row["id"], row["stream_version"], definition, inputs, principal.user_id)

    async def render(outcome: Outcome):
        async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
            run = await queries.get_run(conn, principal.tenant_id, row["id"], runs.run_id_of(outcome))
        if run is None:
            raise ApiError(404, "Run not found")
        return 201, {"success": True, "run": queries.run_json(run)}

    return await dispatcher.dispatch(request, principal, "executor", make, render, raw)


@get("/{workflow_id:str}/runs")
async def list_runs(request: Request, principal: Principal, workflow_id: str) -> dict[str, Any]:
    status = request.query_params.get("status")
    if status is not None and status not in queries.V2_STATUS_FILTER:
        raise ApiError(400, "status must be one of: running, completed, failed, terminated", "status")
    limit = _int_param(request, "limit", 50, 1, 500)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    row = await _workflow_or_404(request, principal, workflow_id)
    ctx, _ = _ctx(request)
    statuses = queries.V2_STATUS_FILTER[status] if status else None
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        rows, total = await queries.list_runs(conn, principal.tenant_id, row["id"], statuses, limit, offset)
    return {"success": True, "runs": [queries.run_json(r) for r in rows], "count": total}


@get("/{workflow_id:str}/schema")
async def get_schema(request: Request, principal: Principal, workflow_id: str) -> dict[str, Any]:
    row = await _workflow_or_404(request, principal, workflow_id)
    definition = msgspec.json.decode(row["definition"])
    empty = {"type": "object", "properties": {}}
    return {"success": True, "schema": {"inputs": definition.get("inputs") or empty,
                                        "outputs": definition.get("outputs") or empty}}


def _view_json(view: RunView) -> dict[str, Any]:
    """A folded run in the same shape as queries.run_json, plus the number of events folded."""
    return {
        "id": str(view.run_id), "workflow_id": str(view.workflow_id),
        "status": queries.V2_RUN_STATUS.get(view.status, view.status), "inputs": view.inputs,
        "outputs": view.outputs, "error": view.error, "started_at": queries.iso(view.started_at),
        "finished_at": queries.iso(view.finished_at), "version": view.version,
    }


def _at_version(request: Request) -> int | None:
    raw = request.query_params.get("at_version")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ApiError(400, "at_version must be a positive integer (an event number of the run)", "at_version")
    return min(value, 2**31 - 1)  # versions are int4; anything larger means "the latest" anyway


@get("/{workflow_id:str}/runs/{run_id:str}")
async def get_run(request: Request, principal: Principal, workflow_id: str, run_id: str) -> dict[str, Any]:
    """The run from the read model, or with `?at_version=N` the run folded from its first N events.

    N past the run's last event is not an error: the answer is the state after the last event, and
    "version" says how many events were folded, so a client sees where the run's history ends.
    """
    at_version = _at_version(request)
    wid, rid = _uuid(workflow_id, "Workflow"), _uuid(run_id, "Run")
    ctx, _ = _ctx(request)
    if at_version is not None:
        view = await runs.load_view(ctx.store, principal.tenant_id, rid, at_version)
        if view is None or view.workflow_id != wid:
            raise ApiError(404, "Run not found")
        return {"success": True, "run": _view_json(view)}
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        row = await queries.get_run(conn, principal.tenant_id, wid, rid)
    if row is None:
        raise ApiError(404, "Run not found")
    return {"success": True, "run": queries.run_json(row)}


@delete("/{workflow_id:str}/runs/{run_id:str}", status_code=200)
async def terminate_run(request: Request, principal: Principal, workflow_id: str, run_id: str) -> Response:
    wid, rid = _uuid(workflow_id, "Workflow"), _uuid(run_id, "Run")
    ctx, dispatcher = _ctx(request)
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        row = await queries.get_run(conn, principal.tenant_id, wid, rid)
    if row is None:
        raise ApiError(404, "Run not found")
    if row["status"] in runs.TERMINAL_STATUSES:
        word = queries.V2_RUN_STATUS[row["status"]]
        raise ApiError(400, f"Run is already {word}; only a running run can be terminated", "status")

    async def render(_: Outcome):
        return 200, {"success": True, "message": "Workflow run terminated successfully"}

    return await dispatcher.dispatch(request, principal, "executor", lambda _: TerminateRun(
        run_id=rid, reason="Terminated by user", requested_by=principal.user_id, at=now()), render)


@get("/commands/{command_id:str}")
async def command_status(request: Request, principal: Principal, command_id: str) -> dict[str, Any]:
    """Where a 202 points: the committed outcome of a command, or that it is still pending."""
    cid = _uuid(command_id, "Command")
    ctx, _ = _ctx(request)
    outcome = await ctx.store.outcome(principal.tenant_id, cid)
    if outcome is None:
        return {"success": True, "command": {"id": command_id, "state": "pending"}}
    return {
        "success": True,
        "command": {
            "id": command_id,
            "state": "committed" if outcome.ok else "refused",
            "status": outcome.status,
            "error": outcome.error,
            "resource": outcome.stream_id,
        },
    }


router = Router(
    path="/api/v2/workflows",
    route_handlers=[
        health, parse_instruction, list_workflows, create_workflow, get_workflow, patch_workflow, delete_workflow,
        execute_workflow, get_schema, list_runs, get_run, terminate_run, command_status,
    ],
    dependencies={"principal": Provide(authenticate)},
)
