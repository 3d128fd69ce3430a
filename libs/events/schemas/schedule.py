"""Schedules: owned by the scheduler. Every occurrence's fate is an event, so "why didn't it run at 9:00?"
is answered from the schedule's history (docs/decisions/0007)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from libs.events.schemas.base import Command, Event

UNSET: Any = msgspec.UNSET
MISSED_POLICIES = ("run_immediately", "skip", "queue")
OVERLAP_POLICIES = ("skip", "buffer_one", "allow")


class ScheduleCreated(Event, frozen=True, kw_only=True):
    schedule_id: UUID
    workflow_id: UUID
    cron_expression: str
    timezone: str = "UTC"
    inputs: dict[str, Any] = {}
    missed_execution_policy: str = "run_immediately"
    overlap_policy: str = "skip"
    max_queued: int = 10  # queue policy: at most this many missed occurrences run (the latest ones)
    pause_after_failures: int = 0  # 0 = never pause automatically
    enabled: bool = True
    created_by: str
    source: str = "api"  # api | console
    at: datetime


class ScheduleUpdated(Event, frozen=True, kw_only=True):
    """Only the fields present changed. A new cron or time zone, or enabling, counts occurrences from `at`."""

    schedule_id: UUID
    cron_expression: str | msgspec.UnsetType = UNSET
    timezone: str | msgspec.UnsetType = UNSET
    inputs: dict[str, Any] | msgspec.UnsetType = UNSET
    missed_execution_policy: str | msgspec.UnsetType = UNSET
    overlap_policy: str | msgspec.UnsetType = UNSET
    max_queued: int | msgspec.UnsetType = UNSET
    pause_after_failures: int | msgspec.UnsetType = UNSET
    enabled: bool | msgspec.UnsetType = UNSET
    at: datetime


class ScheduleDeleted(Event, frozen=True, kw_only=True):
    schedule_id: UUID
    reason: str = ""
    at: datetime


class SchedulePaused(Event, frozen=True, kw_only=True):
    """Disabled by the scheduler itself (N consecutive failed runs, its workflow gone); PATCH enabled resumes."""

    schedule_id: UUID
    reason: str
    at: datetime


class OccurrenceFired(Event, frozen=True, kw_only=True):
    """A run was started for this occurrence; run_id derives from (schedule id, occurrence time)."""

    schedule_id: UUID
    occurrence_at: datetime
    run_id: UUID
    trigger: str = "on_time"  # on_time | catch_up | queued | buffered
    at: datetime


class OccurrenceSkipped(Event, frozen=True, kw_only=True):
    schedule_id: UUID
    occurrence_at: datetime
    reason: str  # overlap | policy | disabled | workflow_inactive | invalid_inputs
    detail: str = ""
    at: datetime


class OccurrenceDeferred(Event, frozen=True, kw_only=True):
    """Waiting to fire: buffered behind an active run (overlap buffer_one), or queued after a missed window."""

    schedule_id: UUID
    occurrence_at: datetime
    reason: str  # overlap | queue
    at: datetime


class OccurrencesMissed(Event, frozen=True, kw_only=True):
    """Every occurrence in (after, through] passed while no scheduler ran; `policy` says what followed:
    run_immediately = one catch-up run (an OccurrenceFired for last_at), skip = none, queue = the latest
    `queued` of them run in order (OccurrenceFired / OccurrenceDeferred each)."""

    schedule_id: UUID
    after: datetime
    through: datetime
    first_at: datetime
    last_at: datetime
    policy: str
    queued: int = 0
    at: datetime


class OccurrencesSkipped(Event, frozen=True, kw_only=True):
    """Every occurrence in (after, through] passed while the schedule was disabled or paused."""

    schedule_id: UUID
    after: datetime
    through: datetime
    first_at: datetime
    last_at: datetime
    reason: str  # disabled
    at: datetime


class ScheduledRunFinished(Event, frozen=True, kw_only=True):
    """A run this schedule started ended (or never started: status not_started)."""

    schedule_id: UUID
    run_id: UUID
    status: str  # completed | failed | cancelled | not_started
    at: datetime


SCHEDULE_EVENTS: tuple[type[Event], ...] = (
    ScheduleCreated, ScheduleUpdated, ScheduleDeleted, SchedulePaused, OccurrenceFired, OccurrenceSkipped,
    OccurrenceDeferred, OccurrencesMissed, OccurrencesSkipped, ScheduledRunFinished,
)
ScheduleEvent = (
    ScheduleCreated | ScheduleUpdated | ScheduleDeleted | SchedulePaused | OccurrenceFired | OccurrenceSkipped
    | OccurrenceDeferred | OccurrencesMissed | OccurrencesSkipped | ScheduledRunFinished
)


class CreateSchedule(Command, frozen=True, kw_only=True):
    schedule_id: UUID
    workflow_id: UUID
    cron_expression: str
    timezone: str = "UTC"
    inputs: dict[str, Any] = {}
    missed_execution_policy: str = "run_immediately"
    overlap_policy: str = "skip"
    max_queued: int = 10
    pause_after_failures: int = 0
    enabled: bool = True
    created_by: str
    source: str = "api"
    at: datetime


class UpdateSchedule(Command, frozen=True, kw_only=True):
    schedule_id: UUID
    workflow_id: UUID  # the schedule must belong to it (404 otherwise)
    cron_expression: str | msgspec.UnsetType = UNSET
    timezone: str | msgspec.UnsetType = UNSET
    inputs: dict[str, Any] | msgspec.UnsetType = UNSET
    missed_execution_policy: str | msgspec.UnsetType = UNSET
    overlap_policy: str | msgspec.UnsetType = UNSET
    max_queued: int | msgspec.UnsetType = UNSET
    pause_after_failures: int | msgspec.UnsetType = UNSET
    enabled: bool | msgspec.UnsetType = UNSET
    at: datetime


class DeleteSchedule(Command, frozen=True, kw_only=True):
    schedule_id: UUID
    workflow_id: UUID
    reason: str = ""
    at: datetime


ScheduleCommand = CreateSchedule | UpdateSchedule | DeleteSchedule
