"""The console contract's bodies (spec B), as it spells them."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from libs.domain.catalog import step_type
from services.gateway.core import status
from services.gateway.core.runs import Run
from services.gateway.core.workflows import Workflow
from services.gateway.timestamps import iso

STOPPED = "Stopped by user"  # how the console names a cancelled run (DESIGN section 5)


class GoalBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    goal: Annotated[str, msgspec.Meta(max_length=10000)]
    schedule: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class EditStep(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: Annotated[str, msgspec.Meta(max_length=100)]
    action: Annotated[str, msgspec.Meta(max_length=100)]
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    config: dict[str, Any] = {}
    input_from: str | None = None
    depends_on: list[str] = []


class StepsBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    steps: Annotated[list[EditStep], msgspec.Meta(min_length=1, max_length=50)]


class Step(msgspec.Struct, kw_only=True):
    id: str
    stepIndex: int  # noqa: N815 - the contract's field names
    type: str
    action: str
    description: str
    config: dict[str, Any]
    inputFrom: Any  # noqa: N815
    dependsOn: list[str]  # noqa: N815
    outbound: bool
    estimatedCostUsd: float  # noqa: N815


def steps_of(definition: dict[str, Any]) -> list[Step]:
    steps = []
    for index, node in enumerate(definition.get("nodes", [])):
        entry = step_type(node)
        steps.append(Step(
            id=node["id"], stepIndex=index, type=node["type"], action=node.get("action") or node["type"],
            description=node.get("description", ""), config=node.get("config") or {},
            inputFrom=node.get("input_from"), dependsOn=node.get("depends_on") or [],
            outbound=bool(entry and entry.outbound), estimatedCostUsd=entry.est_cost_usd if entry else 0.0))
    return steps


class RunItem(msgspec.Struct, kw_only=True):
    id: str
    runNumber: int  # noqa: N815
    status: str
    inputs: Any
    outputs: Any
    error: str | None
    startedAt: str | None  # noqa: N815
    finishedAt: str | None  # noqa: N815


def run_item(run: Run) -> RunItem:
    return RunItem(id=str(run.id), runNumber=run.run_number, status=status.word(run.status, "console"),
                   inputs=run.inputs, outputs=run.outputs, error=STOPPED if run.status == "cancelled" else run.error,
                   startedAt=iso(run.started_at), finishedAt=iso(run.finished_at))


class WorkflowItem(msgspec.Struct, kw_only=True):
    id: str
    title: str
    goal: str | None
    description: str | None
    status: str
    schedule: str | None
    source: str
    planVersion: int  # noqa: N815
    planHash: str | None  # noqa: N815
    stepCount: int  # noqa: N815
    createdBy: str  # noqa: N815
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815


class WorkflowListItem(WorkflowItem, kw_only=True):
    latestRun: RunItem | None  # noqa: N815


class WorkflowDetail(WorkflowItem, kw_only=True):
    workflowSteps: list[Step]  # noqa: N815
    workflowRuns: list[RunItem]  # noqa: N815


def workflow_fields(w: Workflow) -> dict[str, Any]:
    return dict(id=str(w.id), title=w.name, goal=w.goal, description=w.description, status=w.status,
                schedule=w.schedule, source=w.source, planVersion=w.plan_version, planHash=w.plan_hash,
                stepCount=len(w.steps), createdBy=w.created_by, createdAt=iso(w.created_at),
                updatedAt=iso(w.updated_at))


class PlannerInfo(msgspec.Struct, kw_only=True):
    source: str
    model: str
    confidence: float
    cached: bool


class Created(msgspec.Struct, kw_only=True):
    workflowId: str  # noqa: N815
    title: str
    steps: list[Step]
    status: str
    message: str
    schedule: str | None
    planVersion: int  # noqa: N815
    planHash: str | None  # noqa: N815
    estimatedCostUsd: float  # noqa: N815
    outboundSteps: list[str]  # noqa: N815
    planner: PlannerInfo | None


class StepsUpdated(msgspec.Struct, kw_only=True):
    workflowId: str  # noqa: N815
    status: str
    planVersion: int  # noqa: N815
    planHash: str | None  # noqa: N815
    steps: list[Step]
    message: str


class PlanVersion(msgspec.Struct, kw_only=True, omit_defaults=True):
    version: int
    planHash: str  # noqa: N815
    source: str
    createdAt: str | None  # noqa: N815
    steps: list[Step]
    model: str | None = None
    revisedBy: str | None = None  # noqa: N815


class PlanVersions(msgspec.Struct, kw_only=True):
    workflowId: str  # noqa: N815
    versions: list[PlanVersion]


class PlanDiff(msgspec.Struct, kw_only=True):
    workflowId: str  # noqa: N815
    from_: int = msgspec.field(name="from")
    to: int
    fromHash: str  # noqa: N815
    toHash: str  # noqa: N815
    added: list[dict[str, Any]]
    removed: list[dict[str, Any]]
    changed: list[dict[str, Any]]


class RunStarted(msgspec.Struct, kw_only=True):
    runId: int | None  # noqa: N815
    conversationId: str  # noqa: N815
    message: str


class RunStopped(msgspec.Struct, kw_only=True):
    message: str
    runId: int  # noqa: N815
    status: str
    error: str
