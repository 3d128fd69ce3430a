"""Typed results: msgspec Structs for what the v2 and public APIs answer, named as the contracts spell them.

Unknown fields are ignored, so a newer gateway that adds a field does not break an older client. The v2 types
are checked against the gateway's served OpenAPI document (tests/test_client_openapi.py), so they cannot drift.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _T(msgspec.Struct, kw_only=True):
    pass


# ---- v2 (/api/v2/workflows) ---------------------------------------------------------------------------


class WorkflowSummary(_T, kw_only=True):
    """A workflow as lists show it (no definition)."""

    id: str
    customer_id: str
    name: str
    description: str | None = None
    version: str
    status: str  # active | archived | draft
    created_by: str
    created_at: str
    updated_at: str


class Workflow(WorkflowSummary, kw_only=True):
    """A workflow with its definition ({"nodes": [...], "inputs": {...}, ...})."""

    definition: dict[str, Any]


class Run(_T, kw_only=True):
    """A run. `status` is v2's word: running (also pending and paused for approval), completed, failed,
    terminated. `version` is set only for a run read `at_version`."""

    id: str
    workflow_id: str
    status: str
    inputs: Any = None
    outputs: Any = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    version: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "terminated")


class Schedule(_T, kw_only=True):
    id: str
    workflow_id: str
    cron_expression: str
    timezone: str
    inputs: dict[str, Any]
    missed_execution_policy: str
    overlap_policy: str
    max_queued: int
    pause_after_failures: int
    enabled: bool
    paused_reason: str | None = None
    source: str
    next_run_at: str | None = None
    last_run_at: str | None = None
    last_run_id: str | None = None
    consecutive_failures: int
    created_at: str
    updated_at: str


class Window(_T, kw_only=True):
    after: str | None = None
    through: str | None = None
    first: str | None = None
    last: str | None = None
    count: int
    more: bool


class Occurrence(_T, kw_only=True):
    """What happened to one occurrence of a schedule (fired, skipped and why, missed, ...)."""

    scheduled_for: str | None = None
    status: str
    reason: str | None = None
    detail: str | None = None
    trigger: str | None = None
    policy: str | None = None
    run_id: str | None = None
    run_status: str | None = None
    recorded_at: str | None = None
    updated_at: str | None = None
    window: Window | None = None


class ParsedPlan(_T, kw_only=True):
    """A plan from POST /parse: validated steps, confidence, the outbound steps a reviewer should check."""

    type: str
    name: str
    description: str
    steps: list[dict[str, Any]]
    confidence: float
    source: str
    valid: bool
    schedule: str | None = None
    planHash: str  # noqa: N815 - the contract's names
    estimatedCostUsd: float  # noqa: N815
    outboundSteps: list[str]  # noqa: N815
    planner: dict[str, Any]
    message: str | None = None


class CommandState(_T, kw_only=True):
    """Where a 202's Location points: pending, committed (with the resource it made) or refused."""

    id: str
    state: str  # pending | committed | refused
    status: int | None = None
    error: str | None = None
    resource: str | None = None  # the stream it touched, e.g. "run-<uuid>"


class PendingApproval(_T, kw_only=True):
    """A step of a run that waits for a decision."""

    run_id: str
    workflow_id: str
    workflow_name: str
    step_id: str
    title: str
    description: str
    total_rows: int
    require_comment: bool
    started_at: str | None = None
    paused_at: str | None = None


class Decision(_T, kw_only=True):
    """A recorded decision; `step_status` stays awaiting_approval while the step needs more approvers."""

    run_id: str
    step_id: str
    decision: str
    decided_by: str
    step_status: str | None = None


class Health(_T, kw_only=True):
    status: str
    service: str
    version: str
    timestamp: str


class Page(msgspec.Struct, kw_only=True, frozen=True):
    """One page of a list, with the total the gateway counted (for offset paging)."""

    items: list[Any]
    count: int
    offset: int


# ---- live events ---------------------------------------------------------------------------------------


class RunEvent(_T, kw_only=True):
    """One message of a run's live stream. `id` is the event's global position (what resumption sends as
    Last-Event-ID); `type` is step_start | step_complete | step_error | workflow_complete | run_event;
    `event_type` names the stored event for run_event and workflow_complete (RunCreated, StepSkipped, ...)."""

    id: int
    type: str
    step_id: str | None = None
    event_type: str | None = None
    data: dict[str, Any] = {}


# ---- public API (/api/v1/public) -----------------------------------------------------------------------


class Execution(_T, kw_only=True):
    """The public API's answer to an execute: the run it started (its id is the executionId)."""

    executionId: str  # noqa: N815
    status: str
    startedAt: str | None = None  # noqa: N815
    message: str = ""
    warnings: list[str] = []

    @property
    def id(self) -> str:
        return self.executionId


class ExecutionStatus(_T, kw_only=True):
    id: str
    status: str  # pending | running | completed | failed | cancelled | pending_approval
    startedAt: str | None = None  # noqa: N815
    completedAt: str | None = None  # noqa: N815
    error: str | None = None
    approvalStatus: str | None = None  # noqa: N815


class ExecutionResults(_T, kw_only=True):
    id: str
    status: str
    output: Any = None
    error: str | None = None
    startedAt: str | None = None  # noqa: N815
    completedAt: str | None = None  # noqa: N815


class ApprovalData(_T, kw_only=True):
    id: str
    workflowId: str  # noqa: N815
    status: str
    approvalData: dict[str, Any]  # noqa: N815
    startedAt: str | None = None  # noqa: N815


class ExecutionDecision(_T, kw_only=True):
    executionId: str  # noqa: N815
    status: str
    message: str = ""


class RateLimit(msgspec.Struct, kw_only=True, frozen=True):
    """The last X-RateLimit-* headers the gateway sent (None until a response carried them)."""

    limit: int | None = None
    remaining: int | None = None
    reset: int | None = None
