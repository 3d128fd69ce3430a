"""The schedules read model (one row per schedule, with its folded state) and every occurrence's fate."""

from __future__ import annotations

import asyncpg
import msgspec

from libs.domain import schedule_state
from libs.events.schemas.registry import event_of
from libs.events.schemas.schedule import (
    OccurrenceDeferred,
    OccurrenceFired,
    OccurrencesMissed,
    OccurrenceSkipped,
    OccurrencesSkipped,
    ScheduledRunFinished,
)
from libs.events.store import RecordedEvent

_WAITING_STATUS = {"overlap": "buffered", "queue": "queued"}


def _json(value) -> str:
    return msgspec.json.encode(value).decode()


async def project(conn: asyncpg.Connection, rec: RecordedEvent) -> None:
    event = event_of(rec)
    raw = await conn.fetchval("SELECT state::text FROM schedules WHERE id = $1", event.schedule_id)
    before = schedule_state.initial if raw is None else schedule_state.decode(raw)
    state = schedule_state.evolve(before, event)
    if state.deleted:
        await conn.execute("DELETE FROM schedule_occurrences WHERE schedule_id = $1", event.schedule_id)
        await conn.execute("DELETE FROM schedules WHERE id = $1", event.schedule_id)
        return
    await _save(conn, rec, state, insert=raw is None)
    await _occurrence(conn, rec, state, event)


async def _save(conn: asyncpg.Connection, rec: RecordedEvent, s: schedule_state.ScheduleState, *, insert: bool) -> None:
    values = (
        s.schedule_id, rec.tenant_id, s.workflow_id, s.cron_expression, s.timezone, _json(s.inputs),
        s.missed_execution_policy, s.overlap_policy, s.max_queued, s.pause_after_failures, s.enabled, s.paused_reason,
        s.source, s.cursor, schedule_state.next_run_at(s), s.last_run_at, s.last_run_id, s.failures,
        len(s.active_runs), len(s.waiting), s.created_by, s.created_at, s.updated_at, rec.version, _json(s),
    )
    if insert:
        await conn.execute(
            "INSERT INTO schedules (id, tenant_id, workflow_id, cron_expression, timezone, inputs,"
            " missed_execution_policy, overlap_policy, max_queued, pause_after_failures, enabled, paused_reason,"
            " source, cursor_at, next_run_at, last_run_at, last_run_id, consecutive_failures, active_runs,"
            " pending_count, created_by, created_at, updated_at, stream_version, state) VALUES ($1, $2, $3, $4, $5,"
            " $6::jsonb, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,"
            " $25::jsonb)",
            *values,
        )
        return
    await conn.execute(
        "UPDATE schedules SET cron_expression = $4, timezone = $5, inputs = $6::jsonb, missed_execution_policy = $7,"
        " overlap_policy = $8, max_queued = $9, pause_after_failures = $10, enabled = $11, paused_reason = $12,"
        " source = $13, cursor_at = $14, next_run_at = $15, last_run_at = $16, last_run_id = $17,"
        " consecutive_failures = $18, active_runs = $19, pending_count = $20, created_by = $21, created_at = $22,"
        " updated_at = $23, stream_version = $24, state = $25::jsonb"
        " WHERE id = $1 AND tenant_id = $2 AND workflow_id = $3",
        *values,
    )


async def _insert(conn: asyncpg.Connection, rec: RecordedEvent, s: schedule_state.ScheduleState, occurrence_at,
                  status: str, **columns) -> None:
    names = ["schedule_id", "seq", "tenant_id", "workflow_id", "occurrence_at", "status", "recorded_at",
             "updated_at", *columns]
    values = [s.schedule_id, rec.version, rec.tenant_id, s.workflow_id, occurrence_at, status, rec.recorded_at,
              rec.recorded_at, *columns.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await conn.execute(
        f"INSERT INTO schedule_occurrences ({', '.join(names)}) VALUES ({placeholders})"  # noqa: S608 - fixed names
        " ON CONFLICT (schedule_id, seq) DO NOTHING",
        *values,
    )


async def _resolve_waiting(conn: asyncpg.Connection, rec: RecordedEvent, schedule_id, occurrence_at, status: str,
                           **columns) -> bool:
    """A deferred occurrence fired or was skipped: its row changes status rather than gaining a second row."""
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=5))
    done = await conn.fetchval(
        f"UPDATE schedule_occurrences SET status = $3, updated_at = $4, {sets}"  # noqa: S608 - fixed names
        " WHERE schedule_id = $1 AND occurrence_at = $2 AND status IN ('buffered', 'queued') RETURNING true",
        schedule_id, occurrence_at, status, rec.recorded_at, *columns.values(),
    )
    return bool(done)


async def _occurrence(conn: asyncpg.Connection, rec: RecordedEvent, s: schedule_state.ScheduleState, event) -> None:
    match event:
        case OccurrenceFired() as e:
            fields = {"trigger": e.trigger, "run_id": e.run_id}
            if not await _resolve_waiting(conn, rec, e.schedule_id, e.occurrence_at, "fired", **fields):
                await _insert(conn, rec, s, e.occurrence_at, "fired", **fields)
        case OccurrenceSkipped() as e:
            fields = {"reason": e.reason, "detail": e.detail or None}
            if not await _resolve_waiting(conn, rec, e.schedule_id, e.occurrence_at, "skipped", **fields):
                await _insert(conn, rec, s, e.occurrence_at, "skipped", **fields)
        case OccurrenceDeferred() as e:
            await _insert(conn, rec, s, e.occurrence_at, _WAITING_STATUS.get(e.reason, "queued"), reason=e.reason)
        case OccurrencesMissed() as e:
            await _insert(conn, rec, s, e.first_at, "missed", after_at=e.after, through_at=e.through, last_at=e.last_at,
                          policy=e.policy, detail=f"{e.queued} queued" if e.policy == "queue" else None,
                          cron_expression=s.cron_expression, timezone=s.timezone)
        case OccurrencesSkipped() as e:
            await _insert(conn, rec, s, e.first_at, "skipped", after_at=e.after, through_at=e.through,
                          last_at=e.last_at, reason=e.reason, cron_expression=s.cron_expression, timezone=s.timezone)
        case ScheduledRunFinished() as e:
            await conn.execute(
                "UPDATE schedule_occurrences SET run_status = $3, updated_at = $4"
                " WHERE schedule_id = $1 AND run_id = $2",
                e.schedule_id, e.run_id, e.status, rec.recorded_at,
            )
