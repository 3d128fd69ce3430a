"""Thin handlers: run commands through the decider, and run events that wake the engine."""

from __future__ import annotations

import uuid
from typing import Any

from libs.events.aggregate import handle_command
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.schemas.run import StartRun
from libs.events.store import EventStore
from services.executor import domain
from services.executor.engine import Engine


async def handle_run_command(store: EventStore, envelope: CommandEnvelope) -> Outcome:
    command = envelope.command
    return await handle_command(
        store, envelope, f"run-{command.run_id}", domain.initial, domain.evolve, domain.decide,
        status=201 if isinstance(command, StartRun) else 200,
    )


async def on_run_event(engine: Engine, subject: str, headers: dict[str, Any], data: bytes) -> None:
    # weft.evt.<tenant>.run.<run uuid>.<EventType>: wake (or start) that run's driver; it reads the log itself.
    _, _, tenant_id, _, run_key, _ = subject.split(".")
    engine.poke(tenant_id, uuid.UUID(run_key))
