"""Thin handlers: StartRun commands, and run events that wake the engine."""

from __future__ import annotations

import uuid
from typing import Any

from libs.events.aggregate import handle_command
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.store import EventStore
from services.executor import domain
from services.executor.engine import Engine


async def handle_run_command(store: EventStore, envelope: CommandEnvelope) -> Outcome:
    return await handle_command(
        store, envelope, f"run-{envelope.command.run_id}", domain.initial, domain.evolve, domain.decide, status=201
    )


async def on_run_event(engine: Engine, subject: str, headers: dict[str, Any], data: bytes) -> None:
    # weft.evt.<tenant>.run.<run uuid>.<EventType>
    _, _, tenant_id, _, run_key, _ = subject.split(".")
    await engine.advance(tenant_id, uuid.UUID(run_key))
