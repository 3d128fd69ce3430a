"""Drives runs: one driver task per active run folds its events, starts every ready step concurrently,
records each result as an event, and sleeps until a step finishes, a timer is due, or an event arrives."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from libs.events.aggregate import fold
from libs.events.db import DB_UNAVAILABLE
from libs.events.faults import crash_point
from libs.events.schemas import Event, Metadata
from libs.events.schemas.run import (
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepSkipped,
    StepStarted,
    StepWaiting,
)
from libs.events.store import EventStore, RecordedEvent, WrongExpectedVersion
from libs.telemetry import metrics
from libs.telemetry.tracing import mark_error, traced
from services.executor import approvals, domain
from services.executor.interpolation import MissingPath
from services.executor.run_metrics import count_run_events
from services.executor.steps import PURE, REGISTRY, StepCall, StepDeps, StepError, StepResult
from services.executor.timers import timers_for

log = structlog.get_logger()

# Inline planning rounds per append (each runs at least one pure step); a longer chain just takes more appends.
MAX_INLINE_ROUNDS = 64
DEFAULT_RETRY = {"max_attempts": 3, "backoff_s": 1.0, "multiplier": 2.0, "max_backoff_s": 30.0, "jitter": 0.2}


def _now() -> datetime:
    return datetime.now(UTC)


def step_context(run: domain.Run, node: dict[str, Any]) -> dict[str, Any]:
    """What `${...}` can see: inputs, variables, every finished step's output by id (also under `steps`),
    and `input`, the output of the step(s) named by input_from."""
    outputs = {sid: s.output for sid, s in run.steps.items() if s.status == "completed"}
    context: dict[str, Any] = {**outputs, "steps": outputs, "inputs": run.inputs, "variables": run.variables}
    source = node.get("input_from")
    if isinstance(source, str):
        context["input"] = outputs.get(source)
    elif isinstance(source, list):
        context["input"] = {sid: outputs.get(sid) for sid in source}
    return context


def retry_policy(node: dict[str, Any]) -> dict[str, float]:
    policy = dict(DEFAULT_RETRY)
    if isinstance(node.get("retry"), dict):
        policy.update({k: v for k, v in node["retry"].items() if k in DEFAULT_RETRY and isinstance(v, int | float)})
    return policy


def backoff_s(policy: dict[str, float], attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: base * multiplier^(attempt-1), capped, +- jitter."""
    base = min(policy["max_backoff_s"], policy["backoff_s"] * policy["multiplier"] ** (attempt - 1))
    return max(0.0, base * (1 + rng.uniform(-policy["jitter"], policy["jitter"])))


def step_key(node: dict[str, Any]) -> str:
    return node.get("action") if node["type"] == "integration" else node["type"]


