"""Public API approval routes (spec D): the paused run's approval data, approve, reject.

A key sees (and decides) only the runs it started, as for status and results. Its decisions are final: the
step resolves at once, whatever N-of-M the step's email approvers need (docs/decisions/0009).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody

from libs.events.schemas.run import DecideApproval
from services.gateway import approvals, timestamps
from services.gateway.commands import now
from services.gateway.public.auth import ApiKeyPrincipal
from services.gateway.public.errors import PublicApiError, public_responses
from services.gateway.public.executions import PUBLIC_STATUS, visible_run


class DecisionBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    comment: Annotated[str, msgspec.Meta(max_length=approvals.MAX_NOTE)] = ""


async def _paused(request: Request, api_key: ApiKeyPrincipal, execution_id: str) -> approvals.PendingApproval:
    rid, row = await visible_run(request, api_key, execution_id)
    pending = approvals.pending_of(row) if row is not None else None
    if pending is None:
        status = PUBLIC_STATUS.get(row["status"], row["status"]) if row is not None else "pending"
        raise PublicApiError(409, f"Execution is not awaiting approval (status: {status})")
    return pending


class ApprovalData(msgspec.Struct, kw_only=True):
    rows: list[Any]
    metadata: dict[str, Any]
    displayFields: list[Any]  # noqa: N815 - the contract's field names


class Pending(msgspec.Struct, kw_only=True):
    id: str
    workflowId: str  # noqa: N815
    status: str
    approvalData: ApprovalData  # noqa: N815
    startedAt: str | None  # noqa: N815


class Decided(msgspec.Struct, kw_only=True):
    executionId: str  # noqa: N815
    status: str
    message: str


DECISION = {**public_responses(409, 422),
            202: ResponseSpec(data_container=Decided, generate_examples=False,
                              description="The decision is accepted and being recorded")}


@get("/executions/{execution_id:str}/pending-approval", responses=public_responses(409))
async def pending_approval(request: Request, api_key: NamedDependency[ApiKeyPrincipal],
                           execution_id: FromPath[str]) -> Pending:
    pending = await _paused(request, api_key, execution_id)
    approval = pending.approval
    return Pending(id=str(pending.run_id), workflowId=str(pending.workflow_id), status="pending_approval",
                   approvalData=ApprovalData(rows=approval.get("rows", []), metadata=approval.get("metadata", {}),
                                             displayFields=approval.get("displayFields", [])),
                   startedAt=timestamps.iso(pending.started_at))


async def _decide(request: Request, api_key: ApiKeyPrincipal, execution_id: str, decision: str,
                  done: dict[str, str], body: DecisionBody) -> Response:
    pending = await _paused(request, api_key, execution_id)
    command = DecideApproval(run_id=pending.run_id, step_id=pending.step_id, decision=decision,
                             decided_by=api_key.actor, comment=body.comment.strip(),
                             client_ip=approvals.client_ip(request), user_agent=approvals.user_agent(request),
                             via="api", final=True, at=now())
    outcome = await approvals.decide(request.app.state, tenant_id=api_key.tenant_id, actor=api_key.actor,
                                     service="executor", command=command)
    if outcome is None:  # accepted (JetStream has it) but not committed within the command timeout
        return Response({"executionId": str(pending.run_id), "status": "accepted",
                         "message": "Decision accepted; it is being recorded"}, status_code=202)
    if not outcome.ok:
        status = outcome.status if outcome.status < 500 else 503
        raise PublicApiError(status, outcome.error or "Decision refused")
    return Response({"executionId": str(pending.run_id), **done}, status_code=200)


@post("/executions/{execution_id:str}/approve", status_code=200, responses=DECISION)
async def approve_execution(request: Request, api_key: NamedDependency[ApiKeyPrincipal], execution_id: FromPath[str],
                            data: JSONBody[DecisionBody] = DecisionBody()) -> Response[Decided]:
    return await _decide(request, api_key, execution_id, "approve",
                         {"status": "approved", "message": "Execution approved and will continue"}, data)


@post("/executions/{execution_id:str}/reject", status_code=200, responses=DECISION)
async def reject_execution(request: Request, api_key: NamedDependency[ApiKeyPrincipal], execution_id: FromPath[str],
                           data: JSONBody[DecisionBody] = DecisionBody()) -> Response[Decided]:
    return await _decide(request, api_key, execution_id, "reject",
                         {"status": "rejected", "message": "Execution rejected and stopped"}, data)


route_handlers = [pending_approval, approve_execution, reject_execution]
