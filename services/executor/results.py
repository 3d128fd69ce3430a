"""A step attempt's result as events, pure: completion, a retry under the node's policy (exponential
backoff with jitter), failure, a wait, an approval pause. The engine hands the result in as a
RecordStepResult command with the time and a random draw for the jitter; nothing here reads a clock or
a random source, so the same command on the same run always gives the same events.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec

from libs.domain.definition import plan_hash, refuse_nul
from libs.events.errors import DomainError
from libs.events.schemas import Event
from libs.events.schemas.run import (
    StepAwaitingApproval,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepWaiting,
)
from services.executor.effects import AwaitApproval, Completed, Effect, Failed, WaitUntil
from services.executor.graph import graph_of
from services.executor.run_state import Run

DEFAULT_RETRY = {"max_attempts": 3, "backoff_s": 1.0, "multiplier": 2.0, "max_backoff_s": 30.0, "jitter": 0.2}


class RecordStepResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an attempt came to. `jitter` is a uniform draw from [-1, 1] the engine made: the retry delay
    varies by up to the policy's `jitter` fraction either way, so retries of many runs do not align."""

    run_id: uuid.UUID
    step_id: str
    attempt: int
    result: Effect
    at: datetime
    jitter: float = 0.0


def retry_policy(node: dict[str, Any]) -> dict[str, float]:
    """DEFAULT_RETRY with the node's `retry` numbers over it (other values are ignored)."""
    policy = dict(DEFAULT_RETRY)
    if isinstance(node.get("retry"), dict):
        policy.update({k: v for k, v in node["retry"].items()
                       if k in DEFAULT_RETRY and isinstance(v, int | float) and not isinstance(v, bool)})
    return policy


def backoff_s(policy: dict[str, float], attempt: int, jitter: float) -> float:
    """Exponential backoff: base * multiplier^(attempt-1), capped at max_backoff_s, then scaled by
    1 + policy jitter * `jitter` (the draw, clamped to [-1, 1]); never negative."""
    base = min(policy["max_backoff_s"], policy["backoff_s"] * policy["multiplier"] ** (attempt - 1))
    draw = max(-1.0, min(1.0, jitter))
    return max(0.0, base * (1 + policy["jitter"] * draw))


def record(c: RecordStepResult, run: Run) -> list[Event]:
    """The events an attempt's result is recorded as."""
    node = graph_of(run.definition).by_id.get(c.step_id)
    if node is None:
        raise DomainError(400, f"step {c.step_id!r} is not in the run's definition", "step_id")
    rid, sid, attempt, at = c.run_id, c.step_id, c.attempt, c.at
    match c.result:
        case Completed(output=output, variables=variables):
            try:  # what a step brings back (an HTTP body, an LLM answer) must be storable, or the append fails
                refuse_nul(output, "output")
                refuse_nul(variables, "variables")
            except DomainError as exc:
                return [StepFailed(run_id=rid, step_id=sid, attempt=attempt, error=exc.message, at=at)]
            return [StepCompleted(run_id=rid, step_id=sid, attempt=attempt, output=output, variables=variables, at=at)]
        case Failed(error=error, retryable=retryable):
            error = error.replace("\x00", "\\u0000")  # a message quoting a response may carry one
            policy = retry_policy(node)
            if retryable and attempt < policy["max_attempts"]:
                retry_at = at + timedelta(seconds=backoff_s(policy, attempt, c.jitter))
                return [StepRetryScheduled(run_id=rid, step_id=sid, attempt=attempt, error=error, retry_at=retry_at,
                                           at=at)]
            return [StepFailed(run_id=rid, step_id=sid, attempt=attempt, error=error, at=at)]
        case WaitUntil(until=until):
            # The append that records it also sets the durable timer whose EndDelay ends the wait
            # (services/executor/timers.py), so no process sleeps for it.
            return [StepWaiting(run_id=rid, step_id=sid, attempt=attempt, until=until, at=at)]
        case AwaitApproval(approval=approval, policy=policy):
            # Links and decisions bind to the plan being run: a decision on another plan is refused.
            bound = msgspec.structs.replace(policy, plan_hash=plan_hash(run.definition))
            return [StepAwaitingApproval(run_id=rid, step_id=sid, approval=approval, policy=bound, at=at)]
    raise DomainError(400, f"unknown step result {type(c.result).__name__}")


def wait_ended(run: Run, run_id: uuid.UUID, step_id: str, at: datetime) -> StepCompleted:
    """A wait is over: the same event whether its timer (EndDelay) or the driver (EndWait) ends it."""
    step = run.steps[step_id]
    return StepCompleted(run_id=run_id, step_id=step_id, attempt=step.attempt,
                         output={"waited_until": step.wake_at.isoformat()}, at=at)
