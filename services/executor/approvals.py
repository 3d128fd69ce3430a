"""Approval steps, pure: what a pause shows and how it is decided (N of M approvers, a comment when required,
deadline -> reject | approve | escalate, reminders). No I/O, clock or uuid4: `now` and ids come in.

The `approval` step (services/executor/integrations/approval.py) returns `pause(...)`, which the decider
records as StepAwaitingApproval; the decider delegates the approval commands to `decide`, after checking
that the run exists and is not finished.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from collections.abc import Sequence
from typing import Any

import msgspec

from libs.events.errors import DomainError
from libs.events.schemas import CommandEnvelope, Event
from libs.events.schemas.run import (
    ApprovalDecisionRecorded,
    ApprovalEscalated,
    ApprovalPolicy,
    ApprovalReminderDue,
    DecideApproval,
    ExpireApproval,
    RemindApproval,
    StepAwaitingApproval,
    StepCompleted,
    StepFailed,
)
from libs.events.timers import CancelTimers, Timer, timer_id_for
from services.executor.effects import AwaitApproval, Failed
from services.executor.interpolation import MissingPath, interpolate

MAX_ROWS = 100  # rows kept for review (the public API truncates CSV input to 100 rows too); totalRows is exact
ON_TIMEOUT = ("reject", "approve", "escalate")
DECISIONS = ("approve", "reject")
TIMEOUT_ACTOR = "system:timeout"


class ApprovalState(msgspec.Struct, frozen=True, kw_only=True):
    policy: ApprovalPolicy
    rows: list[Any] = []
    approved_by: tuple[str, ...] = ()
    rejected_by: tuple[str, ...] = ()
    used_tokens: frozenset = frozenset()
    escalated: bool = False


# ---- pausing ------------------------------------------------------------------------------------------


def _rows(value: Any) -> list[Any]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, dict) else {"value": item} for item in items]


def _display_fields(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _addresses(value: Any, field: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(a, str) and "@" in a for a in items):
        raise ValueError(f"config.{field} must be an email address or a list of them")
    return list(dict.fromkeys(a.strip() for a in items if a.strip()))


def _seconds(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"config.{field} must be a positive number of seconds")
    return float(value)


def _policy(config: dict[str, Any], now: datetime, fallback_approver: str) -> ApprovalPolicy:
    """The pause's policy from the step config (interpolated); ValueError naming the field otherwise."""
    approvers = _addresses(config["approvers"], "approvers") if config.get("approvers") else [fallback_approver]
    required = config.get("required_approvals", 1)
    if isinstance(required, bool) or not isinstance(required, int) or not 1 <= required <= len(approvers):
        raise ValueError(f"config.required_approvals must be an integer from 1 to {len(approvers)} (the approvers)")
    on_timeout = config.get("on_timeout", "reject")
    if on_timeout not in ON_TIMEOUT:
        raise ValueError(f"config.on_timeout must be one of: {', '.join(ON_TIMEOUT)}")
    escalate_to = config.get("escalate_to")
    if on_timeout == "escalate":
        if not isinstance(escalate_to, str) or "@" not in escalate_to:
            raise ValueError("config.escalate_to must be an email address when on_timeout is escalate")
    timeout = _seconds(config.get("timeout_s"), "timeout_s")
    deadline = now + timedelta(seconds=timeout) if timeout else None
    before = config.get("remind_before_s") or []
    before = before if isinstance(before, list) else [before]
    reminders = []
    for value in before:
        seconds = _seconds(value, "remind_before_s")
        if deadline is None or seconds >= timeout:
            raise ValueError("config.remind_before_s must be shorter than config.timeout_s (reminders come "
                             "before the deadline)")
        reminders.append(deadline - timedelta(seconds=seconds))
    return ApprovalPolicy(
        approvers=approvers, required=required, require_comment=bool(config.get("require_comment", False)),
        deadline=deadline, on_timeout=on_timeout, escalate_to=escalate_to if on_timeout == "escalate" else None,
        escalation_timeout_s=_seconds(config.get("escalation_timeout_s"), "escalation_timeout_s") or timeout,
        remind_at=sorted(reminders),
    )


def pause(node: dict[str, Any], context: dict[str, Any], now: datetime, fallback_approver: str
          ) -> AwaitApproval | Failed:
    """What an approval step comes to when it starts: a pause with what to review and how it is decided
    (the decider binds it to the run's plan hash), or a failure naming the config field that is wrong."""
    raw = node.get("config") or {}
    try:
        config = interpolate(raw, context)
        rows = _rows(config["rows"] if "rows" in config else context.get("input"))
        fields = config.get("display_fields") or config.get("displayFields") or _display_fields(rows)
        approval = {
            "rows": rows[:MAX_ROWS],
            "metadata": {
                "totalRows": len(rows),
                "title": str(config.get("title") or node.get("description") or "Approval required"),
                "description": str(config.get("description") or ""),
                "allowBulkApproval": bool(config.get("allow_bulk_approval", True)),
                "requireComment": bool(config.get("require_comment", False)),
            },
            "displayFields": [str(f) for f in fields] if isinstance(fields, list) else [],
        }
        policy = _policy(config, now, fallback_approver)
    except (MissingPath, ValueError) as exc:
        return Failed(error=f"approval: {exc}")
    return AwaitApproval(approval=approval, policy=policy)


