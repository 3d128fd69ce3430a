"""Thin handlers: run commands through the decider, and run events that wake the engine."""

from __future__ import annotations

import uuid
from typing import Any

from libs.events.aggregate import handle_command, metadata_for
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.schemas.run import DecideApproval, EndDelay, ExpireApproval, StartRun
from libs.events.store import EventStore
from services.executor import domain
from services.executor.engine import Engine
from services.executor.timers import timers_for


async def handle_run_command(store: EventStore, envelope: CommandEnvelope, engine: Engine | None = None) -> Outcome:
    command = envelope.command
    outcome = await handle_command(
        store, envelope, f"run-{command.run_id}", domain.initial, domain.evolve, domain.decide,
        status=201 if isinstance(command, StartRun) else 200,
        # e.g. an approval's escalation sets the timer of its new deadline in the same append
        timers=lambda events: timers_for(envelope.tenant_id, metadata_for(envelope), events),
    )
    # An approval decision (or its deadline) may resume the run: wake its driver (none runs for a paused run).
    if engine is not None and isinstance(command, EndDelay | DecideApproval | ExpireApproval) and outcome.ok:
        # A delay's timer ended the wait outside the run's driver (none runs for a waiting run): wake it.
        engine.poke(envelope.tenant_id, command.run_id)
    return outcome


async def on_run_event(engine: Engine, subject: str, headers: dict[str, Any], data: bytes) -> None:
    # weft.evt.<tenant>.run.<run uuid>.<EventType>: wake (or start) that run's driver; it reads the log itself.
    _, _, tenant_id, _, run_key, _ = subject.split(".")
    engine.poke(tenant_id, uuid.UUID(run_key))
