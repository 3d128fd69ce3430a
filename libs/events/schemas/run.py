"""Workflow runs: owned by the executor."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from libs.events.schemas.base import Command, Event


class RunCreated(Event, frozen=True, kw_only=True):
    """A run was accepted. It carries the definition it will run, so replays never depend on later edits."""

    run_id: UUID
    workflow_id: UUID
    workflow_version: int
    definition: dict[str, Any]
    inputs: dict[str, Any]
    created_by: str
    at: datetime
    description: str = ""  # the caller's note for this run (public API "description")
    variables: dict[str, Any] = {}  # the execution context's starting variables (contract C's execute body)


class RunStarted(Event, frozen=True, kw_only=True):
    run_id: UUID
    at: datetime


class StepStarted(Event, frozen=True, kw_only=True):
    run_id: UUID
    step_id: str
    attempt: int = 1
    at: datetime


class StepCompleted(Event, frozen=True, kw_only=True):
    run_id: UUID
    step_id: str
    attempt: int = 1
    output: Any = None
    at: datetime
    variables: dict[str, Any] = {}  # merged into the run's variables (e.g. an agent endpoint's response)


class StepFailed(Event, frozen=True, kw_only=True):
    run_id: UUID
    step_id: str
    attempt: int = 1
    error: str
    at: datetime


class StepSkipped(Event, frozen=True, kw_only=True):
    """Not run: a condition upstream was false (or its input was skipped)."""

    run_id: UUID
    step_id: str
    reason: str
    at: datetime


class StepRetryScheduled(Event, frozen=True, kw_only=True):
    """An attempt failed with a retryable error; the next attempt starts at retry_at."""

    run_id: UUID
    step_id: str
    attempt: int  # the attempt that failed
    error: str
    retry_at: datetime
    at: datetime


class StepWaiting(Event, frozen=True, kw_only=True):
    """A delay step waits until `until` (a durable timer: re-armed from the log after a restart)."""

    run_id: UUID
    step_id: str
    attempt: int = 1
    until: datetime
    at: datetime


class ApprovalPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a paused approval step is decided, fixed when it paused (docs/decisions/0009): N of the M
    approvers (`required` of `approvers`), a comment required to reject, what its deadline does (reject,
    approve, or escalate to a second approver), reminder times, and the run's plan hash tokens bind to."""

    approvers: list[str] = []
    required: int = 1
    require_comment: bool = False
    deadline: datetime | None = None
    on_timeout: str = "reject"  # reject | approve | escalate
    escalate_to: str | None = None
    escalation_timeout_s: float | None = None
    remind_at: list[datetime] = []
    plan_hash: str = ""


class StepAwaitingApproval(Event, frozen=True, kw_only=True):
    """An approval step paused the run. `approval` is what the approver reviews (rows, metadata,
    displayFields as the public API shows it); `policy` how it is decided."""

    run_id: UUID
    step_id: str
    approval: dict[str, Any] = {}
    at: datetime
    policy: ApprovalPolicy | None = None


class ApprovalDecisionRecorded(Event, frozen=True, kw_only=True):
    """One decision on a paused step: who, when, why, through what (email link token, API key, timeout)
    and from where. The step resolves (StepCompleted / StepFailed in the same append) once the policy says so."""

    run_id: UUID
    step_id: str
    decision: str  # approve | reject
    decided_by: str
    comment: str = ""
    token_id: UUID | None = None
    client_ip: str = ""
    user_agent: str = ""
    via: str = "email"  # email | confirm-page | api | timeout
    at: datetime


class ApprovalEscalated(Event, frozen=True, kw_only=True):
    """The deadline passed undecided and the policy escalates: a second approver is asked, with a new deadline."""

    run_id: UUID
    step_id: str
    approver: str
    deadline: datetime
    at: datetime


class ApprovalReminderDue(Event, frozen=True, kw_only=True):
    """A reminder time before the deadline came and these approvers had not decided: the notifier emails them."""

    run_id: UUID
    step_id: str
    approvers: list[str]
    deadline: datetime | None = None
    at: datetime


