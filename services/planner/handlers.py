"""Thin command handlers: pick the stream, run the decider through the shared load-decide-append loop."""

from __future__ import annotations

from libs.events.aggregate import handle_command
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.schemas.workflow import CreateWorkflow
from libs.events.store import EventStore
from services.planner import domain


async def handle_workflow_command(store: EventStore, envelope: CommandEnvelope) -> Outcome:
    command = envelope.command
    return await handle_command(
        store,
        envelope,
        f"workflow-{command.workflow_id}",
        domain.initial,
        domain.evolve,
        domain.decide,
        status=201 if isinstance(command, CreateWorkflow) else 200,
    )
