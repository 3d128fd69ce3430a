"""The run decider and fold: pure functions over run events. Ids, `now` and results come in from outside."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec

from libs.domain.definition import dependencies, topological_order
from libs.events.errors import DomainError
from libs.events.schemas import Event
from libs.events.schemas.run import (
    ApprovalDecisionRecorded,
    ApprovalEscalated,
    CancelRun,
    DecideApproval,
    EndDelay,
    ExpireApproval,
    RemindApproval,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    RunTerminated,
    StartRun,
    StepAwaitingApproval,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepSkipped,
    StepStarted,
    StepWaiting,
    TerminateRun,
)
from services.executor import approvals

TERMINAL = ("completed", "failed", "cancelled")
DONE_STEP = ("completed", "failed", "skipped")


class StepState(msgspec.Struct, frozen=True, kw_only=True):
    # running | completed | failed | skipped | retrying | waiting | awaiting_approval
    status: str
    attempt: int
    output: Any = None
    error: str | None = None
    wake_at: datetime | None = None  # retrying: next attempt; waiting: end of the delay
    # running: the attempt whose idempotency key this attempt carries, when not its own (it re-executes
    # a crashed attempt that recorded no result); None means `attempt`.
    key_attempt: int | None = None


class Run(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    status: str = ""
    definition: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    steps: dict[str, StepState] = {}  # replaced, never mutated, by evolve
    variables: dict[str, Any] = {}
    created_at: datetime | None = None
    cancel_requested: bool = False
    cancel_reason: str = ""
    approvals: dict[str, approvals.ApprovalState] = {}  # paused approval steps, in the order they paused


initial = Run()


def _step(state: Run, step_id: str, **fields: Any) -> Run:
    return msgspec.structs.replace(state, steps={**state.steps, step_id: StepState(**fields)})


def evolve(state: Run, event: Event) -> Run:
    match event:
        case RunCreated() as e:
            return Run(exists=True, status="pending", definition=e.definition, inputs=e.inputs, created_at=e.at)
        case RunStarted():
            return msgspec.structs.replace(state, status="running")
        case StepStarted(step_id=sid, attempt=attempt):
            prev = state.steps.get(sid)
            if prev is not None and prev.status == "running":  # re-executes a crashed attempt: same key
                return _step(state, sid, status="running", attempt=attempt, key_attempt=prev.key_attempt or prev.attempt)
            return _step(state, sid, status="running", attempt=attempt)
        case StepCompleted(step_id=sid, attempt=attempt, output=output, variables=variables):
            state = _step(state, sid, status="completed", attempt=attempt, output=output)
            if variables:
                state = msgspec.structs.replace(state, variables={**state.variables, **variables})
            if state.status == "awaiting_approval" and not _awaiting(state):
                state = msgspec.structs.replace(state, status="running")
            return state
        case StepFailed(step_id=sid, attempt=attempt, error=error):
            state = _step(state, sid, status="failed", attempt=attempt, error=error)
            if state.status == "awaiting_approval" and not _awaiting(state):  # a rejected approval
                state = msgspec.structs.replace(state, status="running")
            return state
        case StepSkipped(step_id=sid, reason=reason):
            return _step(state, sid, status="skipped", attempt=0, error=reason)
        case StepRetryScheduled(step_id=sid, attempt=attempt, error=error, retry_at=retry_at):
            return _step(state, sid, status="retrying", attempt=attempt, error=error, wake_at=retry_at)
        case StepWaiting(step_id=sid, attempt=attempt, until=until):
            return _step(state, sid, status="waiting", attempt=attempt, wake_at=until)
        case StepAwaitingApproval(step_id=sid):
            state = _step(state, sid, status="awaiting_approval", attempt=state.steps[sid].attempt
                          if sid in state.steps else 1)
            return msgspec.structs.replace(state, status="awaiting_approval",
                                           approvals=approvals.evolve(state.approvals, event))
        case ApprovalDecisionRecorded() | ApprovalEscalated():
            return msgspec.structs.replace(state, approvals=approvals.evolve(state.approvals, event))
        case RunCancelRequested(reason=reason):
            return msgspec.structs.replace(state, cancel_requested=True, cancel_reason=reason)
        case RunCompleted():
            return msgspec.structs.replace(state, status="completed")
        case RunFailed():
            return msgspec.structs.replace(state, status="failed")
        case RunCancelled() | RunTerminated():
            return msgspec.structs.replace(state, status="cancelled")
    return state


def _awaiting(state: Run) -> bool:
    return any(s.status == "awaiting_approval" for s in state.steps.values())


def decide(command, state: Run) -> list[Event]:
    match command:
        case StartRun() as c:
            if state.exists:
                raise DomainError(409, "Run already exists")
            return [c.created()]
        case CancelRun() as c:
            _stoppable(state)
            if state.cancel_requested:
                return []
            return [RunCancelRequested(run_id=c.run_id, reason=c.reason, requested_by=c.requested_by, at=c.at)]
        case TerminateRun() as c:
            _stoppable(state)
            return [RunTerminated(run_id=c.run_id, reason=c.reason, requested_by=c.requested_by, at=c.at)]
        case DecideApproval() | ExpireApproval() | RemindApproval():
            if not state.exists:
                raise DomainError(404, "Execution not found")
            return approvals.decide(command, state, finished=state.status in TERMINAL)
        case EndDelay() as c:
            step = state.steps.get(c.step_id)
            if state.status in TERMINAL or step is None or step.status != "waiting" or step.attempt != c.attempt:
                return []  # a stale timer: the wait already ended, or the run is over
            return [wait_ended(state, c.run_id, c.step_id, c.at)]
    raise DomainError(400, f"unknown command {type(command).__name__}")


def wait_ended(run: Run, run_id, step_id: str, at: datetime) -> StepCompleted:
    """A delay step's wait is over: the same event whether its timer (EndDelay) or the driver (EndWait) ends it."""
    step = run.steps[step_id]
    return StepCompleted(run_id=run_id, step_id=step_id, attempt=step.attempt,
                         output={"waited_until": step.wake_at.isoformat()}, at=at)


def _stoppable(state: Run) -> None:
    if not state.exists:
        raise DomainError(404, "Run not found")
    if state.status in TERMINAL:
        raise DomainError(400, f"Run is already {state.status}")


# ---- what the engine should do next -------------------------------------------------------------------


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
    order = topological_order(run.definition.get("nodes", []))
    by_id = {n["id"]: n for n in order}
    for step_id, step in run.steps.items():
        if step.status == "failed" and not _continues(by_id.get(step_id, {})):
            return Plan(actions=[Fail(f"Step {step_id} failed: {step.error}")])
    running = {sid for sid, s in run.steps.items() if s.status == "running"}
    if run.cancel_requested:
        # Cancel lets running steps finish; waits and retries simply do not continue.
        return Plan() if running & in_flight else Plan(actions=[FinishCancel()])
    actions: list[Action] = []
    wakes = [limit] if limit else []
    for node in order:
        sid = node["id"]
        step = run.steps.get(sid)
        if step is None:
            action = _ready(run, node, by_id)
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


def _ready(run: Run, node: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> Action | None:
    deps = dependencies(node)
    states = [run.steps.get(dep) for dep in deps]
    if any(s is None or s.status not in DONE_STEP for s in states):
        return None
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
