"""The schedule decider: pure. `now`, ids and what the workflow looks like come in from outside.

`decide` handles the API's commands; `tick` decides what a schedule does at a moment: record its runs that
ended, release deferred occurrences, apply the missed-execution policy to occurrences that passed while no
scheduler ran, and fire (or skip, or defer) the occurrences that are due now.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from libs.domain import cron
from libs.events.errors import DomainError
from libs.domain.schedule_state import ScheduleState, check_settings, evolve, live
from libs.events.schemas import Event
from libs.events.schemas.schedule import (
    CreateSchedule,
    DeleteSchedule,
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
    UpdateSchedule,
)

ON_TIME_LIMIT = 1000  # occurrences one tick fires on time (bounds a pathological grace window)
RUN_ENDINGS = {"completed": "completed", "failed": "failed", "cancelled": "cancelled"}
# Occurrence -> run id: the same occurrence always names the same run, so a second firing (another
# replica, a replay after a crash) is refused by the executor as "Run already exists".
_RUN_NAMESPACE = uuid.UUID("9e4c8a52-1f0b-4d7e-a3c6-5b2f7d9e0c14")


def run_id_for(schedule_id: uuid.UUID, occurrence_at: datetime) -> uuid.UUID:
    return uuid.uuid5(_RUN_NAMESPACE, f"{schedule_id}/{occurrence_at.astimezone(UTC).isoformat()}")


class WorkflowFacts(msgspec.Struct, frozen=True, kw_only=True):
    """The workflow and runs as the read models show them when a schedule is looked at."""

    exists: bool
    status: str = ""
    unlimited: bool = False  # definition.concurrency == "unlimited": runs may overlap
    other_active: int = 0  # active runs of the workflow that this schedule did not start
    run_statuses: dict[uuid.UUID, str] = {}  # this schedule's unfinished runs as the runs table shows them
    inputs_error: str | None = None  # the schedule's inputs against the current definition


_SETTINGS = ("cron_expression", "timezone", "inputs", "missed_execution_policy", "overlap_policy", "max_queued",
             "pause_after_failures", "enabled")


def _present(command) -> dict[str, Any]:
    return {n: getattr(command, n) for n in _SETTINGS if getattr(command, n) is not msgspec.UNSET}


def _found(state: ScheduleState, workflow_id: uuid.UUID) -> None:
    if not state.exists or state.deleted or state.workflow_id != workflow_id:
        raise DomainError(404, "Schedule not found")


class _Log:
    """Events decided so far, and the state they lead to (each decision sees the ones before it)."""

    def __init__(self, state: ScheduleState):
        self.state, self.events = state, []

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.state = evolve(self.state, event)


def _drop_waiting(log: _Log, reason: str, detail: str, at: datetime) -> None:
    for waiting in log.state.waiting:
        log.emit(OccurrenceSkipped(schedule_id=log.state.schedule_id, occurrence_at=waiting.occurrence_at,
                                   reason=reason, detail=detail, at=at))


def decide(command, state: ScheduleState) -> list[Event]:
    match command:
        case CreateSchedule() as c:
            if state.exists:
                raise DomainError(409, "Schedule already exists")
            check_settings(_present(c))
            return [ScheduleCreated(schedule_id=c.schedule_id, workflow_id=c.workflow_id, created_by=c.created_by,
                                    source=c.source, at=c.at, **_present(c))]
        case UpdateSchedule() as c:
            _found(state, c.workflow_id)
            changed = _present(c)
            check_settings(changed)
            log = _Log(state)
            if changed.get("enabled") is False and state.enabled:
                _drop_waiting(log, "disabled", "the schedule was disabled", c.at)
            if changed.get("enabled") is True and not state.enabled:
                # Say what happened while it was off; the cursor then restarts at `at` (schedule_state.evolve).
                _window_skipped(log, c.at)
            log.emit(ScheduleUpdated(schedule_id=c.schedule_id, at=c.at, **changed))
            return log.events
        case DeleteSchedule() as c:
            _found(state, c.workflow_id)
            return [ScheduleDeleted(schedule_id=c.schedule_id, reason=c.reason, at=c.at)]
    raise DomainError(400, f"unknown command {type(command).__name__}")


def _window_skipped(log: _Log, through: datetime) -> None:
    s = log.state
    try:
        c, tz = cron.parse(s.cron_expression), cron.zone(s.timezone)
    except cron.CronError:
        return
    first = cron.next_after(c, tz, s.cursor) if s.cursor else None
    if first is None or first > through:
        return
    last = cron.latest(c, tz, s.cursor, through)[-1]
    log.emit(OccurrencesSkipped(schedule_id=s.schedule_id, after=s.cursor, through=through, first_at=first,
                                last_at=last, reason="disabled", at=through))


# ---- a moment in a schedule's life ----------------------------------------------------------------------


def tick(state: ScheduleState, now: datetime, facts: WorkflowFacts, grace: timedelta) -> list[Event]:
    """What the schedule does at `now`. Every occurrence up to `now` ends up fired, skipped (with a reason),
    deferred, or inside a missed window, so the cursor always passes `now` when the schedule is live."""
    log = _Log(state)
    if not state.exists or state.deleted:
        return []
    sid = state.schedule_id
    _finish_runs(log, now, facts, grace)
    if not facts.exists:
        log.emit(ScheduleDeleted(schedule_id=sid, reason="the workflow was deleted", at=now))
        return log.events
    if not live(log.state):
        _drop_waiting(log, "disabled", log.state.paused_reason or "the schedule is disabled", now)
        return log.events
    try:
        c, tz = cron.parse(log.state.cron_expression), cron.zone(log.state.timezone)
    except cron.CronError as exc:  # checked on the way in; kept from a 500 loop if a rule ever tightens
        log.emit(SchedulePaused(schedule_id=sid, reason=f"invalid schedule: {exc}", at=now))
        return log.events
    # Deferred occurrences go first, oldest first, whenever nothing blocks them.
    while log.state.waiting and _may_start(log.state, facts):
        waiting = log.state.waiting[0]
        if not _unrunnable(log, waiting.occurrence_at, now, facts):
            _fire(log, waiting.occurrence_at, "buffered" if waiting.reason == "overlap" else "queued", now)
    late = now - grace
    first = cron.next_after(c, tz, log.state.cursor)
    if first is not None and first <= late:
        _missed(log, c, tz, first, late, now, facts)
    for occurrence in cron.occurrences(c, tz, log.state.cursor, now, limit=ON_TIME_LIMIT):
        _offer(log, occurrence, "on_time", now, facts)
    return log.events


def _finish_runs(log: _Log, now: datetime, facts: WorkflowFacts, grace: timedelta) -> None:
    s = log.state
    for active in s.active_runs:
        status = facts.run_statuses.get(active.run_id)
        if status in RUN_ENDINGS:
            ending = RUN_ENDINGS[status]
        elif status is None and now - active.fired_at > grace:
            ending = "not_started"  # refused (another run was active) or never started: not our run anymore
        else:
            continue
        log.emit(ScheduledRunFinished(schedule_id=s.schedule_id, run_id=active.run_id, status=ending, at=now))
        limit = log.state.pause_after_failures
        if ending == "failed" and limit and log.state.failures >= limit and log.state.enabled:
            log.emit(SchedulePaused(schedule_id=s.schedule_id, at=now,
                                    reason=f"paused after {limit} consecutive failed runs"))


def _missed(log: _Log, c: cron.Cron, tz, first: datetime, late: datetime, now: datetime, facts: WorkflowFacts) -> None:
    """Occurrences in (cursor, now - grace] passed while no scheduler ran: one window event, then the policy."""
    s = log.state
    policy = s.missed_execution_policy
    keep = cron.latest(c, tz, s.cursor, late, s.max_queued if policy == "queue" else 1)
    log.emit(OccurrencesMissed(schedule_id=s.schedule_id, after=s.cursor, through=late, first_at=first,
                               last_at=keep[-1], policy=policy, queued=len(keep) if policy == "queue" else 0, at=now))
    if policy == "run_immediately":
        _offer(log, keep[-1], "catch_up", now, facts)  # one run for the whole gap
    elif policy == "queue":
        for occurrence in keep:  # in order; each waits for the one before it unless runs may overlap
            _offer(log, occurrence, "queued", now, facts, queue=True)


def _may_start(s: ScheduleState, facts: WorkflowFacts) -> bool:
    if s.overlap_policy == "allow" and facts.unlimited:
        return True
    return not s.active_runs and facts.other_active == 0


def _offer(log: _Log, occurrence: datetime, trigger: str, now: datetime, facts: WorkflowFacts, *,
           queue: bool = False) -> None:
    s = log.state
    sid = s.schedule_id

    def skip(reason: str, detail: str) -> None:
        log.emit(OccurrenceSkipped(schedule_id=sid, occurrence_at=occurrence, reason=reason, detail=detail, at=now))

    if _unrunnable(log, occurrence, now, facts):
        return None
    if not s.waiting and _may_start(s, facts):
        return _fire(log, occurrence, trigger, now)
    if queue:
        if len(s.waiting) < s.max_queued:
            log.emit(OccurrenceDeferred(schedule_id=sid, occurrence_at=occurrence, reason="queue", at=now))
            return None
        return skip("policy", f"the queue holds at most {s.max_queued} occurrences")
    if s.overlap_policy == "buffer_one" and not s.waiting:
        log.emit(OccurrenceDeferred(schedule_id=sid, occurrence_at=occurrence, reason="overlap", at=now))
        return None
    if s.waiting:
        return skip("overlap", "earlier occurrences are still waiting to run")
    if s.overlap_policy == "allow":
        return skip("overlap", "the previous run is still active and the workflow allows one active run"
                               " (definition.concurrency is not \"unlimited\")")
    return skip("overlap", "the previous run is still active")


def _unrunnable(log: _Log, occurrence: datetime, now: datetime, facts: WorkflowFacts) -> bool:
    """Skip (and say why) an occurrence that cannot run whatever else is running: True if skipped."""
    if facts.status != "active":
        reason, detail = "workflow_inactive", f"the workflow is {facts.status or 'missing'}; only active workflows run"
    elif facts.inputs_error:
        reason, detail = "invalid_inputs", facts.inputs_error
    else:
        return False
    log.emit(OccurrenceSkipped(schedule_id=log.state.schedule_id, occurrence_at=occurrence, reason=reason,
                               detail=detail, at=now))
    return True


def _fire(log: _Log, occurrence: datetime, trigger: str, now: datetime) -> None:
    sid = log.state.schedule_id
    log.emit(OccurrenceFired(schedule_id=sid, occurrence_at=occurrence, run_id=run_id_for(sid, occurrence),
                             trigger=trigger, at=now))
