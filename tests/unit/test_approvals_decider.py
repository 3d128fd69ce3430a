"""The approval rules, pure: given run events, when an approval command, then events (or a refusal)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from libs.domain.definition import plan_hash
from libs.events.errors import DomainError
from libs.events.schemas.plan import ApprovePlan, PlanApproved, PlanGenerated, PlanRevised
from libs.events.schemas.run import (
    ApprovalDecisionRecorded,
    ApprovalEscalated,
    ApprovalReminderDue,
    DecideApproval,
    ExpireApproval,
    RemindApproval,
    RunCompleted,
    RunCreated,
    RunStarted,
    StepAwaitingApproval,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from libs.events.schemas.workflow import WorkflowCreated
from services.executor import approvals, domain
from services.executor.engine import step_context
from services.executor.integrations.approval import approval as approval_step
from services.executor.steps import StepCall, StepDeps
from services.executor.timers import timers_for
from services.planner import domain as planner

RUN, WF = uuid.uuid4(), uuid.uuid4()
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def definition(**config) -> dict:
    return {"nodes": [
        {"id": "rows", "type": "transform", "config": {"template": {"list": [{"name": "Ann", "score": 3}]}}},
        {"id": "review", "type": "approval", "input_from": "rows", "config": config},
        {"id": "after", "type": "echo", "input_from": "review"},
    ]}


def paused_run(**config) -> tuple[domain.Run, StepAwaitingApproval]:
    """A run whose approval step just paused, built the way the engine builds it."""
    d = definition(**config)
    events = [RunCreated(run_id=RUN, workflow_id=WF, workflow_version=1, definition=d, inputs={}, created_by="u",
                         at=T0),
              RunStarted(run_id=RUN, at=T0),
              StepStarted(run_id=RUN, step_id="rows", at=T0),
              StepCompleted(run_id=RUN, step_id="rows", output={"list": [{"name": "Ann", "score": 3}]}, at=T0),
              StepStarted(run_id=RUN, step_id="review", at=at(1))]
    run = fold(events)
    node = d["nodes"][1]
    settings = type("Settings", (), {"approval_email": "fallback@example.com"})()
    call = StepCall(tenant_id="t", run_id=RUN, step_id="review", attempt=1, at=at(1))
    effect = asyncio.run(approval_step(node, step_context(run, node), call, StepDeps(settings=settings)))
    [pause] = domain.decide(domain.RecordStepResult(run_id=RUN, step_id="review", attempt=1, result=effect, at=at(1)),
                            run)
    return domain.evolve(run, pause), pause


def fold(events) -> domain.Run:
    run = domain.initial
    for event in events:
        run = domain.evolve(run, event)
    return run


def decide(run: domain.Run, command) -> list:
    return domain.decide(command, run)


def link(who: str, decision: str = "approve", token: uuid.UUID | None = None, **kw) -> DecideApproval:
    return DecideApproval(run_id=RUN, step_id="review", decision=decision, decided_by=who,
                          token_id=token or uuid.uuid4(), at=at(5), **kw)


def test_a_pause_shows_rows_metadata_and_fields_and_fixes_its_policy():
    _, pause = paused_run(title="Check ${rows.list.0.name}", rows="${input.list}", approvers=["a@x.io", "b@x.io"],
                          required_approvals=2, timeout_s=60, remind_before_s=[30], require_comment=True)
    assert pause.approval == {
        "rows": [{"name": "Ann", "score": 3}],
        "metadata": {"totalRows": 1, "title": "Check Ann", "description": "", "allowBulkApproval": True,
                     "requireComment": True},
        "displayFields": ["name", "score"],
    }
    policy = pause.policy
    assert (policy.approvers, policy.required, policy.deadline, policy.remind_at, policy.require_comment) == (
        ["a@x.io", "b@x.io"], 2, at(61), [at(31)], True)
    assert policy.plan_hash == plan_hash(definition(title="Check ${rows.list.0.name}", rows="${input.list}",
                                                    approvers=["a@x.io", "b@x.io"], required_approvals=2,
                                                    timeout_s=60, remind_before_s=[30], require_comment=True))


@pytest.mark.parametrize("config, field", [
    ({"required_approvals": 2}, "required_approvals"),
    ({"on_timeout": "explode", "timeout_s": 5}, "on_timeout"),
    ({"on_timeout": "escalate", "timeout_s": 5}, "escalate_to"),
    ({"timeout_s": 10, "remind_before_s": [20]}, "remind_before_s"),
    ({"approvers": ["not-an-address"]}, "approvers"),
    ({"rows": "${nowhere.at.all}"}, "nowhere"),
])
def test_a_bad_policy_fails_the_step_naming_the_field(config, field):
    _, pause = paused_run(**config)
    assert isinstance(pause, StepFailed) and field in pause.error


def test_without_approvers_the_fallback_approver_decides():
    run, pause = paused_run()
    assert pause.policy.approvers == ["fallback@example.com"] and run.status == "awaiting_approval"
    events = decide(run, link("FALLBACK@example.com"))
    assert [type(e) for e in events] == [ApprovalDecisionRecorded, StepCompleted]
    # Without config.rows the input is what is reviewed: one object is one row.
    assert events[1].output == {"approved": True, "approvedBy": ["fallback@example.com"],
                                "rows": [{"list": [{"name": "Ann", "score": 3}]}]}
    assert fold_on(run, events).status == "running"


def test_n_of_m_approvals_resolve_only_at_n():
    run, _ = paused_run(approvers=["a@x.io", "b@x.io", "c@x.io"], required_approvals=2)
    first = decide(run, link("a@x.io"))
    assert [type(e) for e in first] == [ApprovalDecisionRecorded]
    run = fold_on(run, first)
    with pytest.raises(DomainError, match="already decided") as again:
        decide(run, link("a@x.io"))
    assert again.value.status == 409
    second = decide(run, link("b@x.io"))
    assert [type(e) for e in second] == [ApprovalDecisionRecorded, StepCompleted]
    assert second[1].output["approvedBy"] == ["a@x.io", "b@x.io"]


def test_a_rejection_ends_the_step_once_n_cannot_be_reached():
    run, _ = paused_run(approvers=["a@x.io", "b@x.io", "c@x.io"], required_approvals=2)
    first = decide(run, link("a@x.io", "reject", comment="no"))
    assert [type(e) for e in first] == [ApprovalDecisionRecorded]  # b and c can still make 2
    run = fold_on(run, first)
    second = decide(run, link("b@x.io", "reject", comment="wrong numbers"))
    assert [type(e) for e in second] == [ApprovalDecisionRecorded, StepFailed]
    assert second[1].error == "Rejected by b@x.io: wrong numbers"
    assert fold_on(run, second).status == "running"  # no longer paused; the driver fails the run next


def test_refusals_name_what_is_wrong():
    run, _ = paused_run(approvers=["a@x.io"], require_comment=True)
    token = uuid.uuid4()
    cases = [
        (link("a@x.io", "reject"), 400, "comment is required to reject"),
        (link("a@x.io"), 400, "comment is required to approve"),  # requireComment: approve as well
        (link("mallory@x.io"), 403, "not an approver"),
        (link("a@x.io", plan_hash="sha256:other"), 400, "different plan"),
        (link("a@x.io", "maybe"), 400, "approve or reject"),
        (DecideApproval(run_id=RUN, step_id="rows", decision="approve", decided_by="a@x.io", at=at(5)), 409,
         "not awaiting"),
    ]
    for command, status, words in cases:
        with pytest.raises(DomainError, match=words) as refused:
            decide(run, command)
        assert refused.value.status == status
    done = fold_on(run, decide(run, link("a@x.io", token=token, comment="Checked")))
    with pytest.raises(DomainError, match="already used") as reused:
        decide(done, link("a@x.io", token=token))
    assert reused.value.status == 400
    finished = domain.evolve(done, RunCompleted(run_id=RUN, outputs={}, at=at(6)))
    with pytest.raises(DomainError, match="already completed"):
        decide(finished, link("a@x.io"))
    with pytest.raises(DomainError, match="already used"):  # reuse is named even after the run ended
        decide(finished, link("a@x.io", token=token))


def test_a_final_decision_needs_no_quorum_and_no_listed_approver():
    run, _ = paused_run(approvers=["a@x.io", "b@x.io"], required_approvals=2)
    events = decide(run, DecideApproval(run_id=RUN, decision="reject", decided_by="api_key:k", comment="bad",
                                        via="api", final=True, at=at(3)))
    assert [type(e) for e in events] == [ApprovalDecisionRecorded, StepFailed]
    assert events[0].step_id == "review" and events[0].via == "api"


@pytest.mark.parametrize("on_timeout, resolution", [("reject", StepFailed), ("approve", StepCompleted)])
def test_the_deadline_rejects_or_approves(on_timeout, resolution):
    run, pause = paused_run(timeout_s=60, on_timeout=on_timeout)
    events = decide(run, ExpireApproval(run_id=RUN, step_id="review", deadline=pause.policy.deadline, at=at(61)))
    assert [type(e) for e in events] == [ApprovalDecisionRecorded, resolution]
    assert events[0].decided_by == "system:timeout" and events[0].via == "timeout"


def test_escalation_asks_a_second_approver_with_a_new_deadline_then_rejects():
    run, pause = paused_run(approvers=["a@x.io"], timeout_s=60, on_timeout="escalate", escalate_to="boss@x.io",
                            escalation_timeout_s=30)
    expire = ExpireApproval(run_id=RUN, step_id="review", deadline=pause.policy.deadline, at=at(61))
    (escalated,) = decide(run, expire)
    assert escalated == ApprovalEscalated(run_id=RUN, step_id="review", approver="boss@x.io", deadline=at(91),
                                          at=at(61))
    run = fold_on(run, [escalated])
    assert decide(run, expire) == []  # the old deadline's timer is stale now
    assert [type(e) for e in decide(run, link("boss@x.io"))] == [ApprovalDecisionRecorded, StepCompleted]
    late = decide(run, ExpireApproval(run_id=RUN, step_id="review", deadline=at(91), at=at(91)))
    assert [type(e) for e in late] == [ApprovalDecisionRecorded, StepFailed]


def test_reminders_go_to_those_who_have_not_decided_and_stop_after_the_decision():
    run, pause = paused_run(approvers=["a@x.io", "b@x.io"], required_approvals=2, timeout_s=60, remind_before_s=10)
    run = fold_on(run, decide(run, link("a@x.io")))
    remind = RemindApproval(run_id=RUN, step_id="review", deadline=pause.policy.deadline, at=at(51))
    assert decide(run, remind) == [ApprovalReminderDue(run_id=RUN, step_id="review", approvers=["b@x.io"],
                                                       deadline=at(61), at=at(51))]
    run = fold_on(run, decide(run, link("b@x.io")))
    assert decide(run, remind) == []
    assert decide(run, ExpireApproval(run_id=RUN, step_id="review", deadline=at(61), at=at(61))) == []


def test_a_pause_sets_its_deadline_and_reminder_timers_with_stable_ids():
    _, pause = paused_run(timeout_s=60, remind_before_s=[30, 10])
    timers = timers_for("acme", None, [pause])
    assert [(t.due_at, type(t.envelope.command).__name__) for t in timers] == [
        (at(61), "ExpireApproval"), (at(31), "RemindApproval"), (at(51), "RemindApproval")]
    assert [t.timer_id for t in timers] == [t.timer_id for t in timers_for("acme", None, [pause])]
    assert all(t.service == "executor" and t.envelope.tenant_id == "acme" for t in timers)
    _, untimed = paused_run()
    assert timers_for("acme", None, [untimed]) == []


def fold_on(run: domain.Run, events) -> domain.Run:
    for event in events:
        run = domain.evolve(run, event)
    return run


# ---- plan approval (the planner's decider) -------------------------------------------------------------


def draft(*extra) -> planner.Workflow:
    events = [WorkflowCreated(workflow_id=WF, name="W", definition={"nodes": []}, status="draft", created_by="u",
                              at=T0),
              PlanGenerated(plan_id=WF, workflow_id=WF, goal="g", name="W", confidence=1.0, definition={"nodes": []},
                            plan_hash="h1", source="offline-planner", model="m", prompt_version="1", at=T0), *extra]
    state = planner.initial
    for event in events:
        state = planner.evolve(state, event)
    return state


def approve(plan_hash_: str = "h1", token: uuid.UUID | None = None, version: int = 1) -> ApprovePlan:
    return ApprovePlan(workflow_id=WF, plan_version=version, plan_hash=plan_hash_, approved_by="ann@x.io",
                       token_id=token or uuid.uuid4(), client_ip="127.0.0.1", user_agent="Mozilla", at=at(1))


def test_approving_the_current_plan_activates_the_draft():
    (event,) = planner.decide(approve(), draft())
    assert isinstance(event, PlanApproved) and event.client_ip == "127.0.0.1" and event.plan_hash == "h1"
    assert planner.evolve(draft(), event).status == "active"


def test_a_link_for_an_older_plan_version_cannot_activate_a_newer_one():
    revised = draft(PlanRevised(workflow_id=WF, plan_version=2, plan_hash="h2", definition={"nodes": []},
                                revised_by="u", at=T0))
    with pytest.raises(DomainError, match="changed since") as refused:
        planner.decide(approve("h1"), revised)
    assert refused.value.status == 400
    assert planner.decide(approve("h2", version=2), revised)


def test_a_plan_link_works_once_and_an_active_workflow_is_not_approved_again():
    token = uuid.uuid4()
    (event,) = planner.decide(approve(token=token), draft())
    active = planner.evolve(draft(), event)
    with pytest.raises(DomainError, match="already used"):
        planner.decide(approve(token=token), active)
    with pytest.raises(DomainError, match="already active") as again:
        planner.decide(approve(), active)
    assert again.value.status == 409
