"""v2 approval routes: the tenant's steps awaiting a decision, and approve or reject one as the signed-in user."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from libs.events.schemas import Outcome
from libs.security.auth import Principal
from services.gateway.core import Core, approvals
from services.gateway.errors import V2Error, accepted_response, responses
from services.gateway.timestamps import iso

Comment = Annotated[str, msgspec.Meta(max_length=approvals.MAX_COMMENT)]


class PendingApprovalBody(msgspec.Struct, kw_only=True):
    run_id: str
    workflow_id: str
    workflow_name: str
    step_id: str
    title: str
    description: str
    total_rows: int
    require_comment: bool
    started_at: str | None
    paused_at: str | None


class ApprovalList(msgspec.Struct, kw_only=True):
    success: bool
    approvals: list[PendingApprovalBody]
    count: int


class DecideBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    step_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    comment: Comment = ""


class DecisionResult(msgspec.Struct, kw_only=True):
    run_id: str
    step_id: str
    decision: str
    decided_by: str
    step_status: str | None  # awaiting_approval while more approvals are needed, then completed or failed


class DecisionEnvelope(msgspec.Struct, kw_only=True):
    success: bool
    decision: DecisionResult


def _body(p: approvals.PendingStep) -> PendingApprovalBody:
    return PendingApprovalBody(run_id=str(p.run_id), workflow_id=str(p.workflow_id), workflow_name=p.workflow_name,
                               step_id=p.step_id, title=p.title, description=p.description, total_rows=p.total_rows,
                               require_comment=p.require_comment, started_at=iso(p.started_at), paused_at=p.paused_at)


@get("/approvals", responses=responses(V2Error, 429))
async def list_approvals(principal: NamedDependency[Principal], core: NamedDependency[Core],
                         workflow_id: FromQuery[uuid.UUID | None] = None,
                         limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
                         offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0) -> ApprovalList:
    """Steps of the tenant's runs that wait for a decision (optionally of one workflow), oldest run first."""
    found, total = await approvals.list_pending(core, principal, workflow_id=workflow_id, limit=limit, offset=offset)
    return ApprovalList(success=True, approvals=[_body(p) for p in found], count=total)


async def _decide(request: Request, principal: Principal, core: Core, workflow_id: uuid.UUID, run_id: uuid.UUID,
                  data: DecideBody | None, decision: str) -> Response[DecisionEnvelope]:
    body = data or DecideBody()
    client = request.client.host if request.client else ""
    step, make = await approvals.prepare_decision(
        core, principal, workflow_id, run_id, body.step_id, decision, body.comment, client_ip=client,
        user_agent=request.headers.get("user-agent", "")[:500])

    async def render(_: Outcome):
        after = await approvals.step_status(core, principal, run_id, step.step_id)
        return 200, DecisionEnvelope(success=True, decision=DecisionResult(
            run_id=str(run_id), step_id=step.step_id, decision=decision, decided_by=approvals.decider(principal),
            step_status=after))

    return await core.dispatcher.dispatch(request, principal, "executor", make, render, await request.body())


DECIDE = {**responses(V2Error, 403, 404, 409, 429), **accepted_response()}


@post("/{workflow_id:uuid}/runs/{run_id:uuid}/approve", status_code=200, responses=DECIDE)
async def approve_step(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                       workflow_id: FromPath[uuid.UUID], run_id: FromPath[uuid.UUID],
                       data: JSONBody[DecideBody | None] = None) -> Response[DecisionEnvelope]:
    """Approve the run's paused step (`step_id`, else the first that paused) as the signed-in user."""
    return await _decide(request, principal, core, workflow_id, run_id, data, "approve")


@post("/{workflow_id:uuid}/runs/{run_id:uuid}/reject", status_code=200, responses=DECIDE)
async def reject_step(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                      workflow_id: FromPath[uuid.UUID], run_id: FromPath[uuid.UUID],
                      data: JSONBody[DecideBody | None] = None) -> Response[DecisionEnvelope]:
    """Reject the run's paused step as the signed-in user (a comment may be required by the step)."""
    return await _decide(request, principal, core, workflow_id, run_id, data, "reject")