# ---- folding ------------------------------------------------------------------------------------------


def evolve(approvals: dict[str, ApprovalState], event: Event) -> dict[str, ApprovalState]:
    """The approvals of a run after one event (the run decider folds the rest)."""
    match event:
        case StepAwaitingApproval(step_id=sid, approval=approval, policy=policy):
            state = ApprovalState(policy=policy or ApprovalPolicy(), rows=approval.get("rows") or [])
            return {**approvals, sid: state}
        case ApprovalDecisionRecorded(step_id=sid) as e if sid in approvals:
            state = approvals[sid]
            who = e.decided_by.lower()
            tokens = state.used_tokens | {e.token_id} if e.token_id else state.used_tokens
            if e.decision == "approve":
                state = msgspec.structs.replace(state, approved_by=(*state.approved_by, who), used_tokens=tokens)
            else:
                state = msgspec.structs.replace(state, rejected_by=(*state.rejected_by, who), used_tokens=tokens)
            return {**approvals, sid: state}
        case ApprovalEscalated(step_id=sid, approver=approver, deadline=deadline) if sid in approvals:
            state = approvals[sid]
            policy = msgspec.structs.replace(state.policy, approvers=[*state.policy.approvers, approver],
                                             deadline=deadline, remind_at=[])
            return {**approvals, sid: msgspec.structs.replace(state, policy=policy, escalated=True)}
    return approvals


# ---- deciding -----------------------------------------------------------------------------------------


def _awaiting(run: Any) -> list[str]:
    return [sid for sid in run.approvals if run.steps.get(sid) and run.steps[sid].status == "awaiting_approval"]


def _resolve(run: Any, run_id: Any, sid: str, approved: bool, reason: str, decisions: tuple[str, ...],
             at: datetime) -> Event:
    attempt = run.steps[sid].attempt
    if approved:
        output = {"approved": True, "approvedBy": list(decisions), "rows": run.approvals[sid].rows}
        return StepCompleted(run_id=run_id, step_id=sid, attempt=attempt, output=output, at=at)
    return StepFailed(run_id=run_id, step_id=sid, attempt=attempt, error=reason, at=at)


def _decide_link(c: DecideApproval, run: Any, finished: bool) -> list[Event]:
    # Reuse first: a link clicked again after its decision resolved the step says so, not "not awaiting".
    if c.token_id is not None and any(c.token_id in s.used_tokens for s in run.approvals.values()):
        raise DomainError(400, "This approval link was already used (reused token)", "token")
    if finished:
        raise DomainError(409, f"Execution is already {run.status}")
    waiting = _awaiting(run)
    if not waiting:
        raise DomainError(409, f"Execution is not awaiting approval (it is {run.status})")
    sid = c.step_id or waiting[0]
    if sid not in waiting:
        raise DomainError(409, f"Step {sid} is not awaiting approval", "step_id")
    state = run.approvals[sid]
    if c.plan_hash is not None and c.plan_hash != state.policy.plan_hash:
        raise DomainError(400, "This approval link was issued for a different plan of this run", "token")
    if c.decision not in DECISIONS:
        raise DomainError(400, "action must be approve or reject", "action")
    who = c.decided_by.lower()
    approvers = [a.lower() for a in state.policy.approvers]
    if not c.final:
        if who not in approvers:
            raise DomainError(403, f"{c.decided_by} is not an approver of step {sid}")
        if who in state.approved_by or who in state.rejected_by:
            raise DomainError(409, f"{c.decided_by} already decided step {sid}")
    if state.policy.require_comment and not c.comment.strip():  # as its name says: approve and reject alike
        raise DomainError(400, f"A comment is required to {c.decision} this step", "comment")
    events: list[Event] = [ApprovalDecisionRecorded(
        run_id=c.run_id, step_id=sid, decision=c.decision, decided_by=c.decided_by, comment=c.comment,
        token_id=c.token_id, client_ip=c.client_ip, user_agent=c.user_agent, via=c.via, at=c.at)]
    approved_by = (*state.approved_by, who) if c.decision == "approve" else state.approved_by
    rejected_by = (*state.rejected_by, who) if c.decision == "reject" else state.rejected_by
    note = f": {c.comment.strip()}" if c.comment.strip() else ""
    if c.decision == "approve" and (c.final or len(set(approved_by)) >= state.policy.required):
        events.append(_resolve(run, c.run_id, sid, True, "", approved_by, c.at))
    # N of M: a rejection ends the step once N approvals can no longer be reached.
    elif c.decision == "reject" and (c.final or len(approvers) - len(set(rejected_by)) < state.policy.required):
        events.append(_resolve(run, c.run_id, sid, False, f"Rejected by {c.decided_by}{note}", rejected_by, c.at))
    return events


