"""Plan reads answered from the event log: a parse result, a workflow's plan versions, and their diff."""

from __future__ import annotations

import uuid
from typing import Any

from libs.events.schemas.plan import PlanFailed, PlanGenerated, PlanRevised
from libs.events.schemas.registry import event_of
from libs.events.store import EventStore


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
