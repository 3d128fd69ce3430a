"""Schedules at work: load a schedule (its folded state from the read model, at its stream version) and what
its workflow looks like, ask the decider, and append the decision together with the timers that start its
runs. One Ticker serves the firing loop, run endings, the API's commands and the console attach."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog

from libs.events.aggregate import MAX_CONFLICT_RETRIES, handle_command, metadata_for
from libs.events.errors import DomainError
from libs.events.faults import crash_point
from libs.domain.inputs import prepare_inputs
from libs.domain.schedule_state import ScheduleState, decode, evolve, initial
from libs.events.schemas import CommandEnvelope, Event, Metadata, Outcome
from libs.events.schemas.run import StartRun
from libs.events.schemas.schedule import CreateSchedule, DeleteSchedule, OccurrenceFired
from libs.events.store import CommandAlreadyProcessed, EventStore, WrongExpectedVersion
from libs.events.timers import Timer, timer_id_for
from services.scheduler import domain
from services.scheduler.timers import utcnow
from libs.telemetry import metrics

log = structlog.get_logger()
# weft_schedule_occurrences{outcome}; a deferred occurrence is counted when it later fires or is skipped.
OCCURRENCE_OUTCOMES = {"OccurrenceFired": "fired", "OccurrenceSkipped": "skipped", "OccurrencesMissed": "missed"}
ACTIVE_RUN_STATUSES = ["pending", "running", "awaiting_approval"]
CONSOLE_TIMEZONE = "UTC"  # the console contract's schedule is a bare cron string


class RunRecipe(msgspec.Struct, frozen=True):
    """What a fired occurrence's StartRun carries: the workflow as it is now, and the schedule's inputs."""

    definition: dict[str, Any]
    version: int
    inputs: dict[str, Any] | None


def start_timers(tenant_id: str, state: ScheduleState, recipe: RunRecipe | None, events: list[Event],
                 now: datetime) -> list[Timer]:
    """A timer due now per fired occurrence: the StartRun is published by the timer loop after the decision
    commits (a transactional outbox), with ids derived from the run id, so setting or publishing it twice
    starts one run."""
    timers = []
    for event in events:
        if not isinstance(event, OccurrenceFired) or recipe is None:
            continue
        command = StartRun(run_id=event.run_id, workflow_id=state.workflow_id, workflow_version=recipe.version,
                           definition=recipe.definition, inputs=recipe.inputs or {}, created_by=state.created_by,
                           at=event.at)
        envelope = CommandEnvelope(command_id=uuid.uuid5(event.run_id, "start"), tenant_id=tenant_id,
                                   actor=f"schedule:{state.schedule_id}", correlation_id=str(state.schedule_id),
                                   command=command, issued_at=now)
        timers.append(Timer(timer_id=timer_id_for("schedule-run", event.run_id), due_at=event.at,
                            service="executor", envelope=envelope))
    return timers


# One round trip for everything a tick looks at: the schedule's folded state (and stream version), its
# workflow, and the workflow's runs that are active or were started by this schedule and not seen to end.
_SNAPSHOT = (
    "SELECT s.state::text AS state, s.stream_version, w.status, w.definition::text AS definition,"
    " w.stream_version AS workflow_version,"
    " (SELECT coalesce(json_agg(json_build_object('id', r.id, 'status', r.status)), '[]')::text FROM runs r"
    "   WHERE r.tenant_id = $1 AND r.workflow_id = s.workflow_id AND (r.status = ANY($3) OR r.id IN"
    "   (SELECT (a ->> 'run_id')::uuid FROM jsonb_array_elements(s.state -> 'active_runs') a))) AS runs"
    " FROM schedules s LEFT JOIN workflows w ON w.tenant_id = $1 AND w.id = s.workflow_id"
    " WHERE s.tenant_id = $1 AND s.id = $2"
)
_runs_decoder = msgspec.json.Decoder(list[dict[str, str]])


def _facts(state: ScheduleState, row) -> tuple[domain.WorkflowFacts, RunRecipe | None]:
    if row["status"] is None:
        return domain.WorkflowFacts(exists=False), None
    definition = msgspec.json.decode(row["definition"])
    mine = {r.run_id for r in state.active_runs}
    runs = [(uuid.UUID(r["id"]), r["status"]) for r in _runs_decoder.decode(row["runs"])]
    try:
        inputs, error = prepare_inputs(definition, state.inputs), None
    except DomainError as exc:
        inputs, error = None, f"{exc.message} (the schedule's inputs no longer fit the workflow)"
    facts = domain.WorkflowFacts(
        exists=True, status=row["status"], unlimited=definition.get("concurrency") == "unlimited",
        other_active=sum(1 for rid, status in runs if rid not in mine and status in ACTIVE_RUN_STATUSES),
        run_statuses={rid: status for rid, status in runs if rid in mine}, inputs_error=error,
    )
    return facts, RunRecipe(definition, row["workflow_version"], inputs)


class Ticker:
    def __init__(self, store: EventStore, *, grace_s: float = 60.0, on_timers: Callable[[], None] = lambda: None,
                 clock: Callable[[], datetime] = utcnow):
        self.store, self.grace, self.on_timers, self.clock = store, timedelta(seconds=grace_s), on_timers, clock

    async def _snapshot(self, tenant_id: str, schedule_id: uuid.UUID, *, with_facts: bool):
        """(state, stream version, facts, recipe) from the read model; (initial, 0, None, None) if none."""
        async with self.store.tenant_transaction(tenant_id) as conn:
            row = await conn.fetchrow(_SNAPSHOT, tenant_id, schedule_id, ACTIVE_RUN_STATUSES)
        if row is None:
            return initial, 0, None, None
        state = decode(row["state"])
        facts, recipe = _facts(state, row) if with_facts else (None, None)
        return state, row["stream_version"], facts, recipe

    async def tick(self, tenant_id: str, schedule_id: uuid.UUID) -> int:
        """Bring one schedule up to now; returns how many events that took (0: nothing to do)."""
        for _ in range(MAX_CONFLICT_RETRIES):
            state, version, facts, recipe = await self._snapshot(tenant_id, schedule_id, with_facts=True)
            if facts is None:
                return 0
            now = self.clock()
            events = domain.tick(state, now, facts, self.grace)
            if not events:
                return 0
            timers = start_timers(tenant_id, state, recipe, events, now)
            crash_point("schedule_decided")
            try:
                # The expected version is the fence: a replica (or a retry) that decided from an older state
                # appends nothing, and re-decides from the new one.
                await self.store.append(f"schedule-{schedule_id}", version, events, timers=timers, metadata=Metadata(
                    tenant_id=tenant_id, correlation_id=str(schedule_id), actor="scheduler"))
            except WrongExpectedVersion:
                continue
            if timers:
                crash_point("schedule_fired")  # committed, with runs to start; their StartRuns not yet published
                self.on_timers()
            fired = [e for e in events if isinstance(e, OccurrenceFired)]
            for event in events:  # committed: count each occurrence by what became of it
                outcome = OCCURRENCE_OUTCOMES.get(type(event).__name__)
                if outcome is not None:
                    metrics.SCHEDULE_OCCURRENCES.labels(outcome).inc()
            log.info("schedule_ticked", schedule_id=str(schedule_id), events=len(events), fired=len(fired))
            return len(events)
        raise WrongExpectedVersion(f"schedule-{schedule_id}", -1, -1)

    async def command(self, envelope: CommandEnvelope) -> Outcome:
        """An API command. Create folds the (new) stream; update and delete decide from the snapshot, since a
        long-lived schedule's stream holds every occurrence it ever had."""
        command = envelope.command
        stream_id = f"schedule-{command.schedule_id}"
        if isinstance(command, CreateSchedule):
            return await handle_command(self.store, envelope, stream_id, initial, evolve, domain.decide, status=201)
        tenant_id = envelope.tenant_id
        done = await self.store.outcome(tenant_id, envelope.command_id)
        if done is not None:
            return done
        for _ in range(MAX_CONFLICT_RETRIES):
            state, version, _, _ = await self._snapshot(tenant_id, command.schedule_id, with_facts=False)
            try:
                events = domain.decide(command, state)
                return await self.store.append(stream_id, version, events, metadata=metadata_for(envelope))
            except DomainError as refused:
                return await self.store.record_outcome(tenant_id, Outcome(
                    command_id=envelope.command_id, status=refused.status, stream_id=stream_id,
                    error=refused.message, field=refused.field))
            except CommandAlreadyProcessed as dup:
                return dup.outcome
            except WrongExpectedVersion:
                continue
        raise WrongExpectedVersion(stream_id, -1, -1)  # transient: the consumer NAKs and retries later

    async def run_ended(self, tenant_id: str, run_id: uuid.UUID) -> None:
        """A run ended: the schedules of its workflow that have runs out or occurrences waiting look again."""
        async with self.store.tenant_transaction(tenant_id) as conn:
            ids = await conn.fetch(
                "SELECT s.id FROM schedules s JOIN runs r ON r.workflow_id = s.workflow_id"
                " WHERE r.tenant_id = $1 AND r.id = $2 AND s.tenant_id = $1"
                " AND (s.active_runs > 0 OR s.pending_count > 0)", tenant_id, run_id)
        for row in ids:
            await self.tick(tenant_id, row["id"])

    async def attach_console_schedule(self, tenant_id: str, workflow_id: uuid.UUID) -> Outcome | None:
        """A console workflow (POST /api/workflows {goal, schedule}) starts its schedule once it is active."""
        async with self.store.tenant_transaction(tenant_id) as conn:
            row = await conn.fetchrow(
                "SELECT status, schedule, created_by FROM workflows WHERE tenant_id = $1 AND id = $2",
                tenant_id, workflow_id)
        if row is None or row["status"] != "active" or not row["schedule"]:
            return None
        schedule_id = uuid.uuid5(workflow_id, "console-schedule")
        command = CreateSchedule(schedule_id=schedule_id, workflow_id=workflow_id, cron_expression=row["schedule"],
                                 timezone=CONSOLE_TIMEZONE, created_by=row["created_by"], source="console",
                                 at=self.clock())
        outcome = await self.command(self._envelope(tenant_id, uuid.uuid5(schedule_id, "attach"), command))
        if not outcome.ok and outcome.status != 409:
            log.warning("console_schedule_refused", workflow_id=str(workflow_id), error=outcome.error)
        return outcome

    async def workflow_deleted(self, tenant_id: str, workflow_id: uuid.UUID) -> None:
        async with self.store.tenant_transaction(tenant_id) as conn:
            ids = await conn.fetch("SELECT id FROM schedules WHERE tenant_id = $1 AND workflow_id = $2",
                                   tenant_id, workflow_id)
        for row in ids:
            command = DeleteSchedule(schedule_id=row["id"], workflow_id=workflow_id, reason="the workflow was deleted",
                                     at=self.clock())
            await self.command(self._envelope(tenant_id, uuid.uuid5(row["id"], "workflow-deleted"), command))

    def _envelope(self, tenant_id: str, command_id: uuid.UUID, command) -> CommandEnvelope:
        return CommandEnvelope(command_id=command_id, tenant_id=tenant_id, actor="scheduler",
                               correlation_id=str(command.workflow_id), command=command, issued_at=self.clock())
