"""The run decider: `decide(command, run) -> events`, pure. Ids, `now`, step results and random draws come
in with the command. The fold (run_state), what a run does next (progress) and how a step's result is
recorded (results) are re-exported here: this module is the executor's domain, in one import."""

from __future__ import annotations

from libs.domain.definition import refuse_nul
from libs.events.errors import DomainError
from libs.events.schemas import Event
from libs.events.schemas.run import (
    CancelRun,
    DecideApproval,
    EndDelay,
    ExpireApproval,
    RemindApproval,
    RunCancelRequested,
    RunTerminated,
    StartRun,
    TerminateRun,
)
from services.executor import approvals, results
from services.executor.progress import (
    Action,
    Begin,
    EndWait,
    Execute,
    Fail,
    Finish,
    FinishCancel,
    Plan,
    Skip,
    Start,
    deadline,
    events_for,
    next_actions,
    run_outputs,
    step_context,
)
from services.executor.results import RecordStepResult, backoff_s, retry_policy, wait_ended
from services.executor.run_state import DONE_STEP, TERMINAL, Run, StepState, evolve, initial

__all__ = ["DONE_STEP", "TERMINAL", "Action", "Begin", "EndWait", "Execute", "Fail", "Finish", "FinishCancel", "Plan",
           "RecordStepResult", "Run", "Skip", "Start", "StepState", "backoff_s", "deadline", "decide", "events_for",
           "evolve", "initial", "next_actions", "retry_policy", "run_outputs", "step_context", "wait_ended"]


def decide(command, state: Run) -> list[Event]:
    """The events a command adds to the run, or a DomainError saying why it is refused."""
    if not isinstance(command, RecordStepResult):
        _storable(command)
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
        case RecordStepResult() as c:
            return results.record(c, state)
    raise DomainError(400, f"unknown command {type(command).__name__}")


def _storable(command) -> None:
    """A command whose text Postgres cannot store (a NUL character in an input, a comment, a reason) can
    never succeed: refuse it now with a 400 naming the field, rather than fail its append on every delivery."""
    for name in getattr(command, "__struct_fields__", ()):
        value = getattr(command, name)
        # A StartRun's definition was read from the store (validate_definition refused NULs before that).
        if name != "definition" and isinstance(value, str | dict | list):
            refuse_nul(value, name)


def _stoppable(state: Run) -> None:
    if not state.exists:
        raise DomainError(404, "Run not found")
    if state.status in TERMINAL:
        raise DomainError(400, f"Run is already {state.status}")
