"""A step's result through the decider, given/when/then: given run events, when RecordStepResult (the
result, the time, the engine's jitter draw), then events. Also the steps that pause (delay, approval)
expressing it as effects, and the actions the driver takes recorded as events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import reduce
from uuid import uuid4

import pytest

from libs.domain.definition import plan_hash
from libs.events.errors import DomainError
from libs.events.schemas.run import (
    ApprovalPolicy,
    DecideApproval,
    EndDelay,
    RunCreated,
    RunStarted,
    StartRun,
    StepAwaitingApproval,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepStarted,
    StepWaiting,
)
from services.executor import domain, integrations  # noqa: F401 - registers delay and approval
from services.executor.effects import AwaitApproval, Completed, Failed, WaitUntil
from services.executor.steps import REGISTRY, StepCall, StepDeps, outcome

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RID = uuid4()
FLAKY = {"id": "f", "type": "integration", "action": "http.request", "config": {"url": "https://example.com"}}
TUNED = {**FLAKY, "id": "t", "retry": {"max_attempts": 4, "backoff_s": 2, "multiplier": 3, "max_backoff_s": 10,
                                       "jitter": 0.5}}
DEFINITION = {"nodes": [FLAKY, TUNED]}


def given(*events) -> domain.Run:
    created = RunCreated(run_id=RID, workflow_id=uuid4(), workflow_version=1, definition=DEFINITION, inputs={},
                         created_by="u", at=AT)
    return reduce(domain.evolve, [created, RunStarted(run_id=RID, at=AT), *events], domain.initial)


def started(sid: str, attempt: int = 1) -> StepStarted:
    return StepStarted(run_id=RID, step_id=sid, attempt=attempt, at=AT)


def when(run: domain.Run, result, sid: str = "f", attempt: int = 1, jitter: float = 0.0) -> list:
    return domain.decide(domain.RecordStepResult(run_id=RID, step_id=sid, attempt=attempt, result=result, at=AT,
                                                 jitter=jitter), run)


def retry_at(seconds: float) -> datetime:
    return AT + timedelta(seconds=seconds)


# --- result -> events ----------------------------------------------------------------------------------


def test_a_completed_attempt_is_step_completed_with_its_variables():
    assert when(given(started("f")), Completed(output={"n": 1}, variables={"agent": {"ok": True}})) == [
        StepCompleted(run_id=RID, step_id="f", attempt=1, output={"n": 1}, variables={"agent": {"ok": True}}, at=AT)]


def test_a_retryable_failure_under_the_default_policy_is_retried_after_one_second():
    assert when(given(started("f")), Failed(error="503", retryable=True)) == [
        StepRetryScheduled(run_id=RID, step_id="f", attempt=1, error="503", retry_at=retry_at(1.0), at=AT)]


@pytest.mark.parametrize("attempt, jitter, seconds", [
    (1, 0.0, 1.0), (2, 0.0, 2.0),  # 1 s, doubled per attempt
    (2, 1.0, 2.4), (2, -1.0, 1.6),  # +-20 % at the extremes of the draw
    (2, 7.0, 2.4),  # a draw outside [-1, 1] is clamped
])
def test_backoff_is_exponential_with_the_jitter_the_command_brings(attempt, jitter, seconds):
    [event] = when(given(started("f", attempt)), Failed(error="x", retryable=True), attempt=attempt, jitter=jitter)
    assert isinstance(event, StepRetryScheduled) and event.retry_at == retry_at(seconds)


def test_the_nodes_retry_policy_sets_attempts_base_multiplier_cap_and_jitter():
    run = given(started("t", 3))
    assert [e.retry_at for e in when(run, Failed(error="x", retryable=True), "t", 1)] == [retry_at(2)]
    assert [e.retry_at for e in when(run, Failed(error="x", retryable=True), "t", 2)] == [retry_at(6)]
    assert [e.retry_at for e in when(run, Failed(error="x", retryable=True), "t", 3, 1.0)] == [retry_at(15)]  # 10 capped, +50 %
    assert [type(e) for e in when(run, Failed(error="x", retryable=True), "t", 4)] == [StepFailed]


def test_the_same_command_gives_the_same_events():
    run, result = given(started("f")), Failed(error="x", retryable=True)
    assert when(run, result, jitter=0.3) == when(run, result, jitter=0.3) != when(run, result, jitter=-0.3)


def test_the_last_attempt_or_a_permanent_error_fails_the_step():
    assert when(given(started("f", 3)), Failed(error="503", retryable=True), attempt=3) == [
        StepFailed(run_id=RID, step_id="f", attempt=3, error="503", at=AT)]
    assert when(given(started("f")), Failed(error="404")) == [
        StepFailed(run_id=RID, step_id="f", attempt=1, error="404", at=AT)]


def test_a_wait_is_step_waiting_and_its_timer_ends_it_once():
    until = retry_at(30)
    [waiting] = when(given(started("f")), WaitUntil(until=until))
    assert waiting == StepWaiting(run_id=RID, step_id="f", attempt=1, until=until, at=AT)
    run = given(started("f"), waiting)
    end = EndDelay(run_id=RID, step_id="f", attempt=1, at=until)
    [done] = domain.decide(end, run)
    assert done == StepCompleted(run_id=RID, step_id="f", attempt=1, output={"waited_until": until.isoformat()},
                                 at=until)
    assert domain.decide(end, domain.evolve(run, done)) == []  # a timer firing again finds nothing to end


def test_an_approval_pause_is_bound_to_the_runs_plan_hash():
    policy = ApprovalPolicy(approvers=["a@x.io"], plan_hash="sha256:forged")
    [pause] = when(given(started("f")), AwaitApproval(approval={"rows": []}, policy=policy))
    assert isinstance(pause, StepAwaitingApproval) and pause.approval == {"rows": []}
    assert pause.policy.approvers == ["a@x.io"] and pause.policy.plan_hash == plan_hash(DEFINITION)


def test_a_result_for_a_step_the_definition_lacks_is_refused():
    with pytest.raises(DomainError) as info:
        when(given(), Completed(output=1), sid="ghost")
    assert (info.value.status, info.value.field) == (400, "step_id")


def test_a_step_functions_return_value_becomes_an_effect():
    assert outcome({"n": 1}) == Completed(output={"n": 1})
    assert outcome(WaitUntil(until=AT)) == WaitUntil(until=AT)


# --- steps that pause say so with an effect ------------------------------------------------------------


def call(attempt: int = 1) -> StepCall:
    return StepCall(tenant_id="t", run_id=RID, step_id="s", attempt=attempt, at=AT)


def test_a_delay_step_waits_from_the_attempts_start():
    node = {"id": "s", "type": "delay", "config": {"seconds": "${inputs.wait}"}}
    effect = asyncio.run(REGISTRY["delay"](node, {"inputs": {"wait": 90}}, call(), StepDeps()))
    assert effect == WaitUntil(until=retry_at(90))


def test_an_approval_step_pauses_with_its_policy_or_fails_naming_the_field():
    node = {"id": "s", "type": "approval", "config": {"approvers": "a@x.io", "timeout_s": 60}}
    effect = asyncio.run(REGISTRY["approval"](node, {"input": [{"k": 1}]}, call(), StepDeps()))
    assert isinstance(effect, AwaitApproval) and effect.policy.deadline == retry_at(60)
    bad = {**node, "config": {"timeout_s": 60, "on_timeout": "escalate"}}
    effect = asyncio.run(REGISTRY["approval"](bad, {}, call(), StepDeps()))
    assert isinstance(effect, Failed) and "escalate_to" in effect.error and not effect.retryable


# --- actions -> events ---------------------------------------------------------------------------------


def test_a_step_left_running_by_a_crash_starts_again_with_the_crashed_attempts_key():
    run = given(started("f", 1))
    events, starts = domain.events_for(run, RID, [domain.Execute(FLAKY, 2)], AT)
    assert events == [started("f", 2)] and starts == [domain.Start(FLAKY, 2, 1)]
    events, starts = domain.events_for(given(), RID, [domain.Execute(FLAKY, 1)], AT)
    assert starts == [domain.Start(FLAKY, 1, None)]


# --- text Postgres cannot store ------------------------------------------------------------------------


def test_an_output_postgres_cannot_store_fails_the_step_naming_where():
    [event] = when(given(started("f")), Completed(output={"status": 200, "body": "a\u0000b"}))
    assert event == StepFailed(run_id=RID, step_id="f", attempt=1, at=AT,
                               error="output.body contains a NUL character (\\u0000), which cannot be stored")
    [event] = when(given(started("f")), Failed(error="answered 500: \u0000", retryable=False))
    assert event.error == "answered 500: \\u0000"


def test_a_command_postgres_cannot_store_is_refused_at_once_naming_the_field():
    start = StartRun(run_id=RID, workflow_id=uuid4(), workflow_version=1, definition=DEFINITION,
                     inputs={"name": "Ada\u0000"}, created_by="u", at=AT)
    with pytest.raises(DomainError) as info:
        domain.decide(start, domain.initial)
    assert (info.value.status, info.value.field) == (400, "inputs.name")
    decision = DecideApproval(run_id=RID, decision="reject", decided_by="a@x.io", comment="no\u0000", at=AT)
    with pytest.raises(DomainError) as info:
        domain.decide(decision, given())
    assert (info.value.status, info.value.field) == (400, "comment")
