"""Plan reads answered from the event log: a parse result, a workflow's plan versions, and their diff."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from libs.events.schemas.plan import ApprovePlan, PlanApproved, PlanFailed, PlanGenerated, PlanRevised
from libs.events.schemas.registry import event_of
from libs.events.schemas.workflow import UpdateWorkflow, WorkflowCreated, WorkflowUpdated
from libs.events.store import EventStore
from services.gateway.core.commands import refused, send
from services.gateway.core.errors import ApiError


async def plan_event(store: EventStore, tenant_id: str, stream_id: str) -> PlanGenerated | PlanFailed | None:
    """The latest PlanGenerated/PlanFailed of a stream (plan-<id> or workflow-<id>)."""
    found = None
    for rec in await store.read_stream(tenant_id, stream_id):
        event = event_of(rec)
        if isinstance(event, PlanGenerated | PlanFailed):
            found = event
    return found


async def plan_versions(store: EventStore, tenant_id: str, workflow_id: uuid.UUID) -> list[dict[str, Any]]:
    versions = []
    for rec in await store.read_stream(tenant_id, f"workflow-{workflow_id}"):
        event = event_of(rec)
        if isinstance(event, PlanGenerated):
            versions.append({"version": event.plan_version, "planHash": event.plan_hash, "source": event.source,
                             "model": event.model, "definition": event.definition, "createdAt": event.at})
        elif isinstance(event, PlanRevised):
            versions.append({"version": event.plan_version, "planHash": event.plan_hash, "source": "edited",
                             "revisedBy": event.revised_by, "definition": event.definition, "createdAt": event.at})
    return versions


def diff_plans(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list]:
    """Steps added, removed and changed (by id) between two definitions, with the fields that changed."""
    old = {n["id"]: n for n in before.get("nodes", [])}
    new = {n["id"]: n for n in after.get("nodes", [])}
    changed = []
    for step_id in [i for i in new if i in old]:
        fields = sorted(k for k in set(old[step_id]) | set(new[step_id]) if old[step_id].get(k) != new[step_id].get(k))
        if fields:
            changed.append({"id": step_id, "fields": fields, "before": old[step_id], "after": new[step_id]})
    return {
        "added": [n for i, n in new.items() if i not in old],
        "removed": [n for i, n in old.items() if i not in new],
        "changed": changed,
    }


# ---- deciding a draft's plan as a signed-in person (the dashboard) ----------------------------------------


class PlanDecision(msgspec.Struct, frozen=True, kw_only=True):
    """What was decided about a workflow's plan, for the page a decision (or an approval link) lands on."""

    decision: str  # approved | rejected
    by: str
    via: str
    at: datetime
    plan_version: int | None = None


async def decisions(store: EventStore, tenant_id: str, workflow_id: uuid.UUID) -> list[PlanDecision]:
    """Plan approvals and draft rejections (a draft archived), oldest first."""
    found, status = [], None
    for rec in await store.read_stream(tenant_id, f"workflow-{workflow_id}"):
        event = event_of(rec)
        if isinstance(event, PlanApproved):
            found.append(PlanDecision(decision="approved", by=event.approved_by, via=event.via, at=event.at,
                                      plan_version=event.plan_version))
        elif isinstance(event, WorkflowCreated):
            status = event.status
        elif isinstance(event, PlanRevised):
            status = "draft"
        elif isinstance(event, WorkflowUpdated) and event.status is not msgspec.UNSET:
            if status == "draft" and event.status == "archived":
                by = (rec.metadata or {}).get("actor") or "unknown"
                found.append(PlanDecision(decision="rejected", by=by, via="dashboard", at=event.at))
            status = event.status
    return found


async def approve(core, principal, workflow, plan_hash: str, *, client_ip: str = "", user_agent: str = "") -> None:
    """Approve the draft's plan version the person saw (its hash): a plan edited since is refused by the
    planner's decider, as an old approval link is."""
    at = datetime.now(UTC)
    outcome = await send(core, principal, "planner", lambda _: ApprovePlan(
        workflow_id=workflow.id, plan_version=workflow.plan_version, plan_hash=plan_hash,
        approved_by=principal.email or principal.user_id, client_ip=client_ip, user_agent=user_agent[:500],
        via="dashboard", at=at))
    _raise(outcome)


async def reject(core, principal, workflow) -> None:
    """Reject a draft: it is archived (an archived workflow never runs); only a draft's plan is rejected here."""
    if workflow.status != "draft":
        raise ApiError(409, f"Workflow is {workflow.status}; only a draft's plan can be rejected", "status")
    outcome = await send(core, principal, "planner", lambda _: UpdateWorkflow(
        workflow_id=workflow.id, status="archived", at=datetime.now(UTC)))
    _raise(outcome)


def _raise(outcome) -> None:
    error = refused(outcome)
    if error is not None:
        raise error
