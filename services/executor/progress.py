"""What a run does next, pure: the actions the driver takes at a wake-up (next_actions), the events they
are recorded as (events_for), and what a step's `${}` templates see (step_context)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec

from libs.domain.definition import dependencies
from libs.events.schemas import Event
from libs.events.schemas.run import RunCancelled, RunCompleted, RunFailed, RunStarted, StepSkipped, StepStarted
from services.executor.graph import graph_of
from services.executor.results import wait_ended
from services.executor.run_state import DONE_STEP, TERMINAL, Run


class Begin(msgspec.Struct, frozen=True):
    pass


class Execute(msgspec.Struct, frozen=True):
    node: dict[str, Any]
    attempt: int


class Skip(msgspec.Struct, frozen=True):
    step_id: str
    reason: str


class EndWait(msgspec.Struct, frozen=True):
    step_id: str
    attempt: int


class Finish(msgspec.Struct, frozen=True):
    outputs: dict[str, Any]


class Fail(msgspec.Struct, frozen=True):
    error: str


class FinishCancel(msgspec.Struct, frozen=True):
    pass


Action = Begin | Execute | Skip | EndWait | Finish | Fail | FinishCancel


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """The decision for one moment: actions to take now and the earliest time to look again."""

    actions: list[Action] = []
    wake_at: datetime | None = None


def deadline(run: Run) -> datetime | None:
    timeout = run.definition.get("timeout_s")
    if run.created_at is None or not isinstance(timeout, int | float) or timeout <= 0:
        return None
    return run.created_at + timedelta(seconds=timeout)


def _continues(node: dict[str, Any]) -> bool:
    return node.get("on_error") == "continue"


def next_actions(run: Run, now: datetime, in_flight: frozenset[str] = frozenset()) -> Plan:
    """Pure: given the folded run, the time, and the steps this process is running right now."""
    if not run.exists or run.status in TERMINAL:
        return Plan()
    if run.status == "pending":
        # Start the run and its first ready steps in one append.
        rest = next_actions(msgspec.structs.replace(run, status="running"), now, in_flight)
        return Plan(actions=[Begin(), *rest.actions], wake_at=rest.wake_at)
    limit = deadline(run)
    if limit is not None and now >= limit:
        return Plan(actions=[Fail(f"Run timed out after {run.definition['timeout_s']} s")])
    graph = graph_of(run.definition)
    order, by_id = graph.order, graph.by_id
    for step_id, step in run.steps.items():
        if step.status == "failed" and not _continues(by_id.get(step_id, {})):
            return Plan(actions=[Fail(f"Step {step_id} failed: {step.error}")])
    running = {sid for sid, s in run.steps.items() if s.status == "running"}
    if run.cancel_requested:
        # Cancel lets running steps finish; waits and retries simply do not continue.
        return Plan() if running & in_flight else Plan(actions=[FinishCancel()])
    actions: list[Action] = []
    wakes = [limit] if limit else []
    for sid, node, deps in graph.entries:
        step = run.steps.get(sid)
        if step is None:
            action = _ready(run, node, by_id, deps)
            if action is not None:
                actions.append(action)
        elif step.status == "running" and sid not in in_flight:
            # Started but not running here: the process that ran it died. Run it again, as a new attempt.
            actions.append(Execute(node, step.attempt + 1))
        elif step.status in ("retrying", "waiting"):
            if step.wake_at is not None and step.wake_at > now:
                if step.status == "retrying":  # a delay's end arrives as EndDelay from its durable timer
                    wakes.append(step.wake_at)
            elif step.status == "retrying":
                actions.append(Execute(node, step.attempt + 1))
            else:
                actions.append(EndWait(sid, step.attempt))
    if actions or running or any(s.status in ("retrying", "waiting", "awaiting_approval") for s in run.steps.values()):
        return Plan(actions=actions, wake_at=min(wakes) if wakes else None)
    if all(sid in run.steps and run.steps[sid].status in DONE_STEP for sid in by_id):
        return Plan(actions=[Finish(run_outputs(run, order))])
    return Plan(wake_at=min(wakes) if wakes else None)


def _ready(run: Run, node: dict[str, Any], by_id: dict[str, dict[str, Any]], deps: list[str]) -> Action | None:
    states = []
    for dep in deps:  # most steps of a long chain wait: the first unfinished dependency settles it
        state = run.steps.get(dep)
        if state is None or state.status not in DONE_STEP:
            return None
        states.append(state)
    for dep, s in zip(deps, states, strict=True):
        if s.status == "skipped":
            return Skip(node["id"], f"upstream step {dep} was skipped")
        if s.status == "failed":
            return Skip(node["id"], f"upstream step {dep} failed")
        if by_id[dep]["type"] == "condition" and isinstance(s.output, dict) and s.output.get("passed") is False:
            return Skip(node["id"], f"condition {dep} was false")
    return Execute(node, 1)


def run_outputs(run: Run, order: list[dict[str, Any]]) -> dict[str, Any]:
    """The outputs of the terminal steps (those nothing depends on) that completed: a dict output is
    merged in, anything else is kept under its step id."""
    depended_on = {dep for node in order for dep in dependencies(node)}
    outputs: dict[str, Any] = {}
    for node in order:
        step = run.steps.get(node["id"])
        if node["id"] in depended_on or step is None or step.status != "completed":
            continue
        if isinstance(step.output, dict):
            outputs.update(step.output)
        else:
            outputs[node["id"]] = step.output
    return outputs


class Start(msgspec.Struct, frozen=True):
    """A step to run now. `key_attempt`: the attempt whose idempotency key it carries, when not its own."""

    node: dict[str, Any]
    attempt: int
    key_attempt: int | None = None


def events_for(run: Run, run_id: uuid.UUID, actions: list[Action], at: datetime) -> tuple[list[Event], list[Start]]:
    """The events the actions are recorded as, and the steps to run (their StepStarted is among the events)."""
    events: list[Event] = []
    starts: list[Start] = []
    for action in actions:
        match action:
            case Begin():
                events.append(RunStarted(run_id=run_id, at=at))
            case Skip(step_id=sid, reason=reason):
                events.append(StepSkipped(run_id=run_id, step_id=sid, reason=reason, at=at))
            case EndWait(step_id=sid):
                events.append(wait_ended(run, run_id, sid, at))
            case Finish(outputs=outputs):
                events.append(RunCompleted(run_id=run_id, outputs=outputs, at=at))
            case Fail(error=error):
                events.append(RunFailed(run_id=run_id, error=error, at=at))
            case FinishCancel():
                events.append(RunCancelled(run_id=run_id, reason=run.cancel_reason or "Cancelled by user", at=at))
            case Execute(node=node, attempt=attempt):
                sid = node["id"]
                events.append(StepStarted(run_id=run_id, step_id=sid, attempt=attempt, at=at))
                # A step left running by a crash recorded no result, yet its side effect may have happened:
                # the re-execution carries the crashed attempt's idempotency key.
                prev = run.steps.get(sid)
                key_attempt = (prev.key_attempt or prev.attempt) if prev and prev.status == "running" else None
                starts.append(Start(node, attempt, key_attempt))
    return events, starts


def step_context(run: Run, node: dict[str, Any]) -> dict[str, Any]:
    """What `${...}` can see: inputs, variables, every finished step's output by id (also under `steps`),
    and `input`, the output of the step(s) named by input_from. Variables are also top-level names, as C's
    `${user.name}` shows; a step id or a reserved name wins over a variable of the same name."""
    outputs = {sid: s.output for sid, s in run.steps.items() if s.status == "completed"}
    context: dict[str, Any] = {**run.variables, **outputs, "steps": outputs, "inputs": run.inputs,
                               "variables": run.variables}
    source = node.get("input_from")
    if isinstance(source, str):
        context["input"] = outputs.get(source)
    elif isinstance(source, list):
        context["input"] = {sid: outputs.get(sid) for sid in source}
    return context