class RunCancelRequested(Event, frozen=True, kw_only=True):
    """Cancel: steps already running finish, nothing new starts, then RunCancelled."""

    run_id: UUID
    reason: str = ""
    requested_by: str = ""
    at: datetime


class RunCancelled(Event, frozen=True, kw_only=True):
    run_id: UUID
    reason: str = ""
    at: datetime


class RunTerminated(Event, frozen=True, kw_only=True):
    """Terminate: stop now; a step still running is abandoned and its result, if any, is ignored."""

    run_id: UUID
    reason: str = ""
    requested_by: str = ""
    at: datetime


class RunCompleted(Event, frozen=True, kw_only=True):
    run_id: UUID
    outputs: dict[str, Any]
    at: datetime


class RunFailed(Event, frozen=True, kw_only=True):
    run_id: UUID
    error: str
    at: datetime


RUN_EVENTS: tuple[type[Event], ...] = (
    RunCreated,
    RunStarted,
    StepStarted,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepRetryScheduled,
    StepWaiting,
    StepAwaitingApproval,
    RunCancelRequested,
    RunCancelled,
    RunTerminated,
    RunCompleted,
    RunFailed,
    ApprovalDecisionRecorded,
    ApprovalEscalated,
    ApprovalReminderDue,
)
RunEvent = (
    RunCreated | RunStarted | StepStarted | StepCompleted | StepFailed | StepSkipped | StepRetryScheduled
    | StepWaiting | StepAwaitingApproval | RunCancelRequested | RunCancelled | RunTerminated | RunCompleted
    | RunFailed | ApprovalDecisionRecorded | ApprovalEscalated | ApprovalReminderDue
)


class StartRun(Command, frozen=True, kw_only=True):
    run_id: UUID
    workflow_id: UUID
    workflow_version: int
    definition: dict[str, Any]
    inputs: dict[str, Any]
    created_by: str
    at: datetime
    description: str = ""
    variables: dict[str, Any] = {}

    def created(self) -> RunCreated:
        """The run this command creates: the event it is recorded as when accepted."""
        return RunCreated(run_id=self.run_id, workflow_id=self.workflow_id, workflow_version=self.workflow_version,
                          definition=self.definition, inputs=self.inputs, created_by=self.created_by, at=self.at,
                          description=self.description, variables=self.variables)


class CancelRun(Command, frozen=True, kw_only=True):
    run_id: UUID
    reason: str = "Cancelled by user"
    requested_by: str
    at: datetime


class TerminateRun(Command, frozen=True, kw_only=True):
    run_id: UUID
    reason: str = "Terminated by user"
    requested_by: str
    at: datetime


class DecideApproval(Command, frozen=True, kw_only=True):
    """Approve or reject a paused step (step_id None: the run's first paused step). `final` decisions (the
    public API's) resolve the step at once; link decisions count towards the policy's N of M."""

    run_id: UUID
    step_id: str | None = None
    decision: str  # approve | reject
    decided_by: str
    comment: str = ""
    token_id: UUID | None = None
    plan_hash: str | None = None  # a link's binding; checked against the run's
    client_ip: str = ""
    user_agent: str = ""
    via: str = "email"
    final: bool = False
    at: datetime


class ExpireApproval(Command, frozen=True, kw_only=True):
    """A durable timer: the step's deadline passed. Stale (decided, or the deadline moved) = no-op."""

    run_id: UUID
    step_id: str
    deadline: datetime
    at: datetime


class RemindApproval(Command, frozen=True, kw_only=True):
    """A durable timer: remind the approvers who have not decided yet."""

    run_id: UUID
    step_id: str
    deadline: datetime
    at: datetime


class EndDelay(Command, frozen=True, kw_only=True):
    """A durable timer (set with StepWaiting): the delay step's wait is over. Stale (the wait already ended,
    the run finished) = no-op."""

    run_id: UUID
    step_id: str
    attempt: int = 1
    at: datetime


RunCommand = StartRun | CancelRun | TerminateRun | DecideApproval | ExpireApproval | RemindApproval | EndDelay
