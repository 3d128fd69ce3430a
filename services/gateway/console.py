"""The console contract (spec B): goal -> LLM plan -> draft awaiting approval; workflows with steps and runs."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.di import Provide

from libs.domain import cron
from libs.security.auth import Principal
from libs.domain.catalog import step_type
from libs.events.schemas import Outcome
from libs.events.schemas.plan import CreateWorkflowFromGoal, PlanGenerated, ReviseWorkflowPlan
from libs.events.schemas.run import TerminateRun
from services.gateway import queries, runs
from services.gateway.auth import authenticate
from services.gateway.bodies import GoalBody, StepsBody, decode_body
from services.gateway.commands import entity_id, now
from services.gateway.errors import PLAIN_EXCEPTION_HANDLERS, ApiError, plain_error_body
from services.gateway.core.plans import diff_plans, plan_event, plan_versions

CONSOLE_RUN_STATUS = {"pending": "running", "running": "running", "awaiting_approval": "awaiting_approval",
                      "completed": "completed", "failed": "failed", "cancelled": "failed"}
STOPPED = "Stopped by user"  # how the console names a cancelled run (DESIGN section 5)


def _uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, "Workflow not found") from None


def workflow_steps(definition: dict[str, Any]) -> list[dict[str, Any]]:
    steps = []
    for index, node in enumerate(definition.get("nodes", [])):
        entry = step_type(node)
        steps.append({
            "id": node["id"], "stepIndex": index, "type": node["type"], "action": node.get("action") or node["type"],
            "description": node.get("description", ""), "config": node.get("config") or {},
            "inputFrom": node.get("input_from"), "dependsOn": node.get("depends_on") or [],
            "outbound": bool(entry and entry.outbound), "estimatedCostUsd": entry.est_cost_usd if entry else 0.0,
        })
    return steps


def _run_json(row) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "runNumber": row["run_number"], "status": CONSOLE_RUN_STATUS.get(row["status"], row["status"]),
        "inputs": msgspec.json.decode(row["inputs"]), "outputs": msgspec.json.decode(row["outputs"]) if row["outputs"] else None,
        "error": STOPPED if row["status"] == "cancelled" else row["error"],
        "startedAt": queries.iso(row["started_at"]), "finishedAt": queries.iso(row["finished_at"]),
    }


def _workflow_json(row, definition: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "title": row["name"], "goal": row["goal"], "description": row["description"],
        "status": row["status"], "schedule": row["schedule"], "source": row["source"],
        "planVersion": row["plan_version"], "planHash": row["plan_hash"], "stepCount": len(definition.get("nodes", [])),
        "createdBy": row["created_by"], "createdAt": queries.iso(row["created_at"]), "updatedAt": queries.iso(row["updated_at"]),
    }


def _check_schedule(schedule: str | None) -> None:
    """The cron the scheduler will attach once the plan is approved (in UTC): refused now, not then."""
    if schedule is None:
        return
    try:
        cron.parse(schedule)
    except cron.CronError as exc:
        raise ApiError(400, f"schedule {exc}", "schedule") from None


async def _load(request: Request, principal: Principal, workflow_id: str):
    ctx = request.app.state.ctx
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT *, definition::text AS definition_text FROM workflows WHERE tenant_id = $1 AND id = $2",
            principal.tenant_id, _uuid(workflow_id))
    if row is None:
        raise ApiError(404, "Workflow not found")
    return row, msgspec.json.decode(row["definition_text"])


@post("/", status_code=201)
async def create_from_goal(request: Request, principal: Principal) -> Response:
    raw = await request.body()
    body = decode_body(raw, GoalBody)
    goal = body.goal.strip()
    if len(goal) < 5:
        raise ApiError(400, "goal must be at least 5 characters", "goal")
    _check_schedule(body.schedule)
    ctx, dispatcher = request.app.state.ctx, request.app.state.dispatcher

    def make(command_id: uuid.UUID) -> CreateWorkflowFromGoal:
        return CreateWorkflowFromGoal(workflow_id=entity_id(command_id), goal=goal, schedule=body.schedule,
                                      source="console", created_by=principal.user_id, at=now(),
                                      requester_email=principal.email)

    async def render(outcome: Outcome):
        row, definition = await _load(request, principal, outcome.stream_id.split("-", 1)[1])
        plan = await plan_event(ctx.store, principal.tenant_id, outcome.stream_id)
        message = "Plan generated and saved as a draft; approve it to activate the workflow."
        if isinstance(plan, PlanGenerated) and plan.source == "offline-planner":
            message += " Planned by the offline planner (no LLM configured): review the steps."
        return 201, {
            "workflowId": str(row["id"]), "title": row["name"], "steps": workflow_steps(definition),
            "status": row["status"], "message": message, "schedule": row["schedule"],
            "planVersion": row["plan_version"], "planHash": row["plan_hash"],
            "estimatedCostUsd": plan.est_cost_usd if plan else 0.0,
            "outboundSteps": plan.outbound_steps if plan else [],
            "planner": {"source": plan.source, "model": plan.model, "confidence": plan.confidence,
                        "cached": plan.cached} if plan else None,
        }

    return await dispatcher.dispatch(request, principal, "planner", make, render, raw,
                                     timeout_s=request.app.state.settings.planning_timeout_s, shape=plain_error_body)


@get("/")
async def list_workflows(request: Request, principal: Principal) -> list[dict[str, Any]]:
    ctx = request.app.state.ctx
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT w.*, definition::text AS definition_text FROM workflows w WHERE tenant_id = $1"
            " ORDER BY created_at DESC, id LIMIT 500", principal.tenant_id)
        latest = {r["workflow_id"]: r for r in await conn.fetch(
            "SELECT DISTINCT ON (workflow_id) workflow_id, id, run_number, status, inputs::text AS inputs,"
            " outputs::text AS outputs, error, started_at, finished_at FROM runs WHERE tenant_id = $1"
            " ORDER BY workflow_id, run_number DESC", principal.tenant_id)}
    result = []
    for row in rows:
        item = _workflow_json(row, msgspec.json.decode(row["definition_text"]))
        item["latestRun"] = _run_json(latest[row["id"]]) if row["id"] in latest else None
        result.append(item)
    return result


@get("/{workflow_id:str}")
async def get_workflow(request: Request, principal: Principal, workflow_id: str) -> dict[str, Any]:
    row, definition = await _load(request, principal, workflow_id)
    ctx = request.app.state.ctx
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        runs = await conn.fetch(
            "SELECT id, run_number, status, inputs::text AS inputs, outputs::text AS outputs, error, started_at,"
            " finished_at FROM runs WHERE tenant_id = $1 AND workflow_id = $2 ORDER BY run_number DESC LIMIT 200",
            principal.tenant_id, row["id"])
    return {**_workflow_json(row, definition), "workflowSteps": workflow_steps(definition),
            "workflowRuns": [_run_json(r) for r in runs]}


@post("/{workflow_id:str}/steps", status_code=200)
async def edit_steps(request: Request, principal: Principal, workflow_id: str) -> Response:
    raw = await request.body()
    body = decode_body(raw, StepsBody)
    row, _ = await _load(request, principal, workflow_id)
    dispatcher = request.app.state.dispatcher

    def make(_: uuid.UUID) -> ReviseWorkflowPlan:
        return ReviseWorkflowPlan(workflow_id=row["id"], steps=[msgspec.to_builtins(s) for s in body.steps],
                                  revised_by=principal.user_id, at=now(), requester_email=principal.email)

    async def render(outcome: Outcome):
        fresh, definition = await _load(request, principal, workflow_id)
        return 200, {"workflowId": str(fresh["id"]), "status": fresh["status"], "planVersion": fresh["plan_version"],
                     "planHash": fresh["plan_hash"], "steps": workflow_steps(definition),
                     "message": "Plan updated; approval is requested for this version."}

    return await dispatcher.dispatch(request, principal, "planner", make, render, raw, shape=plain_error_body)


@get("/{workflow_id:str}/plans")
async def list_plan_versions(request: Request, principal: Principal, workflow_id: str) -> dict[str, Any]:
    row, _ = await _load(request, principal, workflow_id)
    versions = await plan_versions(request.app.state.ctx.store, principal.tenant_id, row["id"])
    return {"workflowId": str(row["id"]), "versions": [
        {**v, "createdAt": queries.iso(v["createdAt"]), "steps": workflow_steps(v.pop("definition"))} for v in versions]}


@get("/{workflow_id:str}/plans/diff")
async def diff_plan_versions(request: Request, principal: Principal, workflow_id: str) -> dict[str, Any]:
    row, _ = await _load(request, principal, workflow_id)
    versions = {v["version"]: v for v in await plan_versions(request.app.state.ctx.store, principal.tenant_id, row["id"])}
    if not versions:
        raise ApiError(404, "This workflow has no plan versions")
    try:
        to = int(request.query_params.get("to", max(versions)))
        frm = int(request.query_params.get("from", to - 1))
    except ValueError:
        raise ApiError(400, "from and to must be plan version numbers", "from") from None
    for name, version in (("from", frm), ("to", to)):
        if version not in versions:
            raise ApiError(404, f"Plan version {version} not found", name)
    return {"workflowId": str(row["id"]), "from": frm, "to": to,
            "fromHash": versions[frm]["planHash"], "toHash": versions[to]["planHash"],
            **diff_plans(versions[frm]["definition"], versions[to]["definition"])}


@post("/{workflow_id:str}/run", status_code=201)
async def run_workflow(request: Request, principal: Principal, workflow_id: str) -> Response:
    """Start a run; 422 unless the workflow is active, 409 (from the executor) while another run is active."""
    row, definition = await _load(request, principal, workflow_id)
    if row["status"] != "active":
        raise ApiError(422, f"Workflow is {row['status']}; only an active workflow can run", "status")
    inputs = runs.prepare_inputs(definition, {})
    ctx = request.app.state.ctx

    async def render(outcome: Outcome):
        run_id = runs.run_id_of(outcome)
        async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
            number = await conn.fetchval("SELECT run_number FROM runs WHERE tenant_id = $1 AND id = $2",
                                         principal.tenant_id, run_id)
        return 201, {"runId": number, "conversationId": str(run_id), "message": "Workflow run started"}

    return await request.app.state.dispatcher.dispatch(
        request, principal, "executor",
        runs.start_command(row["id"], row["stream_version"], definition, inputs, principal.user_id), render,
        shape=plain_error_body)


@post("/{workflow_id:str}/runs/{run_id:str}/stop", status_code=200)
async def stop_run(request: Request, principal: Principal, workflow_id: str, run_id: str) -> Response:
    """Terminate a run named by its number (or uuid); the console then shows it failed, "Stopped by user"."""
    row, _ = await _load(request, principal, workflow_id)
    number = int(run_id) if run_id.isascii() and run_id.isdigit() and len(run_id) < 10 else None
    try:
        rid = None if number is not None else uuid.UUID(run_id)
    except ValueError:
        raise ApiError(404, "Run not found") from None
    ctx = request.app.state.ctx
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        run = await conn.fetchrow(
            "SELECT id, run_number, status FROM runs WHERE tenant_id = $1 AND workflow_id = $2"
            " AND (run_number = $3 OR id = $4)", principal.tenant_id, row["id"], number, rid)
    if run is None:
        raise ApiError(404, "Run not found")
    if run["status"] in runs.TERMINAL_STATUSES:
        status = CONSOLE_RUN_STATUS[run["status"]]
        raise ApiError(400, f"Run {run['run_number']} is already {status}; only a running run can be stopped")

    async def render(_: Outcome):
        return 200, {"message": "Run stopped", "runId": run["run_number"], "status": "failed", "error": STOPPED}

    return await request.app.state.dispatcher.dispatch(
        request, principal, "executor",
        lambda _: TerminateRun(run_id=run["id"], reason=STOPPED, requested_by=principal.user_id, at=now()),
        render, shape=plain_error_body)


router = Router(
    path="/api/workflows",
    route_handlers=[create_from_goal, list_workflows, get_workflow, edit_steps, list_plan_versions, diff_plan_versions,
                    run_workflow, stop_run],
    dependencies={"principal": Provide(authenticate)},
    exception_handlers=PLAIN_EXCEPTION_HANDLERS,
)
