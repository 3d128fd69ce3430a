"""The v2 contract's request and response bodies (spec E), as it spells them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from services.gateway.shapes import Message, envelope  # noqa: F401 - Message re-exported for the v2 routes
from services.gateway.core import status
from services.gateway.core.runs import Run
from services.gateway.core.workflows import Workflow
from services.gateway.timestamps import iso

UNSET: Any = msgspec.UNSET
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=5000)]
Version = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
WorkflowStatus = Literal["active", "archived"]
RunStatusWord = Literal["running", "completed", "failed", "terminated"]


class CreateWorkflowBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    description: Text | None = None
    definition: dict[str, Any]
    version: Version = "1.0.0"


class PatchWorkflowBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name | msgspec.UnsetType = UNSET
    description: Text | None | msgspec.UnsetType = UNSET
    definition: dict[str, Any] | msgspec.UnsetType = UNSET
    version: Version | msgspec.UnsetType = UNSET
    status: WorkflowStatus | msgspec.UnsetType = UNSET


class ExecuteBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    inputs: dict[str, Any] = {}


class ParseContext(msgspec.Struct, kw_only=True, omit_defaults=True):
    availableTools: Annotated[list[Annotated[str, msgspec.Meta(max_length=100)]], msgspec.Meta(max_length=100)] | None = None  # noqa: N815,E501
    organizationId: Annotated[str, msgspec.Meta(max_length=200)] | None = None  # noqa: N815


class ParseBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    instruction: Annotated[str, msgspec.Meta(max_length=10000)]
    context: ParseContext | None = None


class WorkflowSummary(msgspec.Struct, kw_only=True):
    id: str
    customer_id: str
    name: str
    description: str | None
    version: str
    status: str
    created_by: str
    created_at: str
    updated_at: str


class WorkflowBody(WorkflowSummary, kw_only=True):
    definition: dict[str, Any]


def workflow_summary(w: Workflow) -> WorkflowSummary:
    return WorkflowSummary(id=str(w.id), customer_id=w.tenant_id, name=w.name, description=w.description,
                           version=w.version, status=w.status, created_by=w.created_by, created_at=iso(w.created_at),
                           updated_at=iso(w.updated_at))


def workflow_body(w: Workflow) -> WorkflowBody:
    return WorkflowBody(**msgspec.structs.asdict(workflow_summary(w)), definition=w.definition)


WorkflowEnvelope = envelope("WorkflowEnvelope", __name__, workflow=WorkflowBody)


WorkflowList = envelope("WorkflowList", __name__, workflows=list[WorkflowSummary], count=int)


class Health(msgspec.Struct, kw_only=True):
    status: str
    service: str
    version: str
    timestamp: str


class IoSchema(msgspec.Struct, kw_only=True):
    inputs: dict[str, Any]
    outputs: dict[str, Any]


SchemaEnvelope = envelope("SchemaEnvelope", __name__, schema=IoSchema)


class CommandState(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    state: Literal["pending", "committed", "refused"]
    status: int | None = None
    error: str | None = None
    resource: str | None = None


CommandEnvelope = envelope("CommandEnvelope", __name__, command=CommandState)


class RunBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    workflow_id: str
    status: str
    inputs: Any
    outputs: Any
    error: str | None
    started_at: str | None
    finished_at: str | None
    version: int | None = None  # with ?at_version: how many of the run's events were folded


def run_body(run: Run) -> RunBody:
    return RunBody(id=str(run.id), workflow_id=str(run.workflow_id), status=status.word(run.status, "v2"),
                   inputs=run.inputs, outputs=run.outputs, error=run.error, started_at=iso(run.started_at),
                   finished_at=iso(run.finished_at))


RunEnvelope = envelope("RunEnvelope", __name__, run=RunBody)


RunList = envelope("RunList", __name__, runs=list[RunBody], count=int)