class Engine:
    def __init__(self, store: EventStore, deps: StepDeps | None = None, clock: Callable[[], datetime] = _now,
                 rng: random.Random | None = None):
        self.store, self.deps, self.clock = store, deps or StepDeps(), clock
        self.rng = rng or random.Random()
        self.drivers: dict[tuple[str, uuid.UUID], RunDriver] = {}

    def prepare(self, tenant_id: str, run_id: uuid.UUID) -> RunDriver:
        """A driver for a new run, not yet running: its first pass is appended with RunCreated, then `poke`
        starts it."""
        return RunDriver(self, tenant_id, run_id)

    def poke(self, tenant_id: str, run_id: uuid.UUID, stream: list[RecordedEvent] | None = None,
             prepared: RunDriver | None = None) -> RunDriver:
        """Make sure a driver looks at this run now. Idempotent; cheap to call on every run event.
        `stream`, the run's whole log as just written by the caller, spares a new driver reading it;
        `prepared` is the driver whose first pass that log includes (its steps start now)."""
        key = (tenant_id, run_id)
        driver = self.drivers.get(key)
        if driver is not None and not driver.task.done():
            driver.stale = True  # something outside the driver changed the run: read the log again
            driver.wake.set()
            return driver
        driver = prepared or RunDriver(self, tenant_id, run_id)
        if stream:
            driver.known(stream)
        driver.launch_first_steps()
        self.drivers[key] = driver
        driver.task = asyncio.create_task(driver.drive(), name=f"run-{run_id}")
        driver.task.add_done_callback(lambda _t, k=key, d=driver: self._forget(k, d))
        return driver

    def _forget(self, key, driver) -> None:
        if self.drivers.get(key) is driver:
            del self.drivers[key]
        if not driver.task.cancelled() and driver.task.exception() is not None:
            log.error("run_driver_failed", run_id=str(key[1]), error=repr(driver.task.exception()))

    async def advance(self, tenant_id: str, run_id: uuid.UUID) -> str | None:
        """Drive a run until it needs nothing more right now (tests and tools); returns its status."""
        driver = self.poke(tenant_id, run_id)
        await asyncio.shield(driver.task)
        recorded = await self.store.read_stream(tenant_id, f"run-{run_id}")
        return fold(domain.initial, domain.evolve, recorded).status or None

    async def recover(self, pool: asyncpg.Pool) -> int:
        """After a restart: look at every unfinished run again, re-arming its timers and redoing crashed steps."""
        # awaiting_approval too: a paused run may have other branches still running.
        rows = await pool.fetch(
            "SELECT tenant_id, id FROM runs WHERE status IN ('pending', 'running', 'awaiting_approval')")
        for row in rows:
            self.poke(row["tenant_id"], row["id"])
        return len(rows)

    async def stop(self) -> None:
        drivers = list(self.drivers.values())
        for driver in drivers:
            driver.task.cancel()
        await asyncio.gather(*(d.task for d in drivers), return_exceptions=True)


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
        # Results of finished steps, recorded with the driver's next append (with the steps they unblock).
        self.results: dict[str, Event] = {}
        # Steps of the first pass (committed with RunCreated) to start once the driver is known.
        self.first_steps: list = []

    async def first_pass(self, run: domain.Run) -> list[Event]:
        """The events of the new run's first pass (see Engine.prepare); its steps start in `launch_first_steps`."""
        _, events, self.first_steps, _ = await self._plan(run, self.engine.clock())
        return events

    def launch_first_steps(self) -> None:
        for node, attempt, key_attempt in self.first_steps:
            self.in_flight[node["id"]] = asyncio.create_task(self._execute(self.run, node, attempt, key_attempt))
        self.first_steps = []

    async def drive(self) -> None:
        # A database outage (restart, failover) is waited out: a driver that hits one looks again later
        # instead of dying and leaving its run unfinished until something else happens to poke it.
        delay = 0.2
        try:
            while True:
                try:
                    await self._drive()
                    return
                except DB_UNAVAILABLE as exc:
                    log.warning("run_driver_db_error", run_id=str(self.run_id), error=f"{type(exc).__name__}: {exc}",
                                retry_in_s=delay)
                    self.stale = True  # an append may or may not have committed: read the log again
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            for task in self.in_flight.values():
                task.cancel()

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
            for _, event in results:
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
                for node, attempt, key_attempt in starts:
                    self.in_flight[node["id"]] = asyncio.create_task(self._execute(run, node, attempt, key_attempt))
                continue
            if not self.in_flight and wake_at is None:
                return  # nothing running, nothing due: the next run event pokes a new driver
            timeout = None if wake_at is None else max(0.0, (wake_at - now).total_seconds())
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _plan(self, run: domain.Run, now: datetime) -> tuple[domain.Run, list[Event], list, datetime | None]:
        """Decide what to do now: (the run with the new events folded in, the events, the steps to start as
        tasks, when to look again). Pure steps (steps.PURE) that become ready run here and now, and planning
        goes on with their results, so a chain of them is committed by one append together with what they
        unblock (docs/decisions/0011-inline-pure-steps.md)."""
        events: list[Event] = []
        starts: list = []
        busy = set(self.in_flight)
        for _ in range(MAX_INLINE_ROUNDS):
            plan = domain.next_actions(run, now, frozenset(busy))
            decided, ready = self._events_for(run, plan.actions, now)
            for event in decided:
                run = domain.evolve(run, event)
            events += decided
            inline = [start for start in ready if step_key(start[0]) in PURE]
            for start in ready:
                if step_key(start[0]) not in PURE:
                    starts.append(start)
                    busy.add(start[0]["id"])
            if not inline and not decided:
                return run, events, starts, plan.wake_at
            # Something changed (a step skipped, a pure result): plan again with it, so what it settles (the
            # run's end, a skip's dependents) goes into the same append.
            for node, attempt, key_attempt in inline:
                ok, result, retryable = await self._call(run, node, attempt, key_attempt)
                event = self._result_event(node, attempt, ok, result, retryable)
                log.debug("step_finished", run_id=str(self.run_id), step_id=node["id"], attempt=attempt,
                          result=type(event).__name__, inline=True)
                run = domain.evolve(run, event)
                events.append(event)
        return run, events, starts, None  # not done planning: record this much, then plan again

    async def _record(self, run: domain.Run, results: list[tuple[str, Event]], events: list[Event]) -> bool:
        """Append step results and new decisions in one transaction at the known version; False on a conflict.
        `run` is the run with all of them folded in."""
        batch = [event for _, event in results] + events
        try:
            await self.engine.store.append(self.stream_id, self.version, batch, metadata=self.metadata,
                                           timers=timers_for(self.tenant_id, self.metadata, batch))
        except WrongExpectedVersion:
            self.stale = True
            return False
        for sid, event in results:
            if self.results.get(sid) is event:
                del self.results[sid]
        self.run, self.version = run, self.version + len(batch)
        count_run_events(type(event).__name__ for event in batch)
        return True

    def _events_for(self, run: domain.Run, actions, now: datetime) -> tuple[list[Event], list]:
        rid = self.run_id
        events: list[Event] = []
        starts: list = []
        for action in actions:
            match action:
                case domain.Begin():
                    events.append(RunStarted(run_id=rid, at=now))
                case domain.Skip(step_id=sid, reason=reason):
                    events.append(StepSkipped(run_id=rid, step_id=sid, reason=reason, at=now))
                case domain.EndWait(step_id=sid):
                    events.append(domain.wait_ended(run, rid, sid, now))
                case domain.Finish(outputs=outputs):
                    events.append(RunCompleted(run_id=rid, outputs=outputs, at=now))
                case domain.Fail(error=error):
                    events.append(RunFailed(run_id=rid, error=error, at=now))
                case domain.FinishCancel():
                    events.append(RunCancelled(run_id=rid, reason=run.cancel_reason or "Cancelled by user", at=now))
                case domain.Execute(node=node, attempt=attempt):
                    sid = node["id"]
                    events.append(StepStarted(run_id=rid, step_id=sid, attempt=attempt, at=now))
                    kind = step_key(node)
                    if kind == "delay":
                        # A delay is a durable timer: StepWaiting is appended with a timer whose EndDelay
                        # command ends the wait (services/executor/timers.py); the driver does not sleep for it.
                        seconds = float((node.get("config") or {}).get("seconds", 0))
                        events.append(StepWaiting(run_id=rid, step_id=sid, attempt=attempt,
                                                  until=now + timedelta(seconds=seconds), at=now))
                    elif kind == "approval":
                        # Pauses the run; the decision arrives as a command (services/executor/approvals.py).
                        fallback = getattr(self.engine.deps.settings, "approval_email", "approver@localhost")
                        events.append(approvals.paused(rid, run, node, attempt, step_context(run, node), now,
                                                       fallback))
                    else:
                        # A step left running by a crash recorded no result, yet its side effect may have
                        # happened: the re-execution carries the crashed attempt's idempotency key.
                        prev = run.steps.get(sid)
                        key_attempt = (prev.key_attempt or prev.attempt) if prev and prev.status == "running" else None
                        starts.append((node, attempt, key_attempt))
        return events, starts

    async def _execute(self, run: domain.Run, node: dict[str, Any], attempt: int,
                       key_attempt: int | None = None) -> None:
        sid = node["id"]
        try:
            crash_point("after_step_started")
            ok, result, retryable = await self._call(run, node, attempt, key_attempt)
            crash_point("after_side_effect")
            event = self._result_event(node, attempt, ok, result, retryable)
            # The driver records it with its next append. If this process dies first, the step is still
            # "running" in the log and runs again under the same idempotency key.
            self.results[sid] = event
            log.info("step_finished", run_id=str(self.run_id), step_id=sid, attempt=attempt, result=type(event).__name__)
        finally:
            self.in_flight.pop(sid, None)
            self.wake.set()

    def _result_event(self, node: dict[str, Any], attempt: int, ok: bool, result: Any, retryable: bool) -> Event:
        """The event that records an attempt's result: completed, a retry under the node's policy, or failed."""
        sid, now = node["id"], self.engine.clock()
        if ok:
            value = result if isinstance(result, StepResult) else StepResult(result)
            return StepCompleted(run_id=self.run_id, step_id=sid, attempt=attempt, output=value.output,
                                 variables=value.variables, at=now)
        policy = retry_policy(node)
        if retryable and attempt < policy["max_attempts"]:
            delay = backoff_s(policy, attempt, self.engine.rng)
            return StepRetryScheduled(run_id=self.run_id, step_id=sid, attempt=attempt, error=result,
                                      retry_at=now + timedelta(seconds=delay), at=now)
        return StepFailed(run_id=self.run_id, step_id=sid, attempt=attempt, error=result, at=now)

    async def _call(self, run: domain.Run, node: dict[str, Any], attempt: int,
                    key_attempt: int | None = None) -> tuple[bool, Any, bool]:
        """(ok, output or error message, retryable), measured and traced per step type."""
        kind = step_key(node)
        fn = REGISTRY.get(kind)
        if fn is None:
            return False, f"unsupported step type {kind!r}", False
        with traced(f"step {kind}") as span:
            began = time.perf_counter()
            ok, result, retryable = await self._invoke(fn, run, node, attempt, key_attempt)
            elapsed = time.perf_counter() - began
            metrics.labelled(metrics.STEP_LATENCY, kind, "ok" if ok else "error").observe(elapsed)
            if span.is_recording():
                span.set_attributes({"weft.run_id": str(self.run_id), "weft.step_id": node["id"],
                                     "weft.attempt": attempt})
                if not ok:
                    mark_error(span, str(result))
            return ok, result, retryable

    async def _invoke(self, fn, run: domain.Run, node: dict[str, Any], attempt: int,
                      key_attempt: int | None) -> tuple[bool, Any, bool]:
        call = StepCall(tenant_id=self.tenant_id, run_id=self.run_id, step_id=node["id"], attempt=attempt,
                        key_attempt=key_attempt)
        timeout = node.get("timeout_s")
        try:
            work = fn(node, step_context(run, node), call, self.engine.deps)
            result = await (asyncio.wait_for(work, timeout) if isinstance(timeout, int | float) else work)
            return True, result, False
        except StepError as exc:
            return False, str(exc), exc.retryable
        except MissingPath as exc:
            return False, str(exc), False
        except TimeoutError:
            return False, f"Step timed out after {timeout} s", True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in a step must fail the step, not the engine
            log.exception("step_crashed", step_id=node["id"])
            return False, f"Unexpected error: {type(exc).__name__}: {exc}", False

