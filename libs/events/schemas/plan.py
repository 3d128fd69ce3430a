"""Plans: every planning result is an event, so replays and audits never call the model again."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from libs.events.schemas.base import Command, Event


class PlanGenerated(Event, frozen=True, kw_only=True):
    plan_id: UUID  # the stream key: the workflow's id, or a parse request's id
    workflow_id: UUID | None = None
    plan_version: int = 1
    goal: str
    name: str
    description: str = ""
    confidence: float
    schedule: str | None = None
    definition: dict[str, Any]
    plan_hash: str
    source: str  # "ai-generated" | "offline-planner"
    model: str
    prompt_version: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    model_latency_ms: float = 0.0
    attempts: int = 0
    cached: bool = False
    est_cost_usd: float = 0.0
    outbound_steps: list[str] = []
    at: datetime


class PlanFailed(Event, frozen=True, kw_only=True):
    plan_id: UUID
    workflow_id: UUID | None = None
    goal: str
    reason: str
    defects: list[str] = []
    model: str = ""
    prompt_version: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    at: datetime


class PlanRevised(Event, frozen=True, kw_only=True):
    """A person edited a draft's plan: a new plan version with its own hash."""

    workflow_id: UUID
    plan_version: int
    plan_hash: str
    definition: dict[str, Any]
    revised_by: str
    at: datetime


class PlanApprovalRequested(Event, frozen=True, kw_only=True):
    """Approval binds to this plan version's hash; an approval of an older version cannot activate a newer one."""

    workflow_id: UUID
    plan_version: int
    plan_hash: str
    requested_by: str
    outbound_steps: list[str] = []
    est_cost_usd: float = 0.0
    at: datetime
    requester_email: str | None = None  # the requester's `email` claim; else the notifier uses approval_email


class PlanApproved(Event, frozen=True, kw_only=True):
    """A person approved this plan version through its emailed link: the workflow is active. The token id is
    consumed in the same transaction (approval links work once); who, from where and with what is kept."""

    workflow_id: UUID
    plan_version: int
    plan_hash: str
    approved_by: str
    token_id: UUID | None = None
    client_ip: str = ""
    user_agent: str = ""
    via: str = "email"
    at: datetime


class ParseInstruction(Command, frozen=True, kw_only=True):
    plan_id: UUID
    instruction: str
    available_tools: list[str] | None = None
    organization_id: str | None = None
    at: datetime


class CreateWorkflowFromGoal(Command, frozen=True, kw_only=True):
    workflow_id: UUID
    goal: str
    schedule: str | None = None
    available_tools: list[str] | None = None
    # The assistant surface runs a plan at once when it sends nothing outside Weft; otherwise, and always
    # for the console, the workflow waits as a draft for plan approval.
    activate_if_safe: bool = False
    source: str = "console"
    created_by: str
    at: datetime
    requester_email: str | None = None
    quick_action_id: str | None = None  # the assistant's quick action this command came from (usage counts)


class ReviseWorkflowPlan(Command, frozen=True, kw_only=True):
    workflow_id: UUID
    steps: list[dict[str, Any]]
    revised_by: str
    at: datetime
    requester_email: str | None = None


class ApprovePlan(Command, frozen=True, kw_only=True):
    """Approve a draft's plan version, with the claims of the link's token (bound to the plan hash)."""

    workflow_id: UUID
    plan_version: int
    plan_hash: str
    approved_by: str
    token_id: UUID | None = None
    client_ip: str = ""
    user_agent: str = ""
    via: str = "email"
    at: datetime


PlanStreamEvent = PlanGenerated | PlanFailed
