"""v2 workflow routes: health, CRUD, schema, and the outcome lookup a 202 points at."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, post

from libs.security.auth import Principal
from libs.events.schemas import Outcome
from libs.events.schemas.workflow import CreateWorkflow, DeleteWorkflow, UpdateWorkflow
from services.gateway import queries
from services.gateway.bodies import CreateWorkflowBody, PatchWorkflowBody, decode_body
from services.gateway.commands import entity_id, now
from services.gateway.errors import ApiError
from services.gateway.v2.common import (
    WORKFLOW_STATUSES,
    _check_definition,
    _ctx,
    _int_param,
    _uuid,
    _workflow_or_404,
)


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {
        "status": "ok",
        "service": "workflows-api-v2",
        "version": "2.0.0",
        "timestamp": queries.iso(now()),
    }


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


@get("/{workflow_id:str}/schema")
async def get_schema(request: Request, principal: Principal, workflow_id: str) -> dict[str, Any]:
    row = await _workflow_or_404(request, principal, workflow_id)
    definition = msgspec.json.decode(row["definition"])
    empty = {"type": "object", "properties": {}}
    return {"success": True, "schema": {"inputs": definition.get("inputs") or empty,
                                        "outputs": definition.get("outputs") or empty}}


@get("/commands/{command_id:str}")
async def command_status(request: Request, principal: Principal, command_id: str) -> dict[str, Any]:
    """Where a 202 points: the committed outcome of a command, or that it is still pending."""
    cid = _uuid(command_id, "Command")
    ctx, _ = _ctx(request)
    outcome = await ctx.store.outcome(principal.tenant_id, cid)
    if outcome is None:
        if not await request.app.state.pending_commands.known(principal.tenant_id, cid):
            raise ApiError(404, "Command not found")  # unknown, or another tenant's (services/gateway/pending.py)
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
