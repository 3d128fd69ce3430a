"""The run decider and fold: pure functions over run events. Ids and `at` come in from outside."""

from __future__ import annotations

from typing import Any

import msgspec

from libs.events.definition import dependencies, topological_order
from libs.events.errors import DomainError
from libs.events.schemas import Event
from libs.events.schemas.run import (
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    StartRun,
    StepCompleted,
    StepFailed,
    StepStarted,
)

TERMINAL = ("completed", "failed")


class StepState(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    attempt: int
    output: Any = None
    error: str | None = None


class Run(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    status: str = ""
    definition: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    steps: dict[str, StepState] = {}  # replaced, never mutated, by evolve


initial = Run()


def evolve(state: Run, event: Event) -> Run:
    match event:
        case RunCreated() as e:
            return Run(exists=True, status="pending", definition=e.definition, inputs=e.inputs)
        case RunStarted():
            return msgspec.structs.replace(state, status="running")
        case StepStarted(step_id=sid, attempt=attempt):
            return msgspec.structs.replace(state, steps={**state.steps, sid: StepState(status="running", attempt=attempt)})
        case StepCompleted(step_id=sid, attempt=attempt, output=output):
            return msgspec.structs.replace(
                state, steps={**state.steps, sid: StepState(status="completed", attempt=attempt, output=output)}
            )
        case StepFailed(step_id=sid, attempt=attempt, error=error):
            return msgspec.structs.replace(
                state, steps={**state.steps, sid: StepState(status="failed", attempt=attempt, error=error)}
            )
        case RunCompleted():
            return msgspec.structs.replace(state, status="completed")
        case RunFailed():
            return msgspec.structs.replace(state, status="failed")
    return state


def decide(command, state: Run) -> list[Event]:
    match command:
        case StartRun() as c:
            if state.exists:
                raise DomainError(409, "Run already exists")
            return [
                RunCreated(
                    run_id=c.run_id, workflow_id=c.workflow_id, workflow_version=c.workflow_version,
                    definition=c.definition, inputs=c.inputs, created_by=c.created_by, at=c.at,
                )
            ]
    raise DomainError(400, f"unknown command {type(command).__name__}")


class Begin(msgspec.Struct, frozen=True):
    pass


class Execute(msgspec.Struct, frozen=True):
    node: dict[str, Any]
    attempt: int


class Finish(msgspec.Struct, frozen=True):
    outputs: dict[str, Any]


class Fail(msgspec.Struct, frozen=True):
    error: str


Action = Begin | Execute | Finish | Fail | None


def next_action(run: Run) -> Action:
    """What the engine should do next for this run; None when there is nothing to do."""
    if not run.exists or run.status in TERMINAL:
        return None
    if run.status == "pending":
        return Begin()
    for step_id, step in run.steps.items():
        if step.status == "failed":
            return Fail(f"Step {step_id} failed: {step.error}")
    order = topological_order(run.definition.get("nodes", []))
    for node in order:
        step = run.steps.get(node["id"])
        if step is not None and step.status == "running":
            # Started but never finished: the process that ran it died. Run it again as a new attempt.
            return Execute(node, step.attempt + 1)
    for node in order:
        if node["id"] not in run.steps and all(
            run.steps.get(dep) is not None and run.steps[dep].status == "completed" for dep in dependencies(node)
        ):
            return Execute(node, 1)
    return Finish(run_outputs(run, order))


def run_outputs(run: Run, order: list[dict[str, Any]]) -> dict[str, Any]:
    """The outputs of the terminal steps (those nothing depends on): a dict output is merged in,
    anything else is kept under its step id."""
    depended_on = {dep for node in order for dep in dependencies(node)}
    outputs: dict[str, Any] = {}
    for node in order:
        if node["id"] in depended_on:
            continue
        value = run.steps[node["id"]].output
        if isinstance(value, dict):
            outputs.update(value)
        else:
            outputs[node["id"]] = value
    return outputs
