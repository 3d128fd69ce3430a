"""Durable timers: a command to publish at a due time, stored in the transaction that calls for it.

The scheduler service fires each pending timer once (services/scheduler/timers.py). The receiving service's
command handler is idempotent by command id, so a re-publish after a scheduler crash is a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from libs.events.schemas import CommandEnvelope

NOTIFY_CHANNEL = "weft_timers"
# uuid5 namespace for ids derived from what a timer is for (a run's delay step, an approval deadline, ...).
TIMER_NAMESPACE = uuid.UUID("3b0f2a4e-6c1d-4f5e-9a7b-2d8c4e6f1a30")


class Timer(msgspec.Struct, frozen=True, kw_only=True):
    timer_id: uuid.UUID  # deterministic where possible (uuid5 of what it is for): set twice = once
    due_at: datetime  # aware UTC
    service: str  # who gets the command: "executor" | "notifier" | ...
    envelope: CommandEnvelope  # published to weft.cmd.<service>.<tenant>.<CommandType>, Nats-Msg-Id = command_id


class CancelTimers(msgspec.Struct, frozen=True, kw_only=True):
    """Passed with the timers of an append: cancel, in the same transaction, every pending timer of `service`
    whose command is one of `command_types` for this run and step (e.g. an approval's deadline and reminders
    once a decision resolved it), whatever due time or deadline they were set for."""

    service: str
    command_types: tuple[str, ...]
    run_id: uuid.UUID
    step_id: str


def timer_id_for(*parts: object) -> uuid.UUID:
    """A deterministic timer id from what the timer is for, e.g. timer_id_for("delay", run_id, step_id, 1)."""
    return uuid.uuid5(TIMER_NAMESPACE, "/".join(str(p) for p in parts))


def _check(tenant_id: str, timer: Timer) -> None:
    if timer.envelope.tenant_id != tenant_id:
        # A timer publishes as its envelope's tenant: it may never carry a command into another tenant.
        raise ValueError(f"timer {timer.timer_id}: envelope tenant {timer.envelope.tenant_id!r} is not {tenant_id!r}")
    if timer.due_at.tzinfo is None:
        raise ValueError(f"timer {timer.timer_id}: due_at must be timezone-aware")


async def set_timers(conn: asyncpg.Connection, tenant_id: str, timers: Sequence[Timer | CancelTimers]) -> None:
    """Insert timers inside the caller's tenant transaction (then apply any CancelTimers among them).

    Setting a timer id again updates a pending timer (a new due time or command) and leaves a fired or
    cancelled one alone: a replayed decision never fires a timer twice, and a cancelled timer stays cancelled.
    """
    cancels = [t for t in timers if isinstance(t, CancelTimers)]
    timers = [t for t in timers if not isinstance(t, CancelTimers)]
    for cancel in cancels:
        await _cancel_matching(conn, tenant_id, cancel)
    if not timers:
        return
    for timer in timers:
        _check(tenant_id, timer)
    await conn.execute(
        "INSERT INTO timers (timer_id, tenant_id, due_at, service, command_type, command_id, envelope)"
        " SELECT t.id, $1, t.due, t.service, t.ctype, t.cid, t.env::jsonb"
        " FROM unnest($2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::uuid[], $7::text[])"
        " AS t(id, due, service, ctype, cid, env)"
        " ON CONFLICT (timer_id) DO UPDATE SET due_at = excluded.due_at, service = excluded.service,"
        " command_type = excluded.command_type, command_id = excluded.command_id, envelope = excluded.envelope"
        " WHERE timers.status = 'pending'",
        tenant_id,
        [t.timer_id for t in timers],
        [t.due_at for t in timers],
        [t.service for t in timers],
        [type(t.envelope.command).__name__ for t in timers],
        [t.envelope.command_id for t in timers],
        [msgspec.json.encode(t.envelope).decode() for t in timers],
    )


async def _cancel_matching(conn: asyncpg.Connection, tenant_id: str, cancel: CancelTimers) -> None:
    # A cancel that commits before the firing loop locks the row wins; one that waits for that lock finds the
    # timer fired and leaves it (the command it published is then a no-op in its decider).
    await conn.execute(
        "UPDATE timers SET status = 'cancelled' WHERE tenant_id = $1 AND status = 'pending' AND service = $2"
        " AND command_type = ANY($3::text[]) AND envelope->'command'->>'run_id' = $4"
        " AND envelope->'command'->>'step_id' = $5",
        tenant_id, cancel.service, list(cancel.command_types), str(cancel.run_id), cancel.step_id)


async def cancel_timer(conn: asyncpg.Connection, tenant_id: str, timer_id: uuid.UUID) -> bool:
    """Cancel a pending timer inside the caller's tenant transaction; False if it already fired (or is unknown).

    The firing loop locks a timer row while it publishes, so a cancel that commits first wins and one that
    waits for the lock sees 'fired' and returns False: a cancelled timer never fires."""
    return bool(
        await conn.fetchval(
            "UPDATE timers SET status = 'cancelled' WHERE timer_id = $1 AND tenant_id = $2 AND status = 'pending'"
            " RETURNING true",
            timer_id,
            tenant_id,
        )
    )


__all__ = ["NOTIFY_CHANNEL", "CancelTimers", "Timer", "cancel_timer", "set_timers", "timer_id_for"]
