"""A run's state: the fold of its events (evolve). Pure: no I/O, clock or ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from libs.events.schemas import Event
from libs.events.schemas.run import (
    ApprovalDecisionRecorded,
    ApprovalEscalated,
    RunCancelled,
    RunCancelRequested,
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
from services.executor import approvals

TERMINAL = ("completed", "failed", "cancelled")
DONE_STEP = ("completed", "failed", "skipped")


class StepState(msgspec.Struct, frozen=True, kw_only=True):
    # running | completed | failed | skipped | retrying | waiting | awaiting_approval
    status: str
    attempt: int
    output: Any = None
    error: str | None = None
    wake_at: datetime | None = None  # retrying: next attempt; waiting: end of the delay
    # running: the attempt whose idempotency key this attempt carries, when not its own (it re-executes
    # a crashed attempt that recorded no result); None means `attempt`.
    key_attempt: int | None = None


class Run(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    status: str = ""
    definition: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    steps: dict[str, StepState] = {}  # replaced, never mutated, by evolve
    variables: dict[str, Any] = {}
    created_at: datetime | None = None
    cancel_requested: bool = False
    cancel_reason: str = ""
    approvals: dict[str, approvals.ApprovalState] = {}  # paused approval steps, in the order they paused


initial = Run()


def _step(state: Run, step_id: str, **fields: Any) -> Run:
    return msgspec.structs.replace(state, steps={**state.steps, step_id: StepState(**fields)})


def evolve(state: Run, event: Event) -> Run:
    match event:
        case RunCreated() as e:
            return Run(exists=True, status="pending", definition=e.definition, inputs=e.inputs,
                       variables=e.variables, created_at=e.at)
        case RunStarted():
            return msgspec.structs.replace(state, status="running")
        case StepStarted(step_id=sid, attempt=attempt):
            prev = state.steps.get(sid)
            if prev is not None and prev.status == "running":  # re-executes a crashed attempt: same key
                return _step(state, sid, status="running", attempt=attempt, key_attempt=prev.key_attempt or prev.attempt)
            return _step(state, sid, status="running", attempt=attempt)
        case StepCompleted(step_id=sid, attempt=attempt, output=output, variables=variables):
            state = _step(state, sid, status="completed", attempt=attempt, output=output)
            if variables:
                state = msgspec.structs.replace(state, variables={**state.variables, **variables})
            if state.status == "awaiting_approval" and not _awaiting(state):
                state = msgspec.structs.replace(state, status="running")
            return state
        case StepFailed(step_id=sid, attempt=attempt, error=error):
            state = _step(state, sid, status="failed", attempt=attempt, error=error)
            if state.status == "awaiting_approval" and not _awaiting(state):  # a rejected approval
                state = msgspec.structs.replace(state, status="running")
            return state
        case StepSkipped(step_id=sid, reason=reason):
            return _step(state, sid, status="skipped", attempt=0, error=reason)
        case StepRetryScheduled(step_id=sid, attempt=attempt, error=error, retry_at=retry_at):
            return _step(state, sid, status="retrying", attempt=attempt, error=error, wake_at=retry_at)
        case StepWaiting(step_id=sid, attempt=attempt, until=until):
            return _step(state, sid, status="waiting", attempt=attempt, wake_at=until)
        case StepAwaitingApproval(step_id=sid):
            state = _step(state, sid, status="awaiting_approval", attempt=state.steps[sid].attempt
                          if sid in state.steps else 1)
            return msgspec.structs.replace(state, status="awaiting_approval",
                                           approvals=approvals.evolve(state.approvals, event))
        case ApprovalDecisionRecorded() | ApprovalEscalated():
            return msgspec.structs.replace(state, approvals=approvals.evolve(state.approvals, event))
        case RunCancelRequested(reason=reason):
            return msgspec.structs.replace(state, cancel_requested=True, cancel_reason=reason)
        case RunCompleted():
            return msgspec.structs.replace(state, status="completed")
        case RunFailed():
            return msgspec.structs.replace(state, status="failed")
        case RunCancelled() | RunTerminated():
            return msgspec.structs.replace(state, status="cancelled")
    return state


def _awaiting(state: Run) -> bool:
    return any(s.status == "awaiting_approval" for s in state.steps.values())

