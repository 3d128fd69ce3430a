"""Workflow runs: owned by the executor."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from libs.events.schemas.base import Command, Event


class RunCreated(Event, frozen=True, kw_only=True):
    """A run was accepted. It carries the definition it will run, so replays never depend on later edits."""

    run_id: UUID
    workflow_id: UUID
    workflow_version: int
    definition: dict[str, Any]
    inputs: dict[str, Any]
    created_by: str
    at: datetime


class RunStarted(Event, frozen=True, kw_only=True):
    run_id: UUID
    at: datetime


class StepStarted(Event, frozen=True, kw_only=True):
    run_id: UUID
    step_id: str
    attempt: int = 1
    at: datetime


class StepCompleted(Event, frozen=True, kw_only=True):
    run_id: UUID
    step_id: str
    attempt: int = 1
    output: Any = None
    at: datetime
    variables: dict[str, Any] = {}  # merged into the run's variables (e.g. an agent endpoint's response)


class StepFailed(Event, frozen=True, kw_only=True):
    run_id: UUID
    step_id: str
    attempt: int = 1
    error: str
    at: datetime


class StepSkipped(Event, frozen=True, kw_only=True):
    """Not run: a condition upstream was false (or its input was skipped)."""

    run_id: UUID
    step_id: str
    reason: str
    at: datetime


class StepRetryScheduled(Event, frozen=True, kw_only=True):
    """An attempt failed with a retryable error; the next attempt starts at retry_at."""

    run_id: UUID
    step_id: str
    attempt: int  # the attempt that failed
    error: str
    retry_at: datetime
    at: datetime


class StepWaiting(Event, frozen=True, kw_only=True):
    """A delay step waits until `until` (a durable timer: re-armed from the log after a restart)."""

    run_id: UUID
    step_id: str
    attempt: int = 1
    until: datetime
    at: datetime


class StepAwaitingApproval(Event, frozen=True, kw_only=True):
    """An approval step paused the run; the approvals issue adds the decisions."""

    run_id: UUID
    step_id: str
    approval: dict[str, Any] = {}
    at: datetime


class RunCancelRequested(Event, frozen=True, kw_only=True):
    """Cancel: steps already running finish, nothing new starts, then RunCancelled."""

    run_id: UUID
    reason: str = ""
    requested_by: str = ""
    at: datetime


class RunCancelled(Event, frozen=True, kw_only=True):
    run_id: UUID
    reason: str = ""
    at: datetime


class RunTerminated(Event, frozen=True, kw_only=True):
    """Terminate: stop now; a step still running is abandoned and its result, if any, is ignored."""

    run_id: UUID
    reason: str = ""
    requested_by: str = ""
    at: datetime


class RunCompleted(Event, frozen=True, kw_only=True):
    run_id: UUID
    outputs: dict[str, Any]
    at: datetime


class RunFailed(Event, frozen=True, kw_only=True):
    run_id: UUID
    error: str
    at: datetime


RUN_EVENTS: tuple[type[Event], ...] = (
    RunCreated,
    RunStarted,
    StepStarted,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepRetryScheduled,
    StepWaiting,
    StepAwaitingApproval,
    RunCancelRequested,
    RunCancelled,
    RunTerminated,
    RunCompleted,
    RunFailed,
)
RunEvent = (
    RunCreated | RunStarted | StepStarted | StepCompleted | StepFailed | StepSkipped | StepRetryScheduled
    | StepWaiting | StepAwaitingApproval | RunCancelRequested | RunCancelled | RunTerminated | RunCompleted
    | RunFailed
)


class StartRun(Command, frozen=True, kw_only=True):
    run_id: UUID
    workflow_id: UUID
    workflow_version: int
    definition: dict[str, Any]
    inputs: dict[str, Any]
    created_by: str
    at: datetime


class CancelRun(Command, frozen=True, kw_only=True):
    run_id: UUID
    reason: str = "Cancelled by user"
    requested_by: str
    at: datetime


class TerminateRun(Command, frozen=True, kw_only=True):
    run_id: UUID
    reason: str = "Terminated by user"
    requested_by: str
    at: datetime


RunCommand = StartRun | CancelRun | TerminateRun
