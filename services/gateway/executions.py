"""The executions contract (spec C): execute a workflow, read an execution's node states and logs, cancel it.

Mounted at /api/workflows/execute beside the console's /api/workflows/{id}: Litestar prefers the static
`execute` segment, so GET /api/workflows/execute/<id> always lands here. Errors use the app's default
{"success": false, "error": ...} shape, which is C's.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.di import Provide

from libs.security.auth import Principal
from libs.domain.run_view import NodeState, RunView
from libs.events.schemas import Outcome
from libs.events.schemas.run import CancelRun
from services.gateway import queries, runs
from services.gateway.auth import authenticate
from services.gateway.bodies import ExecuteBody, decode_body
from services.gateway.commands import now
from services.gateway.errors import ApiError

EXECUTION_STATE = {"pending": "PENDING", "running": "RUNNING", "awaiting_approval": "PAUSED",
                   "completed": "COMPLETED", "failed": "FAILED", "cancelled": "CANCELED"}


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, f"{what} not found") from None


def _node_json(node: NodeState) -> dict[str, Any]:
    return {"state": node.state, "startedAt": queries.iso(node.started_at),
            "completedAt": queries.iso(node.completed_at), "error": node.error, "output": node.output,
            "attempt": node.attempt}


def execution_json(view: RunView) -> dict[str, Any]:
    return {
        "id": str(view.run_id), "workflowId": str(view.workflow_id),
        "state": EXECUTION_STATE.get(view.status, view.status.upper()),
        "startedAt": queries.iso(view.started_at), "completedAt": queries.iso(view.finished_at),
        "startedBy": view.created_by, "variables": view.variables,
        "logs": [{"nodeId": log.node_id, "message": log.message, "level": log.level,
                  "timestamp": queries.iso(log.timestamp)} for log in view.logs],
        "output": view.outputs, "error": view.error,
        "nodeStates": {sid: _node_json(node) for sid, node in view.node_states.items()},
    }


async def _own_execution(request: Request, principal: Principal, execution_id: str) -> RunView:
    """404 for no such run in the caller's tenant (another tenant's is invisible); 403 for a colleague's."""
    view = await runs.load_view(request.app.state.ctx.store, principal.tenant_id, _uuid(execution_id, "Execution"))
    if view is None:
        raise ApiError(404, "Execution not found")
    if view.created_by != principal.user_id:
        raise ApiError(403, "Forbidden: this execution was started by another user")
    return view


@post("/{workflow_id:str}", status_code=200)
async def execute_workflow(request: Request, principal: Principal, workflow_id: str) -> Response:
    raw = await request.body()
    body = decode_body(raw, ExecuteBody, empty_ok=True)
    ctx, dispatcher = request.app.state.ctx, request.app.state.dispatcher
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        row = await queries.get_workflow(conn, principal.tenant_id, _uuid(workflow_id, "Workflow"))
    if row is None:
        raise ApiError(404, "Workflow not found")
    if row["status"] != "active":
        raise ApiError(409, f"Workflow is {row['status']}; only active workflows can be executed", "status")
    definition = msgspec.json.decode(row["definition"])
    inputs = runs.prepare_inputs(definition, body.inputs)

    async def render(outcome: Outcome):
        return 200, {"success": True, "data": {"workflowId": str(row["id"]),
                                                "executionId": str(runs.run_id_of(outcome))},
                     "message": "Workflow execution initiated successfully"}

    return await dispatcher.dispatch(
        request, principal, "executor",
        runs.start_command(row["id"], row["stream_version"], definition, inputs, principal.user_id), render, raw)


@get("/{execution_id:str}")
async def get_execution(request: Request, principal: Principal, execution_id: str) -> dict[str, Any]:
    view = await _own_execution(request, principal, execution_id)
    return {"success": True, "data": execution_json(view)}


@delete("/{execution_id:str}", status_code=200)
async def cancel_execution(request: Request, principal: Principal, execution_id: str) -> Response:
    view = await _own_execution(request, principal, execution_id)
    if view.status in runs.TERMINAL_STATUSES:
        raise ApiError(400, f"Execution is already {EXECUTION_STATE[view.status]}; only a running execution "
                            "can be canceled", "state")

    async def render(_: Outcome):
        return 200, {"success": True, "message": f"Execution {view.run_id} canceled"}

    return await request.app.state.dispatcher.dispatch(request, principal, "executor", lambda _: CancelRun(
        run_id=view.run_id, reason="Cancelled by user", requested_by=principal.user_id, at=now()), render)


router = Router(
    path="/api/workflows/execute",
    route_handlers=[execute_workflow, get_execution, cancel_execution],
    dependencies={"principal": Provide(authenticate)},
)
