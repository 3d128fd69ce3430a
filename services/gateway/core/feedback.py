"""Feedback use cases (spec A): a rating of a workflow's result by the workflow's owner, shown in its history."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from libs.security.auth import Principal
from services.gateway.core import Core, workflows
from services.gateway.core.errors import ApiError, NotFound

RATINGS = ("positive", "negative")
MAX_COMMENT = 2000


class Feedback(msgspec.Struct, frozen=True, kw_only=True):
    result_id: str | None
    rating: str
    comment: str | None
    created_at: datetime


async def give(core: Core, principal: Principal, workflow_id: uuid.UUID, result_id: str | None, rating: str,
               comment: str | None) -> None:
    """Record (or replace) the caller's rating of one of their workflow's results (a step id), or of the
    workflow as a whole when no result is named."""
    if rating not in RATINGS:
        raise ApiError(400, 'rating must be "positive" or "negative"', "rating")
    if comment is not None and len(comment) > MAX_COMMENT:
        raise ApiError(400, f"comment must be at most {MAX_COMMENT} characters", "comment")
    workflow = await workflows.owned(core, principal, workflow_id, "workflowId")
    if result_id is not None and result_id not in {step["id"] for step in workflow.steps}:
        raise NotFound("Result", "resultId")
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        await conn.execute(
            "INSERT INTO feedback (id, tenant_id, user_id, workflow_id, result_id, rating, comment)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (tenant_id, user_id, workflow_id, (coalesce(result_id, '')))"
            " DO UPDATE SET rating = excluded.rating, comment = excluded.comment, created_at = clock_timestamp()",
            uuid.uuid4(), principal.tenant_id, principal.user_id, workflow.id, result_id, rating, comment)


async def of_workflow(core: Core, principal: Principal, workflow_id: uuid.UUID) -> list[Feedback]:
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch("SELECT result_id, rating, comment, created_at FROM feedback WHERE tenant_id = $1"
                                " AND user_id = $2 AND workflow_id = $3 ORDER BY created_at",
                                principal.tenant_id, principal.user_id, workflow_id)
    return [Feedback(**dict(r)) for r in rows]
