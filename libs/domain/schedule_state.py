"""A schedule's settings rules, and its state folded from its events: one fold shared by the scheduler's
decider and the schedules read model, which stores the folded state beside its columns in the append
transaction (so the scheduler decides from that snapshot at its stream_version instead of re-reading an
ever-growing stream)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from libs.domain import cron
from libs.events.errors import DomainError
from libs.events.schemas import Event
from libs.events.schemas.schedule import (
    MISSED_POLICIES,
    OVERLAP_POLICIES,
    OccurrenceDeferred,
    OccurrenceFired,
    OccurrencesMissed,
    OccurrenceSkipped,
    OccurrencesSkipped,
    ScheduleCreated,
    ScheduledRunFinished,
    ScheduleDeleted,
    SchedulePaused,
    ScheduleUpdated,
)

MAX_QUEUED = 100
MAX_PAUSE_AFTER = 1000
_SETTINGS = ("cron_expression", "timezone", "inputs", "missed_execution_policy", "overlap_policy", "max_queued",
             "pause_after_failures", "enabled")


class ActiveRun(msgspec.Struct, frozen=True):
    run_id: UUID
    fired_at: datetime


class Waiting(msgspec.Struct, frozen=True):
    occurrence_at: datetime
    reason: str  # overlap (buffered) | queue


class ScheduleState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    deleted: bool = False
    schedule_id: UUID | None = None
    workflow_id: UUID | None = None
    cron_expression: str = ""
    timezone: str = "UTC"
    inputs: dict[str, Any] = {}
    missed_execution_policy: str = "run_immediately"
    overlap_policy: str = "skip"
    max_queued: int = 10
    pause_after_failures: int = 0
    enabled: bool = False
    paused_reason: str | None = None
    created_by: str = ""
    source: str = "api"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Occurrences up to the cursor are handled (fired, skipped, deferred or missed); later ones are not yet.
    cursor: datetime | None = None
    active_runs: tuple[ActiveRun, ...] = ()  # runs this schedule started that have not ended
    waiting: tuple[Waiting, ...] = ()  # deferred occurrences, oldest first
    failures: int = 0  # consecutive failed runs
    last_run_at: datetime | None = None
    last_run_id: UUID | None = None


initial = ScheduleState()


def _later(cursor: datetime | None, at: datetime) -> datetime:
    return at if cursor is None or at > cursor else cursor


def _without(waiting: tuple[Waiting, ...], at: datetime) -> tuple[Waiting, ...]:
    return tuple(w for w in waiting if w.occurrence_at != at)


def evolve(state: ScheduleState, event: Event) -> ScheduleState:
    replace = msgspec.structs.replace
    match event:
        case ScheduleCreated() as e:
            return ScheduleState(
                exists=True, schedule_id=e.schedule_id, workflow_id=e.workflow_id,
                **{name: getattr(e, name) for name in _SETTINGS}, created_by=e.created_by, source=e.source,
                created_at=e.at, updated_at=e.at, cursor=e.at,
            )
        case ScheduleUpdated() as e:
            changed = {n: getattr(e, n) for n in _SETTINGS if getattr(e, n) is not msgspec.UNSET}
            resumed = changed.get("enabled") is True and not state.enabled
            retimed = any(n in changed and changed[n] != getattr(state, n) for n in ("cron_expression", "timezone"))
            state = replace(state, **changed, updated_at=e.at)
            if resumed:
                state = replace(state, paused_reason=None, failures=0)
            # Occurrences of a new cron, or from while the schedule was off, are not "missed": count from now.
            return replace(state, cursor=e.at) if resumed or retimed else state
        case ScheduleDeleted() as e:
            return replace(state, deleted=True, updated_at=e.at)
        case SchedulePaused() as e:
            return replace(state, enabled=False, paused_reason=e.reason, updated_at=e.at)
        case OccurrenceFired() as e:
            return replace(
                state, cursor=_later(state.cursor, e.occurrence_at), waiting=_without(state.waiting, e.occurrence_at),
                active_runs=(*state.active_runs, ActiveRun(e.run_id, e.at)), last_run_at=e.at, last_run_id=e.run_id,
            )
        case OccurrenceSkipped() as e:
            return replace(state, cursor=_later(state.cursor, e.occurrence_at),
                           waiting=_without(state.waiting, e.occurrence_at))
        case OccurrenceDeferred() as e:
            return replace(state, cursor=_later(state.cursor, e.occurrence_at),
                           waiting=(*state.waiting, Waiting(e.occurrence_at, e.reason)))
        case OccurrencesMissed(through=through) | OccurrencesSkipped(through=through):
            return replace(state, cursor=_later(state.cursor, through))
        case ScheduledRunFinished() as e:
            failures = state.failures + 1 if e.status == "failed" else 0 if e.status == "completed" else state.failures
            return replace(state, active_runs=tuple(r for r in state.active_runs if r.run_id != e.run_id),
                           failures=failures)
    return state


def live(state: ScheduleState) -> bool:
    return state.exists and not state.deleted and state.enabled


def next_run_at(state: ScheduleState) -> datetime | None:
    """The first occurrence still to handle; None when the schedule does not fire (off, or no occurrence)."""
    if not live(state) or state.cursor is None:
        return None
    try:
        return cron.next_after(cron.parse(state.cron_expression), cron.zone(state.timezone), state.cursor)
    except cron.CronError:
        return None


def check_settings(values: dict[str, Any]) -> None:
    """Raise DomainError(400, ..., field) for a setting that cannot be used."""
    if "cron_expression" in values:
        try:
            cron.parse(values["cron_expression"])
        except cron.CronError as exc:
            raise DomainError(400, f"cron_expression {exc}", "cron_expression") from None
    if "timezone" in values:
        try:
            cron.zone(values["timezone"])
        except cron.CronError as exc:
            raise DomainError(400, f"timezone: {exc}", "timezone") from None
    if "missed_execution_policy" in values and values["missed_execution_policy"] not in MISSED_POLICIES:
        raise DomainError(400, f"missed_execution_policy must be one of: {', '.join(MISSED_POLICIES)}",
                          "missed_execution_policy")
    if "overlap_policy" in values and values["overlap_policy"] not in OVERLAP_POLICIES:
        raise DomainError(400, f"overlap_policy must be one of: {', '.join(OVERLAP_POLICIES)}", "overlap_policy")
    if "max_queued" in values and not 1 <= values["max_queued"] <= MAX_QUEUED:
        raise DomainError(400, f"max_queued must be between 1 and {MAX_QUEUED}", "max_queued")
    if "pause_after_failures" in values and not 0 <= values["pause_after_failures"] <= MAX_PAUSE_AFTER:
        raise DomainError(400, f"pause_after_failures must be between 0 (never) and {MAX_PAUSE_AFTER}",
                          "pause_after_failures")


_decoder = msgspec.json.Decoder(ScheduleState)


def decode(raw: str | bytes) -> ScheduleState:
    return _decoder.decode(raw)
