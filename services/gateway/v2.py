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
from libs.events.schemas import Outcome
from libs.events.schemas.plan import ParseInstruction
from libs.events.schemas.run import StartRun
from libs.events.schemas.workflow import CreateWorkflow, DeleteWorkflow, UpdateWorkflow
from services.gateway import queries
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

    def make(command_id: uuid.UUID) -> StartRun:
        return StartRun(
            run_id=entity_id(command_id), workflow_id=row["id"], workflow_version=row["stream_version"],
            definition=definition, inputs=body.inputs, created_by=principal.user_id, at=now(),
        )

    async def render(outcome: Outcome):
        run_id = uuid.UUID(outcome.stream_id.split("-", 1)[1])
        async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
            run = await queries.get_run(conn, principal.tenant_id, row["id"], run_id)
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


@get("/{workflow_id:str}/runs/{run_id:str}")
async def get_run(request: Request, principal: Principal, workflow_id: str, run_id: str) -> dict[str, Any]:
    wid, rid = _uuid(workflow_id, "Workflow"), _uuid(run_id, "Run")
    ctx, _ = _ctx(request)
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        row = await queries.get_run(conn, principal.tenant_id, wid, rid)
    if row is None:
        raise ApiError(404, "Run not found")
    return {"success": True, "run": queries.run_json(row)}


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
        execute_workflow, list_runs, get_run, command_status,
    ],
    dependencies={"principal": Provide(authenticate)},
)
