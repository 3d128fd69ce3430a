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


class StepFailed(Event, frozen=True, kw_only=True):
    run_id: UUID
    step_id: str
    attempt: int = 1
    error: str
    at: datetime


class RunCompleted(Event, frozen=True, kw_only=True):
    run_id: UUID
    outputs: dict[str, Any]
    at: datetime


class RunFailed(Event, frozen=True, kw_only=True):
    run_id: UUID
    error: str
    at: datetime


RunEvent = RunCreated | RunStarted | StepStarted | StepCompleted | StepFailed | RunCompleted | RunFailed
RUN_EVENTS: tuple[type[Event], ...] = (
    RunCreated,
    RunStarted,
    StepStarted,
    StepCompleted,
    StepFailed,
    RunCompleted,
    RunFailed,
)


class StartRun(Command, frozen=True, kw_only=True):
    run_id: UUID
    workflow_id: UUID
    workflow_version: int
    definition: dict[str, Any]
    inputs: dict[str, Any]
    created_by: str
    at: datetime


RunCommand = StartRun
