"""The approvals inbox: every step of the tenant's runs paused on an approval, and deciding one as a person.

A person signed in to the dashboard decides as their email (or user id when the token has none), like the
emailed link of that approver would: the decision counts towards the step's N of M and is refused when they
are not one of its approvers (docs/decisions/0080-dashboard.md). The public API's key decisions stay final.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from libs.events.schemas.run import DecideApproval
from libs.security.auth import Principal
from services.gateway.commands import now
from services.gateway.core import Core
from services.gateway.core.commands import refused, send
from services.gateway.core.errors import ApiError

DECISIONS = ("approve", "reject")
MAX_COMMENT = 2000


class PendingStep(msgspec.Struct, frozen=True, kw_only=True):
    run_id: uuid.UUID
    run_number: int
    workflow_id: uuid.UUID
    workflow_name: str
    step_id: str
    paused_at: str | None
    title: str
    description: str
    rows: list[Any]
    display_fields: list[str]
    total_rows: int
    require_comment: bool


def _pending(row) -> list[PendingStep]:
    steps = msgspec.json.decode(row["steps"])
    found = []
    for sid, step in sorted(steps.items(), key=lambda kv: ((kv[1].get("paused_at") or ""), kv[0])):
        if step.get("status") != "awaiting_approval":
            continue
        approval = step.get("approval") or {}
        meta = approval.get("metadata") or {}
        found.append(PendingStep(
            run_id=row["id"], run_number=row["run_number"], workflow_id=row["workflow_id"],
            workflow_name=row["name"], step_id=sid, paused_at=step.get("paused_at"),
            title=str(meta.get("title") or "Approval required"), description=str(meta.get("description") or ""),
            rows=list(approval.get("rows") or []), display_fields=list(approval.get("displayFields") or []),
            total_rows=int(meta.get("totalRows") or 0), require_comment=bool(meta.get("requireComment"))))
    return found


async def pending(core: Core, principal: Principal, run_id: uuid.UUID | None = None) -> list[PendingStep]:
    """Paused approval steps, oldest run first (one run's when `run_id` is given)."""
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT r.id, r.run_number, r.workflow_id, w.name, r.steps::text AS steps FROM runs r"
            " JOIN workflows w ON w.tenant_id = r.tenant_id AND w.id = r.workflow_id"
            " WHERE r.tenant_id = $1 AND r.status = 'awaiting_approval' AND ($2::uuid IS NULL OR r.id = $2)"
            " ORDER BY r.started_at, r.id LIMIT 200", principal.tenant_id, run_id)
    return [step for row in rows for step in _pending(row)]


def approver_of(principal: Principal) -> str:
    """Who a signed-in person decides as: their email when the token has one (approvers are emails)."""
    return principal.email or principal.user_id


async def decide(core: Core, principal: Principal, run_id: uuid.UUID, step_id: str, decision: str, comment: str,
                 *, client_ip: str = "", user_agent: str = "") -> datetime:
    """Record the person's decision on a paused step; the executor's decider checks approver and comment."""
    if decision not in DECISIONS:
        raise ApiError(400, "decision must be approve or reject", "decision")
    if len(comment) > MAX_COMMENT:
        raise ApiError(400, f"comment must be at most {MAX_COMMENT} characters", "comment")
    at = now()
    outcome = await send(core, principal, "executor", lambda _: DecideApproval(
        run_id=run_id, step_id=step_id, decision=decision, decided_by=approver_of(principal),
        comment=comment.strip(), client_ip=client_ip, user_agent=user_agent[:500], via="dashboard", at=at))
    error = refused(outcome)
    if error is not None:
        raise ApiError(error.status, error.message, error.field or "comment", code=error.code)
    return at


class StepDecision(msgspec.Struct, frozen=True, kw_only=True):
    run_id: uuid.UUID
    run_number: int
    step_id: str
    decision: str
    decided_by: str
    comment: str
    via: str
    at: datetime


async def decisions(core: Core, principal: Principal, workflow_id: uuid.UUID, limit: int = 50) -> list[StepDecision]:
    """The latest decisions on approval steps of a workflow's runs (where a step's email link lands), newest first."""
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT r.id, r.run_number, e.data::text AS data FROM events e JOIN runs r"
            " ON r.tenant_id = e.tenant_id AND e.stream_id = 'run-' || r.id::text"
            " WHERE e.tenant_id = $1 AND r.workflow_id = $2 AND e.type = 'ApprovalDecisionRecorded'"
            " ORDER BY e.global_position DESC LIMIT $3", principal.tenant_id, workflow_id, limit)
    found = []
    for row in rows:
        data = msgspec.json.decode(row["data"])
        found.append(StepDecision(run_id=row["id"], run_number=row["run_number"], step_id=data["step_id"],
                                  decision=data["decision"], decided_by=data["decided_by"],
                                  comment=data.get("comment") or "", via=data.get("via") or "email",
                                  at=datetime.fromisoformat(data["at"])))
    return found
