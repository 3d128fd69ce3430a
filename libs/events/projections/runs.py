"""The runs read model: status, outputs and per-step node states."""

from __future__ import annotations

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


async def _step(conn: asyncpg.Connection, rec: RecordedEvent, run_id, step_id: str, state: dict) -> None:
    # Merge into the step's state so later events keep earlier fields (started_at survives completion).
    await conn.execute(
        "UPDATE runs SET steps = jsonb_set(steps, ARRAY[$2::text],"
        " coalesce(steps -> $2::text, '{}'::jsonb) || $3::jsonb), stream_version = $4 WHERE id = $1",
        run_id,
        step_id,
        _json(state),
        rec.version,
    )


async def _finish(conn: asyncpg.Connection, rec: RecordedEvent, run_id, status: str, error: str | None, at) -> None:
    await conn.execute(
        "UPDATE runs SET status = $2, error = $3, finished_at = $4, stream_version = $5 WHERE id = $1",
        run_id, status, error, at, rec.version,
    )


async def project(conn: asyncpg.Connection, rec: RecordedEvent) -> None:
    try:
        await _apply(conn, rec)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "runs_one_active_per_workflow":
            raise
        # Raising aborts the append: the StartRun is refused, nothing is recorded but the refusal.
        raise DomainError(409, "A run of this workflow is already active; wait for it or stop it") from exc


async def _apply(conn: asyncpg.Connection, rec: RecordedEvent) -> None:
    match event_of(rec):
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
        case RunStarted() as e:
            await conn.execute(
                "UPDATE runs SET status = 'running', stream_version = $2 WHERE id = $1", e.run_id, rec.version
            )
        case StepStarted() as e:
            await _step(conn, rec, e.run_id, e.step_id, {"status": "running", "attempt": e.attempt,
                                                         "started_at": e.at.isoformat()})
        case StepCompleted() as e:
            await _step(conn, rec, e.run_id, e.step_id, {"status": "completed", "attempt": e.attempt,
                                                         "output": e.output, "finished_at": e.at.isoformat()})
            # A decided approval lets the run go on once no other step awaits one.
            await conn.execute(
                "UPDATE runs SET status = 'running' WHERE id = $1 AND status = 'awaiting_approval'"
                " AND NOT jsonb_path_exists(steps, '$.* ? (@.status == \"awaiting_approval\")')", e.run_id)
        case StepFailed() as e:
            await _step(conn, rec, e.run_id, e.step_id, {"status": "failed", "attempt": e.attempt,
                                                         "error": e.error, "finished_at": e.at.isoformat()})
            # A rejected approval: the run is no longer paused (it fails or goes on with on_error: continue).
            await conn.execute(
                "UPDATE runs SET status = 'running' WHERE id = $1 AND status = 'awaiting_approval'"
                " AND NOT jsonb_path_exists(steps, '$.* ? (@.status == \"awaiting_approval\")')", e.run_id)
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
        case StepSkipped() as e:
            await _step(conn, rec, e.run_id, e.step_id, {"status": "skipped", "reason": e.reason,
                                                         "finished_at": e.at.isoformat()})
        case StepRetryScheduled() as e:
            await _step(conn, rec, e.run_id, e.step_id, {"status": "retrying", "attempt": e.attempt, "error": e.error,
                                                         "retry_at": e.retry_at.isoformat()})
        case StepWaiting() as e:
            await _step(conn, rec, e.run_id, e.step_id, {"status": "waiting", "until": e.until.isoformat()})
        case StepAwaitingApproval() as e:
            await _step(conn, rec, e.run_id, e.step_id, {"status": "awaiting_approval", "approval": e.approval,
                                                         "paused_at": e.at.isoformat()})
            await conn.execute("UPDATE runs SET status = 'awaiting_approval' WHERE id = $1", e.run_id)
        case ApprovalDecisionRecorded() as e if e.token_id is not None:
            await consume_token(conn, rec, e.token_id, "step")
