"""One run's driver: folds the run's events, plans with the decider, runs pure steps inline and the others as
tasks, and appends their results at the known version (services/executor/engine.py keeps one per run)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from functools import partial
from typing import Any

import structlog

from libs.events.aggregate import fold
from libs.events.db import DB_UNAVAILABLE
from libs.events.faults import crash_point
from libs.events.schemas import Event, Metadata
from libs.events.store import RecordedEvent, WrongExpectedVersion
from libs.telemetry import metrics
from libs.telemetry.tracing import mark_error, traced
from services.executor import domain
from services.executor.effects import Effect, Failed
from services.executor.interpolation import MissingPath
from services.executor.ownership import disown, own
from services.executor.progress import step_context
from services.executor.run_metrics import count_run_events
from services.executor.steps import PURE, REGISTRY, StepCall, StepError, outcome, step_key
from services.executor.timers import timers_for

# services/executor/engine.py's Engine, which imports this module (so it cannot import that one).
Engine = Any

log = structlog.get_logger()

# Inline planning rounds per append (each runs at least one pure step); a longer chain just takes more appends.
MAX_INLINE_ROUNDS = 64


class RunDriver:
    def __init__(self, engine: Engine, tenant_id: str, run_id: uuid.UUID):
        self.engine, self.tenant_id, self.run_id = engine, tenant_id, run_id
        self.stream_id = f"run-{run_id}"
        self.wake = asyncio.Event()
        self.in_flight: dict[str, asyncio.Task] = {}
        self.task: asyncio.Task
        # The run as last read or written by this driver; re-read only when `stale`.
        self.stale = True
        self.run = domain.initial
        self.version = 0
        self.metadata: Metadata | None = None
        # Results of finished steps as the decider recorded them, appended with the driver's next append
        # (with the steps they unblock).
        self.results: dict[str, list[Event]] = {}
        # Steps of the first pass (committed with RunCreated) to start once the driver is known, and when.
        self.first_steps: list[domain.Start] = []
        self.first_at: datetime | None = None
        self.leased = False

    async def first_pass(self, run: domain.Run) -> list[Event]:
        """The events of the new run's first pass (see Engine.prepare); its steps start in `launch_first_steps`."""
        self.first_at = self.engine.clock()
        _, events, self.first_steps, _ = await self._plan(run, self.first_at)
        return events

    def launch_first_steps(self) -> None:
        for start in self.first_steps:
            self._launch(self.run, start, self.first_at)
        self.first_steps = []

    def _launch(self, run: domain.Run, start: domain.Start, at: datetime) -> None:
        self.in_flight[start.node["id"]] = asyncio.create_task(self._execute(run, start, at))

    async def drive(self) -> None:
        # A database outage (restart, failover) is waited out: a driver that hits one looks again later
        # instead of dying and leaving its run unfinished until something else happens to poke it.
        try:
            if self.finished():
                return  # nothing to drive and nothing to run: no lease to take (and release) for it
            # No step starts before the lease is ours, the first pass's included: another replica may drive
            # the run, and a step it runs must not run here too (docs/decisions/0110).
            if not await self._outlasting_outages(partial(own, self)):
                return
            self.launch_first_steps()
            await self._outlasting_outages(self._drive)
        finally:
            for task in self.in_flight.values():
                task.cancel()
            await disown(self)

    def finished(self) -> bool:
        """The run as this driver knows it, from the log it just wrote or read (not `stale`), has ended and left
        nothing for the driver: no first steps to start, no step results to record. A run that completes in its
        first pass (pure steps only) is done once that append commits; an ended run never changes status."""
        return (not self.stale and self.run.exists and self.run.status in domain.TERMINAL
                and not self.first_steps and not self.results and not self.in_flight)

    async def _outlasting_outages(self, step):
        delay = 0.2
        while True:
            try:
                return await step()
            except DB_UNAVAILABLE as exc:
                log.warning("run_driver_db_error", run_id=str(self.run_id), error=f"{type(exc).__name__}: {exc}",
                            retry_in_s=delay)
                self.stale = True  # an append may or may not have committed: read the log again
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _read(self) -> None:
        self.known(await self.engine.store.read_stream(self.tenant_id, self.stream_id))

    def known(self, recorded: list[RecordedEvent]) -> None:
        """Take the run's whole log as read (or just written) as what the driver knows."""
        self.run = fold(domain.initial, domain.evolve, recorded)
        self.version = len(recorded)
        if recorded:
            self.metadata = Metadata(tenant_id=self.tenant_id, correlation_id=recorded[0].metadata.get("correlation_id"),
                                     causation_id=str(recorded[-1].event_id), actor="executor",
                                     traceparent=recorded[0].metadata.get("traceparent"))
        self.stale = False

    async def _drive(self) -> None:
        while True:
            self.wake.clear()
            if self.stale:
                await self._read()
            results = list(self.results.items())
            run = self.run
            for _, recorded in results:
                for event in recorded:
                    run = domain.evolve(run, event)
            if not self.run.exists or self.run.status in domain.TERMINAL:
                if results:  # terminated while steps ran: record what they did, it cannot change the status
                    await self._record(self.run, results, [])
                return  # finished or terminated: `finally` abandons anything still running
            now = self.engine.clock()
            run, events, starts, wake_at = await self._plan(run, now)
            if results or events:
                if not await self._record(run, results, events):
                    continue  # someone else moved the run; look again
                for start in starts:
                    self._launch(run, start, now)
                continue
            if not self.in_flight and wake_at is None:
                return  # nothing running, nothing due: the next run event pokes a new driver
            timeout = None if wake_at is None else max(0.0, (wake_at - now).total_seconds())
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _plan(self, run: domain.Run, now: datetime
                    ) -> tuple[domain.Run, list[Event], list[domain.Start], datetime | None]:
        """Decide what to do now: (the run with the new events folded in, the events, the steps to start as
        tasks, when to look again). Pure steps (steps.PURE) that become ready run here and now, and planning
        goes on with their results, so a chain of them is committed by one append together with what they
        unblock (docs/decisions/0011-inline-pure-steps.md)."""
        events: list[Event] = []
        starts: list[domain.Start] = []
        busy = set(self.in_flight)
        for _ in range(MAX_INLINE_ROUNDS):
            plan = domain.next_actions(run, now, frozenset(busy))
            decided, ready = domain.events_for(run, self.run_id, plan.actions, now)
            for event in decided:
                run = domain.evolve(run, event)
            events += decided
            inline = [start for start in ready if step_key(start.node) in PURE]
            for start in ready:
                if step_key(start.node) not in PURE:
                    starts.append(start)
                    busy.add(start.node["id"])
            if not inline and not decided:
                return run, events, starts, plan.wake_at
            # Something changed (a step skipped, a pure result): plan again with it, so what it settles (the
            # run's end, a skip's dependents) goes into the same append.
            for start in inline:
                recorded = self._decide_result(run, start, await self._call(run, start, now))
                log.debug("step_finished", run_id=str(self.run_id), step_id=start.node["id"], attempt=start.attempt,
                          result=_names(recorded), inline=True)
                for event in recorded:
                    run = domain.evolve(run, event)
                events += recorded
        return run, events, starts, None  # not done planning: record this much, then plan again

    async def _record(self, run: domain.Run, results: list[tuple[str, list[Event]]], events: list[Event]) -> bool:
        """Append step results and new decisions in one transaction at the known version; False on a conflict.
        `run` is the run with all of them folded in."""
        batch = [event for _, recorded in results for event in recorded] + events
        try:
            await self.engine.store.append(self.stream_id, self.version, batch, metadata=self.metadata,
                                           timers=timers_for(self.tenant_id, self.metadata, batch))
        except WrongExpectedVersion:
            self.stale = True
            return False
        for sid, recorded in results:
            if self.results.get(sid) is recorded:
                del self.results[sid]
        self.run, self.version = run, self.version + len(batch)
        count_run_events(type(event).__name__ for event in batch)
        return True

    async def _execute(self, run: domain.Run, start: domain.Start, at: datetime) -> None:
        sid = start.node["id"]
        try:
            crash_point("after_step_started")
            effect = await self._call(run, start, at)
            crash_point("after_side_effect")
            recorded = self._decide_result(run, start, effect)
            # The driver appends them with its next append. If this process dies first, the step is still
            # "running" in the log and runs again under the same idempotency key.
            self.results[sid] = recorded
            log.info("step_finished", run_id=str(self.run_id), step_id=sid, attempt=start.attempt,
                     result=_names(recorded))
        finally:
            self.in_flight.pop(sid, None)
            self.wake.set()

    def _decide_result(self, run: domain.Run, start: domain.Start, effect: Effect) -> list[Event]:
        """The decider's events for an attempt's result. The engine supplies the time and the random draw
        the backoff's jitter uses; the retry policy and the mapping are the decider's (results.py)."""
        command = domain.RecordStepResult(run_id=self.run_id, step_id=start.node["id"], attempt=start.attempt,
                                          result=effect, at=self.engine.clock(),
                                          jitter=self.engine.rng.uniform(-1.0, 1.0))
        return domain.decide(command, run)

    async def _call(self, run: domain.Run, start: domain.Start, at: datetime) -> Effect:
        """Run the step's registered function; what it returns, or the error it raises, as an effect,
        measured and traced per step type."""
        node = start.node
        kind = step_key(node) or ""
        fn = REGISTRY.get(kind)
        if fn is None:
            return Failed(error=f"unsupported step type {kind!r}")
        with traced(f"step {kind}") as span:
            began = time.perf_counter()
            effect = await self._invoke(fn, run, start, at)
            failed = isinstance(effect, Failed)
            metrics.labelled(metrics.STEP_LATENCY, kind, "error" if failed else "ok").observe(
                time.perf_counter() - began)
            if span.is_recording():
                span.set_attributes({"weft.run_id": str(self.run_id), "weft.step_id": node["id"],
                                     "weft.attempt": start.attempt})
                if failed:
                    mark_error(span, effect.error)
            return effect

    async def _invoke(self, fn, run: domain.Run, start: domain.Start, at: datetime) -> Effect:
        node = start.node
        call = StepCall(tenant_id=self.tenant_id, run_id=self.run_id, step_id=node["id"], attempt=start.attempt,
                        key_attempt=start.key_attempt, at=at)
        timeout = node.get("timeout_s")
        try:
            work = fn(node, step_context(run, node), call, self.engine.deps)
            return outcome(await (asyncio.wait_for(work, timeout) if isinstance(timeout, int | float) else work))
        except StepError as exc:
            return Failed(error=str(exc), retryable=exc.retryable)
        except MissingPath as exc:
            return Failed(error=str(exc))
        except TimeoutError:
            return Failed(error=f"Step timed out after {timeout} s", retryable=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in a step must fail the step, not the engine
            log.exception("step_crashed", step_id=node["id"])
            return Failed(error=f"Unexpected error: {type(exc).__name__}: {exc}")


def _names(events: list[Event]) -> str:
    return ",".join(type(e).__name__ for e in events)
