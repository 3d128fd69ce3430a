"""The executions contract (spec C): execute a workflow, read an execution's node states and logs, cancel it.

Mounted at /api/workflows/execute beside the console's /api/workflows/{id}: Litestar prefers the static
`execute` segment, so GET /api/workflows/execute/<id> always lands here. Errors use C's shape
{"success": false, "error": ...}.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody

from libs.domain.run_view import NodeState, RunView
from libs.events.schemas import Outcome
from libs.security.auth import Principal
from services.gateway.shapes import Message, envelope
from services.gateway.auth import authenticate
from services.gateway.core import Core, runs, status, workflows
from services.gateway.core.errors import WORKFLOW_NOT_ACTIVE, ApiError, NotFound
from services.gateway.errors import V2Error, accepted_response, handlers, responses, v2_shape
from services.gateway.timestamps import iso

COMMAND = {**responses(V2Error, 403, 404, 409, 422), **accepted_response()}
# C lists 400, 401, 403, 404 and 500 only: a workflow that may not run is a bad request here. 409 stays for a
# run already active (DESIGN's one-active-run rule, lifted by the workflow's `concurrency`).
STATUS_FOR = {WORKFLOW_NOT_ACTIVE: 400}


class ExecuteBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """C's execute body: the run's inputs and the execution context's starting `variables`."""

    inputs: dict[str, Any] = {}
    variables: dict[str, Any] = {}


class Started(msgspec.Struct, kw_only=True):
    workflowId: str  # noqa: N815 - the contract's field names
    executionId: str  # noqa: N815


StartedEnvelope = envelope("StartedEnvelope", __name__, data=Started, message=str)


class Node(msgspec.Struct, kw_only=True):
    state: str
    startedAt: str | None  # noqa: N815
    completedAt: str | None  # noqa: N815
    error: str | None
    output: Any
    attempt: int


class LogLine(msgspec.Struct, kw_only=True):
    nodeId: str | None  # noqa: N815
    message: str
    level: str
    timestamp: str | None


class Execution(msgspec.Struct, kw_only=True):
    id: str
    workflowId: str  # noqa: N815
    state: str
    startedAt: str | None  # noqa: N815
    completedAt: str | None  # noqa: N815
    startedBy: str  # noqa: N815
    variables: dict[str, Any]
    logs: list[LogLine]
    output: Any
    error: str | None
    nodeStates: dict[str, Node]  # noqa: N815


ExecutionEnvelope = envelope("ExecutionEnvelope", __name__, data=Execution)


def _node(node: NodeState) -> Node:
    return Node(state=node.state, startedAt=iso(node.started_at), completedAt=iso(node.completed_at),
                error=node.error, output=node.output, attempt=node.attempt)


def execution(view: RunView) -> Execution:
    return Execution(
        id=str(view.run_id), workflowId=str(view.workflow_id), state=status.word(view.status, "executions"),
        startedAt=iso(view.started_at), completedAt=iso(view.finished_at), startedBy=view.created_by,
        variables=view.variables,
        logs=[LogLine(nodeId=line.node_id, message=line.message, level=line.level, timestamp=iso(line.timestamp))
              for line in view.logs],
        output=view.outputs, error=view.error, nodeStates={sid: _node(n) for sid, n in view.node_states.items()})


async def _own_execution(core: Core, principal: Principal, execution_id: uuid.UUID) -> RunView:
    """404 for no such run in the caller's tenant (another tenant's is invisible); 403 for a colleague's."""
    view = await runs.view(core, principal.tenant_id, execution_id)
    if view is None:
        raise NotFound("Execution")
    if view.created_by != principal.user_id:
        raise ApiError(403, "Forbidden: this execution was started by another user")
    return view


@post("/{workflow_id:uuid}", status_code=200, responses=COMMAND)
async def execute_workflow(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                           workflow_id: FromPath[uuid.UUID],
                           data: JSONBody[ExecuteBody] = ExecuteBody()) -> Response[StartedEnvelope]:
    workflow = await workflows.get(core, principal, workflow_id)

    async def render(outcome: Outcome):
        return 200, StartedEnvelope(success=True, message="Workflow execution initiated successfully", data=Started(
            workflowId=str(workflow.id), executionId=str(runs.run_id_of(outcome))))

    return await runs.start(core, request, principal, workflow, data.inputs, render,
                            await request.body(), variables=data.variables)


@get("/{execution_id:uuid}", responses=responses(V2Error, 403, 404))
async def get_execution(principal: NamedDependency[Principal], core: NamedDependency[Core],
                        execution_id: FromPath[uuid.UUID]) -> ExecutionEnvelope:
    return ExecutionEnvelope(success=True, data=execution(await _own_execution(core, principal, execution_id)))


@delete("/{execution_id:uuid}", status_code=200, responses=COMMAND)
async def cancel_execution(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                           execution_id: FromPath[uuid.UUID]) -> Response[Message]:
    view = await _own_execution(core, principal, execution_id)

    async def render(_: Outcome):
        return 200, Message(success=True, message=f"Execution {view.run_id} canceled")

    return await runs.stop(core, request, principal, view.run_id, view.status, render, terminate=False,
                           reason="Message by user", word=status.word(view.status, "executions"))


router = Router(
    path="/api/workflows/execute",
    route_handlers=[execute_workflow, get_execution, cancel_execution],
    dependencies={"principal": Provide(authenticate)},
    exception_handlers=handlers(v2_shape, STATUS_FOR),
    tags=["executions"],
    security=[{"bearerAuth": []}],
)