def _expire(c: ExpireApproval, run: Any) -> list[Event]:
    state = run.approvals.get(c.step_id)
    if c.step_id not in _awaiting(run) or state is None or state.policy.deadline != c.deadline:
        return []  # decided meanwhile, or escalation moved the deadline: a stale timer does nothing
    policy = state.policy
    if policy.on_timeout == "escalate" and not state.escalated and policy.escalate_to:
        deadline = c.at + timedelta(seconds=policy.escalation_timeout_s or 0)
        return [ApprovalEscalated(run_id=c.run_id, step_id=c.step_id, approver=policy.escalate_to,
                                  deadline=deadline, at=c.at)]
    approve = policy.on_timeout == "approve"
    decision = ApprovalDecisionRecorded(run_id=c.run_id, step_id=c.step_id, decision="approve" if approve else "reject",
                                        decided_by=TIMEOUT_ACTOR, comment="The approval deadline passed",
                                        via="timeout", at=c.at)
    return [decision, _resolve(run, c.run_id, c.step_id, approve, "Approval timed out: no decision before the deadline",
                               (TIMEOUT_ACTOR,), c.at)]


def _remind(c: RemindApproval, run: Any) -> list[Event]:
    state = run.approvals.get(c.step_id)
    if c.step_id not in _awaiting(run) or state is None or state.policy.deadline != c.deadline:
        return []
    decided = {*state.approved_by, *state.rejected_by}
    pending = [a for a in state.policy.approvers if a.lower() not in decided]
    if not pending:
        return []
    return [ApprovalReminderDue(run_id=c.run_id, step_id=c.step_id, approvers=pending, deadline=c.deadline, at=c.at)]


def decide(command: DecideApproval | ExpireApproval | RemindApproval, run: Any, *, finished: bool) -> list[Event]:
    """The approval commands on an existing run; timers on a finished run are no-ops."""
    match command:
        case DecideApproval():
            return _decide_link(command, run, finished)
        case ExpireApproval():
            return [] if finished else _expire(command, run)
        case RemindApproval():
            return [] if finished else _remind(command, run)
    raise DomainError(400, f"unknown command {type(command).__name__}")


# ---- durable timers -----------------------------------------------------------------------------------


def _timer(tenant_id: str, correlation_id: str, kind: str, command: ExpireApproval | RemindApproval,
           due: datetime, issued: datetime) -> Timer:
    # The id derives from what the timer is for (run, step, deadline, due time): recording it twice sets it once.
    timer_id = timer_id_for(kind, command.run_id, command.step_id, command.deadline.isoformat(), due.isoformat())
    envelope = CommandEnvelope(command_id=uuid.uuid5(timer_id, "command"), tenant_id=tenant_id, actor="executor",
                               correlation_id=correlation_id, command=command, issued_at=issued)
    return Timer(timer_id=timer_id, due_at=due, service="executor", envelope=envelope)


def timers(tenant_id: str, correlation_id: str | None, event: Event) -> list[Timer]:
    """The timers a pause (its deadline and reminders) or an escalation (its new deadline) calls for.
    Decided steps keep theirs: a timer that fires after the decision finds nothing to do (see `_expire`)."""
    if isinstance(event, StepAwaitingApproval) and event.policy is not None and event.policy.deadline:
        deadline, reminders = event.policy.deadline, event.policy.remind_at
    elif isinstance(event, ApprovalEscalated):
        deadline, reminders = event.deadline, []
    else:
        return []
    correlation = correlation_id or str(event.run_id)
    run_id, step_id = event.run_id, event.step_id
    found = [_timer(tenant_id, correlation, "approval-deadline",
                    ExpireApproval(run_id=run_id, step_id=step_id, deadline=deadline, at=deadline), deadline, event.at)]
    for due in reminders:
        found.append(_timer(tenant_id, correlation, "approval-reminder",
                            RemindApproval(run_id=run_id, step_id=step_id, deadline=deadline, at=due), due, event.at))
    return found


def cancelled_timers(events: Sequence[Event]) -> list[CancelTimers]:
    """A decision that resolves a step (the step's ApprovalDecisionRecorded and its StepCompleted or StepFailed
    in one append, by a person or by the deadline) cancels the step's pending deadline and reminders in the
    same transaction. A decision that leaves the step waiting (N of M) keeps them."""
    decided = {(e.run_id, e.step_id) for e in events if isinstance(e, ApprovalDecisionRecorded)}
    resolved = {(e.run_id, e.step_id) for e in events if isinstance(e, (StepCompleted, StepFailed))}
    return [CancelTimers(service="executor", command_types=("ExpireApproval", "RemindApproval"), run_id=run_id,
                         step_id=step_id) for run_id, step_id in sorted(decided & resolved, key=str)]
