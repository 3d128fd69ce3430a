"""The runs read model: status, outputs and per-step node states."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from libs.events.errors import DomainError
from libs.events.projections.approvals import consume_token
from libs.events.schemas.registry import event_of
from libs.events.schemas.run import (
    ApprovalDecisionRecorded,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    RunTerminated,
    StepAwaitingApproval,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepSkipped,
    StepStarted,
    StepWaiting,
)
from libs.events.store import RecordedEvent


def _json(value) -> str:
    return msgspec.json.encode(value).decode()


# A run's step states, merged per step (later events keep earlier fields: started_at survives completion).
# $2 is {step_id: fields}; one statement for every step event of a batch. $5 sets the status (RunStarted, a
# pause); otherwise a decided approval (or a rejected one) lets a paused run go on once no step awaits one
# any more ($4).
_MERGED_STEPS = ("steps || coalesce((SELECT jsonb_object_agg(p.key, coalesce(steps -> p.key, '{}'::jsonb) || p.value)"
                 " FROM jsonb_each($2::jsonb) AS p), '{}'::jsonb)")
_UPDATE_STEPS = (
    f"UPDATE runs SET steps = {_MERGED_STEPS}, stream_version = $3,"
    " status = CASE WHEN $5::text IS NOT NULL THEN $5::text WHEN $4 AND status = 'awaiting_approval'"
    f" AND NOT jsonb_path_exists({_MERGED_STEPS}, '$.* ? (@.status == \"awaiting_approval\")')"
    " THEN 'running' ELSE status END WHERE id = $1"
)


class _StepPatch:
    """Step-state changes of consecutive events of one run, written by one UPDATE (_UPDATE_STEPS)."""

    def __init__(self) -> None:
        self.run_id = None
        self.fields: dict[str, dict] = {}
        self.version = 0
        self.unpause = False
        self.status: str | None = None

    def add(self, rec: RecordedEvent, run_id, step_id: str | None, fields: dict, *, unpause: bool = False) -> None:
        self.run_id, self.version = run_id, rec.version
        if step_id is not None:
            self.fields.setdefault(step_id, {}).update(fields)
        self.unpause = self.unpause or unpause

    async def flush(self, conn: asyncpg.Connection) -> None:
        if self.run_id is not None:
            await conn.execute(_UPDATE_STEPS, self.run_id, _json(self.fields), self.version, self.unpause,
                               self.status)
        self.__init__()


async def _finish(conn: asyncpg.Connection, rec: RecordedEvent, run_id, status: str, error: str | None, at) -> None:
    await conn.execute(
        "UPDATE runs SET status = $2, error = $3, finished_at = $4, stream_version = $5 WHERE id = $1",
        run_id, status, error, at, rec.version,
    )


async def project(conn: asyncpg.Connection, recorded: Sequence[RecordedEvent]) -> None:
    """Apply consecutive run events in order; the step changes between two run-level events (for one run)
    are merged into one statement."""
    patch = _StepPatch()
    try:
        for rec in recorded:
            event = event_of(rec)
            if patch.run_id is not None and getattr(event, "run_id", None) != patch.run_id:
                await patch.flush(conn)
            if not _patch_step(patch, rec, event):
                await patch.flush(conn)
                await _apply(conn, rec, event)
        await patch.flush(conn)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "runs_one_active_per_workflow":
            raise
        # Raising aborts the append: the StartRun is refused, nothing is recorded but the refusal.
        raise DomainError(409, "A run of this workflow is already active; wait for it or stop it") from exc


def _patch_step(patch: _StepPatch, rec: RecordedEvent, event) -> bool:
    """Add a step-only event's change to the patch; False for events that are not step-only."""
    match event:
        case RunStarted() as e:  # written with the steps it starts
            patch.add(rec, e.run_id, None, {})
            patch.status = "running"
        case StepStarted() as e:
            patch.add(rec, e.run_id, e.step_id, {"status": "running", "attempt": e.attempt, "started_at": e.at.isoformat()})
        case StepCompleted() as e:
            patch.add(rec, e.run_id, e.step_id, {"status": "completed", "attempt": e.attempt, "output": e.output,
                                                 "finished_at": e.at.isoformat()}, unpause=True)
        case StepFailed() as e:
            # A rejected approval: the run is no longer paused (it fails or goes on with on_error: continue).
            patch.add(rec, e.run_id, e.step_id, {"status": "failed", "attempt": e.attempt, "error": e.error,
                                                 "finished_at": e.at.isoformat()}, unpause=True)
        case StepSkipped() as e:
            patch.add(rec, e.run_id, e.step_id, {"status": "skipped", "reason": e.reason, "finished_at": e.at.isoformat()})
        case StepRetryScheduled() as e:
            patch.add(rec, e.run_id, e.step_id, {"status": "retrying", "attempt": e.attempt, "error": e.error,
                                                 "retry_at": e.retry_at.isoformat()})
        case StepWaiting() as e:
            patch.add(rec, e.run_id, e.step_id, {"status": "waiting", "until": e.until.isoformat()})
        case _:
            return False
    return True


async def _apply(conn: asyncpg.Connection, rec: RecordedEvent, event) -> None:
    match event:
        case RunCreated() as e:
            await conn.execute(
                # Run numbers count per workflow in log order (appends are serialised), so a rebuild
                # gives every run the same number again.
                "INSERT INTO runs (id, tenant_id, workflow_id, status, inputs, created_by, created_at,"
                " started_at, stream_version, run_number, exclusive) VALUES ($1, $2, $3, 'pending', $4::jsonb, $5,"
                " $6, $6, $7, (SELECT coalesce(max(run_number), 0) + 1 FROM runs WHERE workflow_id = $3), $8)"
                " ON CONFLICT (id) DO NOTHING",
                e.run_id,
                rec.tenant_id,
                e.workflow_id,
                _json(e.inputs),
                e.created_by,
                e.at,
                rec.version,
                e.definition.get("concurrency") != "unlimited",
            )
        case RunCompleted() as e:
            await conn.execute(
                "UPDATE runs SET status = 'completed', outputs = $2::jsonb, finished_at = $3,"
                " stream_version = $4 WHERE id = $1",
                e.run_id,
                _json(e.outputs),
                e.at,
                rec.version,
            )
        case RunFailed() as e:
            await _finish(conn, rec, e.run_id, "failed", e.error, e.at)
        case RunCancelled() as e:
            await _finish(conn, rec, e.run_id, "cancelled", e.reason or None, e.at)
        case RunTerminated() as e:
            await _finish(conn, rec, e.run_id, "cancelled", e.reason or None, e.at)
        case StepAwaitingApproval() as e:
            patch = _StepPatch()
            patch.add(rec, e.run_id, e.step_id, {"status": "awaiting_approval", "approval": e.approval,
                                                 "paused_at": e.at.isoformat()})
            patch.status = "awaiting_approval"
            await patch.flush(conn)
        case ApprovalDecisionRecorded() as e if e.token_id is not None:
            await consume_token(conn, rec, e.token_id, "step")
