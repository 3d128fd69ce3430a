"""Stream messages: a run event as contract A's message, and the items a feed yields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TERMINAL_STATUS = {"RunCompleted": "completed", "RunFailed": "failed", "RunCancelled": "cancelled",
                   "RunTerminated": "cancelled"}
STEP_MESSAGES = {"StepStarted": "step_start", "StepCompleted": "step_complete", "StepFailed": "step_error"}



def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def run_message(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """A run event's stream message (the SSE data / WebSocket frame without its id)."""
    fields = {_camel(k): v for k, v in data.items() if k != "type"}
    run_id = fields.pop("runId", None)
    step_id = fields.pop("stepId", None)
    if event_type in STEP_MESSAGES:
        kind = STEP_MESSAGES[event_type]
        return {"type": kind, "stepId": step_id, "data": {"runId": run_id, **fields}}
    if event_type in TERMINAL_STATUS:
        return {"type": "workflow_complete",
                "data": {"status": TERMINAL_STATUS[event_type], "runId": run_id, "eventType": event_type, **fields}}
    message: dict[str, Any] = {"type": "run_event", "eventType": event_type}
    if step_id is not None:
        message["stepId"] = step_id
    message["data"] = {"runId": run_id, **fields}
    return message


@dataclass(frozen=True)
class StreamEvent:
    position: int
    message: dict[str, Any]


@dataclass(frozen=True)
class Connected:
    message: dict[str, Any]


@dataclass(frozen=True)
class Reconnect:
    reason: str


class _Heartbeat:
    def __repr__(self) -> str:
        return "HEARTBEAT"


HEARTBEAT = _Heartbeat()
