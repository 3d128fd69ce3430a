"""v2 workflow routes: health, CRUD, schema, and the outcome lookup a 202 points at."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from libs.events.schemas import Outcome
from libs.events.schemas.workflow import CreateWorkflow, DeleteWorkflow, UpdateWorkflow
from libs.security.auth import Principal
from services.gateway.commands import entity_id, now
from services.gateway.core import Core, workflows
from services.gateway.core.errors import NotFound
from services.gateway.errors import V2Error, accepted_response, responses
from services.gateway.timestamps import iso
from services.gateway.v2.shapes import (
    CommandEnvelope,
    CommandState,
    CreateWorkflowBody,
    Health,
    IoSchema,
    Message,
    PatchWorkflowBody,
    SchemaEnvelope,
    WorkflowEnvelope,
    WorkflowList,
    WorkflowStatus,
    workflow_body,
    workflow_summary,
)

COMMAND = {**responses(V2Error, 404, 409, 422, 429), **accepted_response()}


@get("/health", sync_to_thread=False, security=[], responses=responses(V2Error))
def health() -> Health:
    return Health(status="ok", service="workflows-api-v2", version="2.0.0", timestamp=iso(now()))


@get("/", responses=responses(V2Error, 429))
async def list_workflows(principal: NamedDependency[Principal], core: NamedDependency[Core],
                         status: FromQuery[WorkflowStatus | None] = None,
                         limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
                         offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0) -> WorkflowList:
    found, total = await workflows.list_page(core, principal, status=status, limit=limit, offset=offset)
    return WorkflowList(success=True, workflows=[workflow_summary(w) for w in found], count=total)


def _render(core: Core, principal: Principal, code: int):
    async def render(outcome: Outcome):
        workflow = await workflows.get(core, principal, uuid.UUID(outcome.stream_id.split("-", 1)[1]))
        return code, WorkflowEnvelope(success=True, workflow=workflow_body(workflow))

    return render


@post("/", status_code=201, responses=COMMAND)
async def create_workflow(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                          data: JSONBody[CreateWorkflowBody]) -> Response[WorkflowEnvelope]:
    workflows.check_definition(data.definition)

    def make(command_id: uuid.UUID) -> CreateWorkflow:
        return CreateWorkflow(workflow_id=entity_id(command_id), name=data.name, description=data.description,
                              definition=data.definition, version=data.version, created_by=principal.user_id, at=now())

    return await core.dispatcher.dispatch(request, principal, "planner", make, _render(core, principal, 201),
                                          await request.body())


@get("/{workflow_id:uuid}", responses=responses(V2Error, 404, 429))
async def get_workflow(principal: NamedDependency[Principal], core: NamedDependency[Core],
                       workflow_id: FromPath[uuid.UUID]) -> WorkflowEnvelope:
    return WorkflowEnvelope(success=True, workflow=workflow_body(await workflows.get(core, principal, workflow_id)))


@patch("/{workflow_id:uuid}", responses=COMMAND)
async def patch_workflow(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                         workflow_id: FromPath[uuid.UUID],
                         data: JSONBody[PatchWorkflowBody]) -> Response[WorkflowEnvelope]:
    if data.definition is not msgspec.UNSET:
        workflows.check_definition(data.definition)
    workflow = await workflows.get(core, principal, workflow_id)

    def make(_: uuid.UUID) -> UpdateWorkflow:
        return UpdateWorkflow(workflow_id=workflow.id, name=data.name, description=data.description,
                              definition=data.definition, version=data.version, status=data.status, at=now())

    return await core.dispatcher.dispatch(request, principal, "planner", make, _render(core, principal, 200),
                                          await request.body())


@delete("/{workflow_id:uuid}", status_code=200, responses=COMMAND)
async def delete_workflow(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                          workflow_id: FromPath[uuid.UUID]) -> Response[Message]:
    workflow = await workflows.get(core, principal, workflow_id)

    async def render(_: Outcome):
        return 200, Message(success=True, message="Workflow deleted successfully")

    return await core.dispatcher.dispatch(
        request, principal, "planner", lambda _: DeleteWorkflow(workflow_id=workflow.id, at=now()), render)


@get("/{workflow_id:uuid}/schema", responses=responses(V2Error, 404, 429))
async def get_schema(principal: NamedDependency[Principal], core: NamedDependency[Core],
                     workflow_id: FromPath[uuid.UUID]) -> SchemaEnvelope:
    definition = (await workflows.get(core, principal, workflow_id)).definition
    empty = {"type": "object", "properties": {}}
    return SchemaEnvelope(success=True, schema=IoSchema(inputs=definition.get("inputs") or empty,
                                                        outputs=definition.get("outputs") or empty))


@get("/commands/{command_id:uuid}", responses=responses(V2Error, 404, 429))
async def command_status(principal: NamedDependency[Principal], core: NamedDependency[Core],
                         command_id: FromPath[uuid.UUID]) -> CommandEnvelope:
    """Where a 202 points: the committed outcome of a command, or that it is still pending. An id this tenant
    was never answered 202 for (unknown, or another tenant's) is 404."""
    outcome, accepted = await core.store.command_state(principal.tenant_id, command_id)
    if not accepted:
        raise NotFound("Command")  # never accepted for this tenant (the command log, decision 0030)
    if outcome is None:
        return CommandEnvelope(success=True, command=CommandState(id=str(command_id), state="pending"))
    return CommandEnvelope(success=True, command=CommandState(
        id=str(command_id), state="committed" if outcome.ok else "refused", status=outcome.status,
        error=outcome.error, resource=outcome.stream_id))
