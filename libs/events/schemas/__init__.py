"""Message schemas: events (past tense, forever) and commands (imperative), as tagged msgspec Structs."""

from libs.events.schemas.base import Command, CommandEnvelope, CommandRejected, Event, Metadata, Outcome
from libs.events.schemas.run import RUN_EVENTS, RunCommand, RunEvent
from libs.events.schemas.workflow import WORKFLOW_EVENTS, WorkflowCommand, WorkflowEvent

__all__ = [
    "RUN_EVENTS",
    "WORKFLOW_EVENTS",
    "Command",
    "CommandEnvelope",
    "CommandRejected",
    "Event",
    "Metadata",
    "Outcome",
    "RunCommand",
    "RunEvent",
    "WorkflowCommand",
    "WorkflowEvent",
]
