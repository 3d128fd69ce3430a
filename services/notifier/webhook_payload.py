"""Spec D's webhook body for a run event, and which API key's endpoints a run's events also go to. Pure."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from libs.domain.run_view import _iso as iso
from libs.domain.row_results import per_row_source, row_results
from libs.domain.run_view import RunView
from libs.events.schemas import Event
from libs.events.schemas.run import RunCompleted, RunFailed, RunStarted, StepAwaitingApproval

# Run event type -> spec D event name.
NOTIFIED = {
    "RunStarted": "execution.started",
    "RunCompleted": "execution.completed",
    "RunFailed": "execution.failed",
    "StepAwaitingApproval": "execution.pending_approval",
}
API_KEY_ACTOR = "api_key:"


def api_key_of(actor: str | None) -> uuid.UUID | None:
    """The key id in a run's actor "api_key:<id>" (runs started through the public API), else None."""
    if not actor or not actor.startswith(API_KEY_ACTOR):
        return None
    try:
        return uuid.UUID(actor.removeprefix(API_KEY_ACTOR))
    except ValueError:
        return None


def output_of(outputs: dict[str, Any] | None, view: RunView) -> Any:
    """The completed run's output; when a step worked row by row, with its rows as GET /results describes
    them (one function for both). Otherwise the outputs as they are, as D's webhook example shows them."""
    done = sorted((n for n in view.node_states.values() if n.state == "COMPLETED" and n.completed_at),
                  key=lambda n: n.completed_at)
    completed = [n.output for n in done]
    return row_results(outputs, completed) if per_row_source(outputs, completed) is not None else outputs


def payload(event_name: str, event: Event, view: RunView) -> bytes:
    """Spec D's body: {event, executionId, workflowId, timestamp, data}; `data` speaks D's status words."""
    data: dict[str, Any] = {"startedAt": iso(view.started_at) if view.started_at else None}
    match event:
        case RunStarted():
            data = {"status": "running", **data}
        case RunCompleted(outputs=outputs, at=at):
            data = {"status": "completed", **data, "completedAt": iso(at), "output": output_of(outputs, view)}
        case RunFailed(error=error, at=at):
            data = {"status": "failed", **data, "completedAt": iso(at), "error": error}
        case StepAwaitingApproval(step_id=step_id):
            data = {"status": "pending_approval", **data, "stepId": step_id}
    body = {
        "event": event_name,
        "executionId": str(view.run_id),
        "workflowId": str(view.workflow_id),
        "timestamp": iso(event.at),  # type: ignore[attr-defined] - every notified event has `at`
        "data": data,
    }
    return msgspec.json.encode(body)
