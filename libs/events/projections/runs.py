"""The runs read model: status, outputs and per-step node states."""

from __future__ import annotations

import asyncpg
import msgspec

from libs.events.schemas.registry import event_of
from libs.events.schemas.run import (
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
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


async def project(conn: asyncpg.Connection, rec: RecordedEvent) -> None:
    match event_of(rec):
        case RunCreated() as e:
            await conn.execute(
                # Run numbers count per workflow in log order (appends are serialised), so a rebuild
                # gives every run the same number again.
                "INSERT INTO runs (id, tenant_id, workflow_id, status, inputs, created_by, created_at,"
                " started_at, stream_version, run_number) VALUES ($1, $2, $3, 'pending', $4::jsonb, $5, $6, $6, $7,"
                " (SELECT coalesce(max(run_number), 0) + 1 FROM runs WHERE workflow_id = $3))"
                " ON CONFLICT (id) DO NOTHING",
                e.run_id,
                rec.tenant_id,
                e.workflow_id,
                _json(e.inputs),
                e.created_by,
                e.at,
                rec.version,
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
        case StepFailed() as e:
            await _step(conn, rec, e.run_id, e.step_id, {"status": "failed", "attempt": e.attempt,
                                                         "error": e.error, "finished_at": e.at.isoformat()})
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
            await conn.execute(
                "UPDATE runs SET status = 'failed', error = $2, finished_at = $3, stream_version = $4"
                " WHERE id = $1",
                e.run_id,
                e.error,
                e.at,
                rec.version,
            )
