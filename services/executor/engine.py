"""Drives a run forward: fold its events, take the next action, record the result, repeat."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from libs.events.aggregate import fold
from libs.events.schemas import Event, Metadata
from libs.events.schemas.run import RunCompleted, RunFailed, RunStarted, StepCompleted, StepFailed, StepStarted
from libs.events.store import EventStore, RecordedEvent, WrongExpectedVersion
from services.executor import domain
from services.executor.interpolation import MissingPath
from services.executor.steps import REGISTRY, StepError

log = structlog.get_logger()


def _now() -> datetime:
    return datetime.now(UTC)


def step_context(run: domain.Run, node: dict[str, Any]) -> dict[str, Any]:
    """What `${...}` can see: inputs, every finished step's output by id (also under `steps`), and
    `input`, the output of the step named by input_from."""
    outputs = {sid: s.output for sid, s in run.steps.items() if s.status == "completed"}
    context: dict[str, Any] = {**outputs, "steps": outputs, "inputs": run.inputs, "variables": {}}
    source = node.get("input_from")
    if isinstance(source, str):
        context["input"] = outputs.get(source)
    elif isinstance(source, list):
        context["input"] = {sid: outputs.get(sid) for sid in source}
    return context


async def run_step(run: domain.Run, node: dict[str, Any]) -> tuple[bool, Any]:
    """(ok, output-or-error message)."""
    # Integrations are named by their action (http.request, email.send); other nodes by their type.
    key = node.get("action") if node["type"] == "integration" else node["type"]
    fn = REGISTRY.get(key)
    if fn is None:
        return False, f"unsupported step type {key!r}"
    try:
        return True, await fn(node, step_context(run, node))
    except (StepError, MissingPath) as exc:
        return False, str(exc)


class Engine:
    def __init__(self, store: EventStore, clock: Callable[[], datetime] = _now):
        self.store, self.clock = store, clock

    async def _append(self, tenant_id: str, stream_id: str, recorded: list[RecordedEvent], events: list[Event]) -> None:
        first = recorded[0].metadata
        await self.store.append(
            stream_id,
            len(recorded),
            events,
            metadata=Metadata(
                tenant_id=tenant_id,
                correlation_id=first.get("correlation_id"),
                causation_id=str(recorded[-1].event_id),
                actor="executor",
            ),
        )

    async def advance(self, tenant_id: str, run_id: uuid.UUID) -> str | None:
        """Take actions until the run is terminal or waits; idempotent, safe to call on any run event.

        Returns the run's status after the last action (None if the run does not exist).
        """
        stream_id = f"run-{run_id}"
        while True:
            recorded = await self.store.read_stream(tenant_id, stream_id)
            run = fold(domain.initial, domain.evolve, recorded)
            action = domain.next_action(run)
            if action is None:
                return run.status or None
            now = self.clock()
            try:
                match action:
                    case domain.Begin():
                        await self._append(tenant_id, stream_id, recorded, [RunStarted(run_id=run_id, at=now)])
                    case domain.Fail(error=error):
                        await self._append(tenant_id, stream_id, recorded, [RunFailed(run_id=run_id, error=error, at=now)])
                    case domain.Finish(outputs=outputs):
                        await self._append(
                            tenant_id, stream_id, recorded, [RunCompleted(run_id=run_id, outputs=outputs, at=now)]
                        )
                    case domain.Execute(node=node, attempt=attempt):
                        await self._execute(tenant_id, stream_id, recorded, run, run_id, node, attempt)
            except WrongExpectedVersion:
                continue  # someone else moved the run; reload and decide again

    async def _execute(self, tenant_id, stream_id, recorded, run, run_id, node, attempt) -> None:
        step_id = node["id"]
        # Record the start before the work, so a crash mid-step is visible and retried as a new attempt.
        started = StepStarted(run_id=run_id, step_id=step_id, attempt=attempt, at=self.clock())
        await self._append(tenant_id, stream_id, recorded, [started])
        log.info("step_started", run_id=str(run_id), step_id=step_id, attempt=attempt)
        ok, result = await run_step(run, node)
        recorded = await self.store.read_stream(tenant_id, stream_id)
        at = self.clock()
        event: Event = (
            StepCompleted(run_id=run_id, step_id=step_id, attempt=attempt, output=result, at=at)
            if ok
            else StepFailed(run_id=run_id, step_id=step_id, attempt=attempt, error=result, at=at)
        )
        await self._append(tenant_id, stream_id, recorded, [event])
        log.info("step_finished", run_id=str(run_id), step_id=step_id, ok=ok)
