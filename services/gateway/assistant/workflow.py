"""The assistant contract (spec A), /api/workflow: one natural-language command -> plan -> run; cancel; stream tokens."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

import msgspec
import structlog
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from libs.events.schemas import CommandEnvelope, Outcome
from libs.security.auth import Principal
from libs.security.stream_tokens import STREAM_TTL_S, issue_stream_token
from services.gateway.assistant.common import assistant_router
from services.gateway.commands import now
from services.gateway.core import Core, assistant, quick_actions, runs, workflows
from services.gateway.core.errors import ApiError
from services.gateway.core.ids import parse_id
from services.gateway.errors import PlainError, accepted_response, plain_error_body, responses

log = structlog.get_logger()
CANCEL_TARGET_MS = 200  # the contract's response-time target for cancel


class CommandBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    command: Annotated[str, msgspec.Meta(max_length=10000)]
    # Beyond A: the quick action the command was filled in from (GET /api/quick-actions), for its usageCount.
    actionId: Annotated[str, msgspec.Meta(max_length=100)] | None = None  # noqa: N815


class CancelBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    workflowId: Annotated[str, msgspec.Meta(max_length=100)]  # noqa: N815 - the contract's field name


class PlannedStep(msgspec.Struct, kw_only=True):
    id: str
    agentName: str  # noqa: N815
    action: str
    description: str
    status: str
    order: int


class Executed(msgspec.Struct, kw_only=True, omit_defaults=True):
    success: bool
    workflowId: str  # noqa: N815
    steps: list[PlannedStep]
    status: str
    message: str
    runId: str | None = None  # noqa: N815


class StreamTokenBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    workflowId: Annotated[str, msgspec.Meta(max_length=100)]  # noqa: N815


class StreamToken(msgspec.Struct, kw_only=True):
    streamToken: str  # noqa: N815
    expiresIn: int  # noqa: N815 - seconds
    streamUrl: str  # noqa: N815 - what to hand to `new EventSource(...)`


class CancelResult(msgspec.Struct, kw_only=True):
    success: bool
    message: str
    responseTime: int  # noqa: N815


def render_planned(message: str) -> Callable[[assistant.Planned], Awaitable[tuple[int, Executed]]]:
    """Contract A's answer for a planned command (execute and rerun share it)."""

    async def render(planned: assistant.Planned) -> tuple[int, Executed]:
        steps = [PlannedStep(id=s["id"], agentName=s["agentName"], action=s["action"], description=s["description"],
                             status="pending", order=i) for i, s in enumerate(planned.steps)]
        text = message
        if planned.status == assistant.AWAITING_PLAN_APPROVAL:
            text += "; it sends data outside Weft, so it waits for plan approval before it runs"
        return 200, Executed(success=True, workflowId=str(planned.workflow.id), steps=steps, status=planned.status,
                             message=text, runId=None if planned.run_id is None else str(planned.run_id))

    return render


@post("/execute", status_code=200, responses={**responses(PlainError, 404, 409, 422), **accepted_response()})
async def execute_command(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                          data: JSONBody[CommandBody]) -> Response[Executed]:
    command = assistant.check_command(data.command)
    if data.actionId is not None:
        await quick_actions.require_known(core, principal.tenant_id, data.actionId)
    return await assistant.plan_and_run(core, request, principal, command,
                                        render_planned("Workflow created and planned successfully"),
                                        body=await request.body(), quick_action_id=data.actionId,
                                        shape=plain_error_body)


@post("/cancel", status_code=200, responses={**responses(PlainError, 403, 404), **accepted_response()})
async def cancel_workflow(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                          data: JSONBody[CancelBody]) -> Response[CancelResult]:
    """Cancel the workflow's active run(s): running steps finish, nothing new starts.

    Nothing running is not an error: the caller wants the workflow stopped and it is, so 200 with
    "No active run to cancel". Another user's workflow is 403 (the contract verifies ownership).
    """
    started = time.perf_counter()
    workflow = await workflows.owned(core, principal, parse_id(data.workflowId, "Workflow", "workflowId"), "workflowId")
    active = await runs.active(core, principal.tenant_id, workflow.id)

    async def cancel(run: runs.Run) -> Outcome | None:
        command_id = uuid.uuid4()
        make = runs.stop_command(run.id, run.status, principal, terminate=False, reason="Cancelled by user",
                                 word=run.status)
        envelope = CommandEnvelope(
            command_id=command_id, tenant_id=principal.tenant_id, actor=principal.user_id,
            correlation_id=request.headers.get("x-correlation-id") or str(command_id),
            command=make(command_id), issued_at=now())
        return await core.bus.send("executor", envelope) or await core.store.outcome(principal.tenant_id, command_id)

    outcomes = await asyncio.gather(*(cancel(run) for run in active))
    refused = next((o for o in outcomes if o is not None and not o.ok), None)
    if refused is not None:
        raise ApiError(refused.status, refused.error or "Cancel refused")
    status, message = 200, "Workflow cancelled successfully" if active else "No active run to cancel"
    if any(o is None for o in outcomes):
        status, message = 202, "Cancellation accepted; it is not yet committed"
    elapsed = round((time.perf_counter() - started) * 1000)
    if elapsed > CANCEL_TARGET_MS:
        log.warning("cancel_slow", workflow_id=str(workflow.id), response_ms=elapsed, target_ms=CANCEL_TARGET_MS)
    return Response(CancelResult(success=True, message=message, responseTime=elapsed), status_code=status)


@post("/stream-token", status_code=200, responses=responses(PlainError, 403, 404))
async def stream_token(principal: NamedDependency[Principal], core: NamedDependency[Core],
                       data: JSONBody[StreamTokenBody]) -> StreamToken:
    """A few minutes' token for one workflow's stream, for a browser EventSource (it cannot send headers);
    the long-lived bearer token never goes into a URL."""
    workflow = await workflows.owned(core, principal, parse_id(data.workflowId, "Workflow", "workflowId"),
                                     "workflowId")
    token = issue_stream_token(core.settings, principal, workflow.id)
    return StreamToken(streamToken=token, expiresIn=STREAM_TTL_S,
                       streamUrl=f"/api/workflow/stream?workflowId={workflow.id}&streamToken={token}")


router = assistant_router("/api/workflow", [execute_command, cancel_workflow, stream_token])
