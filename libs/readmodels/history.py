"""The assistant's history read model: one row per assistant command, its status following its latest run.

Projected inline (in the append's transaction) from the workflow's events and its runs' creation, start and
end, so GET /api/history is never stale; `weft projections rebuild` replays it like every read model.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from libs.events.schemas.plan import PlanApproved
from libs.events.schemas.registry import event_of
from libs.events.schemas.run import RunCancelled, RunCompleted, RunCreated, RunFailed, RunStarted, RunTerminated
from libs.events.schemas.workflow import WorkflowCreated, WorkflowDeleted
from libs.events.store import RecordedEvent

SOURCE = "assistant"  # workflows the assistant surface created (CreateWorkflowFromGoal.source)
_ENDS = {RunCompleted: "completed", RunFailed: "failed", RunCancelled: "cancelled", RunTerminated: "cancelled"}

# Every change is one statement: a CTE `changed` (tenant_id, user_id, before, after) with the rows' status
# before and after (NULL: inserted or deleted), and this tail, which moves the per-user totals along.
_COUNT_TAIL = (
    ", deltas AS (SELECT tenant_id, user_id, before AS status, -1 AS d FROM changed"
    "   WHERE before IS NOT NULL AND before IS DISTINCT FROM after"
    "   UNION ALL SELECT tenant_id, user_id, after, 1 FROM changed WHERE after IS NOT NULL AND before IS DISTINCT FROM after)"
    " INSERT INTO history_counts (tenant_id, user_id, status, n)"
    " SELECT tenant_id, user_id, status, sum(d) FROM deltas GROUP BY 1, 2, 3"
    " ON CONFLICT (tenant_id, user_id, status) DO UPDATE SET n = history_counts.n + excluded.n"
    " RETURNING tenant_id, user_id, status, n"
)


async def _change(conn: asyncpg.Connection, statement: str, *args) -> None:
    """Run one change and drop the totals it brought to zero, so the table holds the same rows however the
    events were batched (a rebuild replays them in other batches than the live appends)."""
    emptied = [r for r in await conn.fetch(statement, *args) if r["n"] == 0]
    if emptied:
        await conn.execute(
            "DELETE FROM history_counts c USING unnest($1::text[], $2::text[], $3::text[]) AS z(t, u, s)"
            " WHERE c.tenant_id = z.t AND c.user_id = z.u AND c.status = z.s AND c.n = 0",
            [r["tenant_id"] for r in emptied], [r["user_id"] for r in emptied], [r["status"] for r in emptied])
_INSERT = (
    "WITH changed AS (INSERT INTO history (id, tenant_id, user_id, workflow_id, command, action_id, status, created_at)"
    " VALUES ($1, $2, $3, $1, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING"
    " RETURNING tenant_id, user_id, NULL::text AS before, status AS after)" + _COUNT_TAIL
)
_APPROVED = (
    "WITH changed AS (UPDATE history SET status = 'pending' WHERE tenant_id = $1 AND id = $2"
    " AND status = 'awaiting_plan_approval' RETURNING tenant_id, user_id, 'awaiting_plan_approval' AS before,"
    " status AS after)" + _COUNT_TAIL
)
_DELETE = (
    "WITH changed AS (DELETE FROM history WHERE tenant_id = $1 AND id = $2"
    " RETURNING tenant_id, user_id, status AS before, NULL::text AS after)" + _COUNT_TAIL
)
# One statement per run and batch; a run is found by its workflow (RunCreated in the batch) or as the row's
# latest run. An older run ending after a newer one started does not touch the row (last_run_id differs).
_UPDATE_RUN = (
    "WITH changed AS (UPDATE history h SET last_run_id = $3, status = $4,"
    " executed_at = coalesce($5, h.executed_at), finished_at = $6"
    " FROM (SELECT id, status FROM history WHERE tenant_id = $1"
    "       AND (id = $2::uuid OR ($2::uuid IS NULL AND last_run_id = $3))) o"
    " WHERE h.id = o.id RETURNING h.tenant_id, h.user_id, o.status AS before, h.status AS after)" + _COUNT_TAIL
)


async def project_workflow(conn: asyncpg.Connection, recorded: Sequence[RecordedEvent]) -> None:
    for rec in recorded:
        match event_of(rec):
            case WorkflowCreated(source=source) as e if source == SOURCE:
                await _change(
                    conn, _INSERT, e.workflow_id, rec.tenant_id, e.created_by, e.goal or e.name, e.quick_action_id,
                    "pending" if e.status == "active" else "awaiting_plan_approval", e.at)
            case PlanApproved(workflow_id=workflow_id):
                await _change(conn, _APPROVED, rec.tenant_id, workflow_id)
            case WorkflowDeleted(workflow_id=workflow_id):
                await _change(conn, _DELETE, rec.tenant_id, workflow_id)


class _RunChange:
    __slots__ = ("workflow_id", "status", "executed_at", "finished_at")

    def __init__(self) -> None:
        self.workflow_id = None
        self.status = "pending"
        self.executed_at: datetime | None = None
        self.finished_at: datetime | None = None


async def project_runs(conn: asyncpg.Connection, recorded: Sequence[RecordedEvent]) -> None:
    changes: dict[tuple[str, object], _RunChange] = {}
    for rec in recorded:
        event = event_of(rec)
        kind = type(event)
        if kind not in (RunCreated, RunStarted) and kind not in _ENDS:
            continue  # step events do not change a command's history row
        change = changes.setdefault((rec.tenant_id, event.run_id), _RunChange())
        if isinstance(event, RunCreated):
            change.workflow_id, change.executed_at = event.workflow_id, event.at
        elif isinstance(event, RunStarted):
            change.status = "running"
        else:
            change.status, change.finished_at = _ENDS[kind], event.at
    for (tenant_id, run_id), change in changes.items():
        await _change(conn, _UPDATE_RUN, tenant_id, change.workflow_id, run_id, change.status, change.executed_at,
                      change.finished_at)
