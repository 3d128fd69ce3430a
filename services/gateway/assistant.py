"""The assistant contract (spec A): one natural-language command -> plan -> run."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, Router, post
from litestar.di import Provide

from libs.security.auth import Principal
from libs.events.bus import CommandNotAccepted
from libs.events.db import DB_UNAVAILABLE
from libs.domain.catalog import assistant_steps
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.schemas.plan import CreateWorkflowFromGoal
from libs.events.schemas.run import CancelRun, StartRun
from services.gateway import runs
from services.gateway.auth import authenticate
from services.gateway.bodies import CancelBody, CommandBody, decode_body
from services.gateway.commands import entity_id, now
from services.gateway.errors import PLAIN_EXCEPTION_HANDLERS, ApiError, plain_error_body

log = structlog.get_logger()
CANCEL_TARGET_MS = 200  # the contract's response-time target for cancel


@post("/execute", status_code=200)
async def execute_command(request: Request, principal: Principal) -> Response:
    raw = await request.body()
    body = decode_body(raw, CommandBody)
    command = body.command.strip()
    if len(command) < 10:
        raise ApiError(400, "command must be at least 10 characters", "command")
    ctx, dispatcher, settings = request.app.state.ctx, request.app.state.dispatcher, request.app.state.settings

    def make(command_id: uuid.UUID) -> CreateWorkflowFromGoal:
        return CreateWorkflowFromGoal(workflow_id=entity_id(command_id), goal=command, activate_if_safe=True,
                                      source="assistant", created_by=principal.user_id, at=now(),
                                      requester_email=principal.email)

    async def render(outcome: Outcome):
        workflow_id = uuid.UUID(outcome.stream_id.split("-", 1)[1])
        async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
            row = await conn.fetchrow("SELECT status, stream_version, definition::text AS definition FROM workflows"
                                      " WHERE tenant_id = $1 AND id = $2", principal.tenant_id, workflow_id)
        definition = msgspec.json.decode(row["definition"])
        steps = [{"id": s["id"], "agentName": s["agentName"], "action": s["action"], "description": s["description"],
                  "status": "pending", "order": i} for i, s in enumerate(assistant_steps(definition))]
        payload: dict[str, Any] = {"success": True, "workflowId": str(workflow_id), "steps": steps}
        if row["status"] != "active":
            payload["status"] = "awaiting_plan_approval"
            payload["message"] = ("Workflow created and planned successfully; it sends data outside Weft, so it "
                                  "waits for plan approval before it runs")
            return 200, payload
        # The run's command id derives from the planning command's, so a retried request starts one run.
        run_command_id = uuid.uuid5(outcome.command_id, "run")
        envelope = CommandEnvelope(
            command_id=run_command_id, tenant_id=principal.tenant_id, actor=principal.user_id,
            correlation_id=str(outcome.command_id),
            command=StartRun(run_id=entity_id(run_command_id), workflow_id=workflow_id,
                             workflow_version=row["stream_version"], definition=definition, inputs={},
                             created_by=principal.user_id, at=now()),
            issued_at=now(),
        )
        try:
            started = await request.app.state.bus.send("executor", envelope) or await ctx.store.outcome(
                principal.tenant_id, run_command_id)
        except (CommandNotAccepted, *DB_UNAVAILABLE) as exc:
            # The workflow is committed; only the run's start is unknown. Saying "starting" (with the run id a
            # retry of this request would reuse) is true; a 503 would invite a retry that plans again.
            log.warning("assistant_run_start_unknown", error=f"{type(exc).__name__}: {exc}")
            started = None
        payload["runId"] = str(entity_id(run_command_id))
        payload["status"] = "running" if started is not None else "starting"
        payload["message"] = "Workflow created and planned successfully"
        return 200, payload

    return await dispatcher.dispatch(request, principal, "planner", make, render, raw,
                                     timeout_s=settings.planning_timeout_s, shape=plain_error_body)


@post("/cancel", status_code=200)
async def cancel_workflow(request: Request, principal: Principal) -> Response:
    """Cancel the workflow's active run(s): running steps finish, nothing new starts.

    Nothing running is not an error: the caller wants the workflow stopped and it is, so 200 with
    "No active run to cancel". Another user's workflow is 403 (the contract verifies ownership).
    """
    started = time.perf_counter()
    body = decode_body(await request.body(), CancelBody)
    try:
        workflow_id = uuid.UUID(body.workflowId)
    except ValueError:
        raise ApiError(404, "Workflow not found", "workflowId") from None
    ctx, bus = request.app.state.ctx, request.app.state.bus
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        owner = await conn.fetchval("SELECT created_by FROM workflows WHERE tenant_id = $1 AND id = $2",
                                    principal.tenant_id, workflow_id)
        active = await runs.active_runs(conn, principal.tenant_id, workflow_id) if owner is not None else []
    if owner is None:
        raise ApiError(404, "Workflow not found", "workflowId")
    if owner != principal.user_id:
        raise ApiError(403, "This workflow belongs to another user", "workflowId")

    async def cancel(run_id: uuid.UUID) -> Outcome | None:
        command_id = uuid.uuid4()
        envelope = CommandEnvelope(
            command_id=command_id, tenant_id=principal.tenant_id, actor=principal.user_id,
            correlation_id=request.headers.get("x-correlation-id") or str(command_id),
            command=CancelRun(run_id=run_id, reason="Cancelled by user", requested_by=principal.user_id, at=now()),
            issued_at=now())
        return await bus.send("executor", envelope) or await ctx.store.outcome(principal.tenant_id, command_id)

    outcomes = await asyncio.gather(*(cancel(run["id"]) for run in active))
    refused = next((o for o in outcomes if o is not None and not o.ok), None)
    if refused is not None:
        raise ApiError(refused.status, refused.error or "Cancel refused")
    status, message = 200, "Workflow cancelled successfully" if active else "No active run to cancel"
    if any(o is None for o in outcomes):
        status, message = 202, "Cancellation accepted; it is not yet committed"
    elapsed = round((time.perf_counter() - started) * 1000)
    if elapsed > CANCEL_TARGET_MS:
        log.warning("cancel_slow", workflow_id=str(workflow_id), response_ms=elapsed, target_ms=CANCEL_TARGET_MS)
    return Response({"success": True, "message": message, "responseTime": elapsed}, status_code=status)


router = Router(
    path="/api/workflow",
    route_handlers=[execute_command, cancel_workflow],
    dependencies={"principal": Provide(authenticate)},
    exception_handlers=PLAIN_EXCEPTION_HANDLERS,
)
