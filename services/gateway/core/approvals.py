"""Approval use cases for a signed-in user: the tenant's steps waiting for a decision, and deciding one.

A v2 decision counts as its user (the token's `email` claim, else its subject) towards the step's N-of-M
policy, like an emailed link and unlike the public API's final decisions (docs/decisions/0009): the executor's
decider refuses a user who is not one of the step's approvers (403) or who already decided (409).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from libs.events.schemas.run import DecideApproval
from libs.security.auth import Principal
from services.gateway.commands import now
from services.gateway.core import Core
from services.gateway.core.errors import ApiError, NotFound

DECISIONS = ("approve", "reject")
MAX_COMMENT = 2000


class PendingStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of one run that waits for a decision, with what its reviewers see."""

    run_id: uuid.UUID
    workflow_id: uuid.UUID
    workflow_name: str
    step_id: str
    title: str
    description: str
    total_rows: int
    require_comment: bool
    started_at: datetime
    paused_at: str | None


# One row per waiting step (a run can wait on parallel approval steps), paged in SQL.
_FROM = ("FROM runs r JOIN workflows w ON w.tenant_id = r.tenant_id AND w.id = r.workflow_id"
         " CROSS JOIN LATERAL jsonb_each(r.steps) AS s(step_id, step)"
         " WHERE r.tenant_id = $1 AND r.status = 'awaiting_approval' AND s.step ->> 'status' = 'awaiting_approval'"
         " AND ($2::uuid IS NULL OR r.workflow_id = $2) AND ($3::uuid IS NULL OR r.id = $3)")
_PAGE = (f"SELECT r.id, r.workflow_id, w.name, r.started_at, s.step_id, s.step::text AS step {_FROM}"
         " ORDER BY r.started_at, r.id, s.step ->> 'paused_at', s.step_id LIMIT $4 OFFSET $5")


def _pending(row) -> PendingStep:
    step: dict[str, Any] = msgspec.json.decode(row["step"])
    meta = (step.get("approval") or {}).get("metadata") or {}
    return PendingStep(
        run_id=row["id"], workflow_id=row["workflow_id"], workflow_name=row["name"], step_id=row["step_id"],
        title=str(meta.get("title") or "Approval required"), description=str(meta.get("description") or ""),
        total_rows=int(meta.get("totalRows") or 0), require_comment=bool(meta.get("requireComment")),
        started_at=row["started_at"], paused_at=step.get("paused_at"))


async def list_pending(core: Core, principal: Principal, *, workflow_id: uuid.UUID | None = None,
                       run_id: uuid.UUID | None = None, limit: int = 50, offset: int = 0
                       ) -> tuple[list[PendingStep], int]:
    """The tenant's steps awaiting a decision, oldest run first (a run's steps in the order they paused),
    with the total number of such steps."""
    args = (principal.tenant_id, workflow_id, run_id)
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(_PAGE, *args, limit, offset)
        total = await conn.fetchval(f"SELECT count(*) {_FROM}", *args)
    return [_pending(r) for r in rows], total


def decider(principal: Principal) -> str:
    """Whom a v2 decision is recorded as: the approver address the step's policy lists, when the token has one."""
    return principal.email or principal.user_id


async def prepare_decision(core: Core, principal: Principal, workflow_id: uuid.UUID, run_id: uuid.UUID,
                           step_id: str | None, decision: str, comment: str, *, client_ip: str = "",
                           user_agent: str = "") -> tuple[PendingStep, Callable[[uuid.UUID], DecideApproval]]:
    """Check the request (the run waits, the step is one that waits) and return the step and the command."""
    if decision not in DECISIONS:
        raise ApiError(400, "decision must be approve or reject", "decision")
    if len(comment) > MAX_COMMENT:
        raise ApiError(400, f"comment must be at most {MAX_COMMENT} characters", "comment")
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        known = await conn.fetchval("SELECT status FROM runs WHERE tenant_id = $1 AND workflow_id = $2 AND id = $3",
                                    principal.tenant_id, workflow_id, run_id)
    if known is None:
        raise NotFound("Run")
    waiting, _ = await list_pending(core, principal, workflow_id=workflow_id, run_id=run_id, limit=1000)
    if not waiting:
        raise ApiError(409, f"Run is not awaiting approval (it is {known})", code="not_awaiting_approval")
    step = waiting[0] if step_id is None else next((p for p in waiting if p.step_id == step_id), None)
    if step is None:
        raise ApiError(409, f"Step {step_id} is not awaiting approval", "step_id", code="not_awaiting_approval")
    actor = decider(principal)

    def make(_: uuid.UUID) -> DecideApproval:
        return DecideApproval(run_id=run_id, step_id=step.step_id, decision=decision, decided_by=actor,
                              comment=comment.strip(), client_ip=client_ip, user_agent=user_agent, via="api",
                              final=False, at=now())

    return step, make


async def step_status(core: Core, principal: Principal, run_id: uuid.UUID, step_id: str) -> str | None:
    """The step's status after a committed decision: still awaiting (more approvals needed), completed, failed."""
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        raw = await conn.fetchval("SELECT steps -> $3 ->> 'status' FROM runs WHERE tenant_id = $1 AND id = $2",
                                  principal.tenant_id, run_id, step_id)
    return raw
