"""Workflow definition lifecycle: owned by the planner."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from libs.events.schemas.base import Command, Event
from libs.events.schemas.plan import (
    ApprovePlan,
    CreateWorkflowFromGoal,
    ParseInstruction,
    PlanApprovalRequested,
    PlanApproved,
    PlanGenerated,
    PlanRevised,
    ReviseWorkflowPlan,
)

UNSET: Any = msgspec.UNSET


class WorkflowCreated(Event, frozen=True, kw_only=True):
    workflow_id: UUID
    name: str
    description: str | None = None
    definition: dict[str, Any]
    version: str = "1.0.0"
    status: str = "active"
    created_by: str
    at: datetime
    goal: str | None = None
    schedule: str | None = None
    source: str = "api"
    quick_action_id: str | None = None  # the assistant quick action the command was started from


class WorkflowUpdated(Event, frozen=True, kw_only=True):
    """Only the fields present changed."""

    workflow_id: UUID
    name: str | msgspec.UnsetType = UNSET
    description: str | None | msgspec.UnsetType = UNSET
    definition: dict[str, Any] | msgspec.UnsetType = UNSET
    version: str | msgspec.UnsetType = UNSET
    status: str | msgspec.UnsetType = UNSET
    at: datetime


class WorkflowDeleted(Event, frozen=True, kw_only=True):
    workflow_id: UUID
    at: datetime


WorkflowEvent = (
    WorkflowCreated | WorkflowUpdated | WorkflowDeleted | PlanGenerated | PlanRevised | PlanApprovalRequested
    | PlanApproved
)
WORKFLOW_EVENTS: tuple[type[Event], ...] = (
    WorkflowCreated, WorkflowUpdated, WorkflowDeleted, PlanGenerated, PlanRevised, PlanApprovalRequested,
    PlanApproved,
)


class CreateWorkflow(Command, frozen=True, kw_only=True):
    workflow_id: UUID
    name: str
    description: str | None = None
    definition: dict[str, Any]
    version: str = "1.0.0"
    created_by: str
    at: datetime


class UpdateWorkflow(Command, frozen=True, kw_only=True):
    workflow_id: UUID
    name: str | msgspec.UnsetType = UNSET
    description: str | None | msgspec.UnsetType = UNSET
    definition: dict[str, Any] | msgspec.UnsetType = UNSET
    version: str | msgspec.UnsetType = UNSET
    status: str | msgspec.UnsetType = UNSET
    at: datetime


class DeleteWorkflow(Command, frozen=True, kw_only=True):
    workflow_id: UUID
    at: datetime


WorkflowCommand = (
    CreateWorkflow | UpdateWorkflow | DeleteWorkflow | ParseInstruction | CreateWorkflowFromGoal | ReviseWorkflowPlan
    | ApprovePlan
)
