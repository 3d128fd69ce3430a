"""Thin handler: run commands through the decider, then wake the run's driver."""

from __future__ import annotations

from libs.events.aggregate import handle_command, metadata_for
from libs.events.schemas import CommandEnvelope, Event, Outcome
from libs.events.schemas.run import StartRun
from libs.events.store import EventStore, RecordedEvent
from services.executor import domain
from services.executor.driver import RunDriver
from services.executor.engine import Engine
from services.executor.run_metrics import count_run_events
from services.executor.timers import timers_for


async def handle_run_command(store: EventStore, envelope: CommandEnvelope, engine: Engine | None = None) -> Outcome:
    command = envelope.command
    written: list[RecordedEvent] = []
    prepared: RunDriver | None = None

    async def first_pass(run: domain.Run) -> list[Event]:
        # A new run's first pass (RunStarted, pure steps, StepStarted of the first side-effecting steps)
        # commits with RunCreated, in the StartRun's own append; its steps start once that has committed.
        nonlocal prepared
        prepared = engine.prepare(envelope.tenant_id, command.run_id)
        return await prepared.first_pass(run)

    outcome = await handle_command(
        store, envelope, f"run-{command.run_id}", domain.initial, domain.evolve, domain.decide,
        status=201 if isinstance(command, StartRun) else 200,
        # e.g. an approval's escalation sets the timer of its new deadline in the same append
        timers=lambda events: timers_for(envelope.tenant_id, metadata_for(envelope), events),
        on_appended=written.extend,
        follow=first_pass if engine is not None and isinstance(command, StartRun) else None,
    )
    # Every run event outside a driver's own is appended here (a new run, cancel, terminate, an approval
    # decision or deadline, a delay's timer ending the wait), so the driver is woken here, in process, not
    # by the relay bringing the event back. After a crash before this line, `Engine.recover` wakes it at
    # start-up. A redelivered command pokes again: the driver reads the log and finds nothing to do. A new
    # driver starts from the log this command just wrote instead of reading it back.
    if written:
        mine = str(envelope.command_id)
        count_run_events(r.type for r in written if r.metadata.get("command_id") == mine)
    if engine is not None and outcome.ok:
        engine.poke(envelope.tenant_id, command.run_id, written, prepared if written else None)
    return outcome
