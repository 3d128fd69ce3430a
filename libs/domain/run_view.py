"""A run's state at any event: a pure fold of its recorded events (v2 `?at_version=N`, the executions API)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from libs.events.schemas import Event
from libs.events.schemas.registry import event_of
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
from libs.events.store import RecordedEvent

TERMINAL = frozenset({"completed", "failed", "cancelled"})


class NodeState(msgspec.Struct, frozen=True, kw_only=True):
    """One step as the executions contract shows it: PENDING, RUNNING, COMPLETED, FAILED or SKIPPED."""

    state: str = "PENDING"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    output: Any = None
    attempt: int = 0


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    message: str
    level: str  # info | warning | error
    timestamp: datetime


class RunView(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    run_id: UUID | None = None
    workflow_id: UUID | None = None
    created_by: str | None = None
    status: str = ""  # canonical: pending, running, awaiting_approval, completed, failed, cancelled
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] | None = None
    error: str | None = None
    variables: dict[str, Any] = {}
    node_states: dict[str, NodeState] = {}
    logs: tuple[LogEntry, ...] = ()
    awaiting: frozenset[str] = frozenset()  # steps paused on an approval
    cancel_requested: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    version: int = 0  # stream version of the last event folded


initial = RunView()


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _step(view: RunView, step_id: str, at: datetime, message: str, level: str = "info", **node: Any) -> RunView:
    """Replace one node's fields and append its log line; an approval pause ends with any later step event."""
    current = view.node_states.get(step_id, NodeState())
    awaiting = view.awaiting - {step_id}
    status = view.status
    if status == "pending" or (status == "awaiting_approval" and not awaiting):
        status = "running"
    return msgspec.structs.replace(
        view,
        status=status,
        awaiting=awaiting,
        node_states={**view.node_states, step_id: msgspec.structs.replace(current, **node)},
        logs=(*view.logs, LogEntry(node_id=step_id, message=message, level=level, timestamp=at)),
    )


def _finish(view: RunView, status: str, at: datetime, **fields: Any) -> RunView:
    # A step still RUNNING when the run ends is abandoned (terminate) or was never resumed: it cannot
    # complete any more, so it shows as FAILED with the run's reason rather than spinning forever.
    reason = fields.get("error") or status
    nodes = {
        sid: msgspec.structs.replace(node, state="FAILED", completed_at=at, error=reason)
        if node.state == "RUNNING" else node
        for sid, node in view.node_states.items()
    }
    return msgspec.structs.replace(view, status=status, finished_at=at, node_states=nodes, awaiting=frozenset(),
                                   **fields)


def evolve(view: RunView, event: Event) -> RunView:
    """Apply one run event. Step results that arrive after the run ended are ignored, as terminate says."""
    if view.status in TERMINAL and not isinstance(event, RunCreated):
        return view
    match event:
        case RunCreated() as e:
            nodes = {node["id"]: NodeState() for node in e.definition.get("nodes", []) if isinstance(node, dict)}
            return RunView(exists=True, run_id=e.run_id, workflow_id=e.workflow_id, created_by=e.created_by,
                           status="pending", inputs=e.inputs, variables=e.variables, node_states=nodes,
                           started_at=e.at)
        case RunStarted():
            return msgspec.structs.replace(view, status="running") if view.status == "pending" else view
        case StepStarted(step_id=sid, attempt=n, at=at):
            return _step(view, sid, at, f"Step started (attempt {n})", state="RUNNING", started_at=at,
                         completed_at=None, error=None, output=None, attempt=n)
        case StepCompleted(step_id=sid, attempt=n, output=output, at=at, variables=variables):
            view = _step(view, sid, at, "Step completed", state="COMPLETED", completed_at=at, error=None,
                         output=output, attempt=n)
            return msgspec.structs.replace(view, variables={**view.variables, **variables}) if variables else view
        case StepFailed(step_id=sid, attempt=n, error=error, at=at):
            return _step(view, sid, at, f"Step failed: {error}", "error", state="FAILED", completed_at=at,
                         error=error, attempt=n)
        case StepRetryScheduled(step_id=sid, attempt=n, error=error, retry_at=retry_at, at=at):
            # Between attempts the step waits to start again: PENDING, keeping the failed attempt's error.
            return _step(view, sid, at, f"Retry scheduled at {_iso(retry_at)} (attempt {n} failed: {error})",
                         "warning", state="PENDING", error=error, attempt=n)
        case StepSkipped(step_id=sid, reason=reason, at=at):
            return _step(view, sid, at, f"Skipped: {reason}", state="SKIPPED", completed_at=at)
        case StepWaiting(step_id=sid, attempt=n, until=until, at=at):
            return _step(view, sid, at, f"Waiting until {_iso(until)}", state="RUNNING", attempt=n)
        case StepAwaitingApproval(step_id=sid, at=at):
            view = _step(view, sid, at, "Awaiting approval", state="RUNNING")
            return msgspec.structs.replace(view, status="awaiting_approval", awaiting=view.awaiting | {sid})
        case ApprovalDecisionRecorded(step_id=sid, decision=decision, decided_by=who, comment=comment, at=at):
            verb, note = "Approved" if decision == "approve" else "Rejected", f": {comment}" if comment else ""
            entry = LogEntry(node_id=sid, message=f"{verb} by {who}{note}", level="info", timestamp=at)
            return msgspec.structs.replace(view, logs=(*view.logs, entry))
        case ApprovalEscalated(step_id=sid, approver=approver, at=at):
            entry = LogEntry(node_id=sid, message=f"Approval deadline passed; escalated to {approver}",
                             level="warning", timestamp=at)
            return msgspec.structs.replace(view, logs=(*view.logs, entry))
        case RunCancelRequested():
            return msgspec.structs.replace(view, cancel_requested=True)
        case RunCancelled(reason=reason, at=at):
            return _finish(view, "cancelled", at, error=reason or "Cancelled")
        case RunTerminated(reason=reason, at=at):
            return _finish(view, "cancelled", at, error=reason or "Terminated")
        case RunCompleted(outputs=outputs, at=at):
            return _finish(view, "completed", at, outputs=outputs)
        case RunFailed(error=error, at=at):
            return _finish(view, "failed", at, error=error)
    return view


def fold_run(recorded: Iterable[RecordedEvent]) -> RunView:
    """The view after every given event (read them with `store.read_stream(..., to_version=N)`)."""
    view = initial
    for rec in recorded:
        view = msgspec.structs.replace(evolve(view, event_of(rec)), version=rec.version)
    return view
