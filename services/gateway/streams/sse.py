"""The SSE transport: contract A's workflow stream and v2's run stream."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from libs.security.auth import Principal
from services.gateway.auth import authenticate, stream_principal
from services.gateway.core import Core, runs, workflows
from services.gateway.core.errors import NotFound
from services.gateway.errors import EXCEPTION_HANDLERS_V2, PLAIN_EXCEPTION_HANDLERS, ApiError, PlainError, V2Error, responses
from services.gateway.streams.feed import EventFeed, Scope
from services.gateway.streams.heartbeats import with_heartbeats
from services.gateway.streams.messages import HEARTBEAT, Connected, Reconnect, StreamEvent
from services.gateway.streams.resume import last_event_id


def _json(message: dict[str, Any]) -> str:
    return msgspec.json.encode(message).decode()


async def sse_messages(feed: EventFeed, heartbeat_s: float) -> AsyncIterator[ServerSentEventMessage]:
    stream = with_heartbeats(feed.__aiter__(), heartbeat_s)
    try:
        async for item in stream:
            if item is HEARTBEAT:
                yield ServerSentEventMessage(data=None, comment="heartbeat")
            elif isinstance(item, StreamEvent):
                yield ServerSentEventMessage(id=item.position, event=item.message["type"], data=_json(item.message))
            elif isinstance(item, Connected):
                yield ServerSentEventMessage(event="connected", data=_json(item.message))
            elif isinstance(item, Reconnect):
                yield ServerSentEventMessage(data=None, comment=f"reconnect: {item.reason}")
                return
    finally:
        # Also when the client went away: Litestar cancels the response task, and this closes the feed,
        # which unsubscribes from NATS.
        await stream.aclose()


def _sse_response(request: Request, scope: Scope, after: int) -> ServerSentEvent:
    ctx = request.app.state.ctx
    feed = EventFeed(ctx, scope, after)
    return ServerSentEvent(sse_messages(feed, request.app.state.settings.stream_heartbeat_s))


def _stream_responses(shape: type[msgspec.Struct]) -> dict[int, ResponseSpec]:
    return {200: ResponseSpec(data_container=str, media_type="text/event-stream", generate_examples=False,
                              description="Server-sent events; `id` is the event's position (resume with "
                                          "Last-Event-ID); comments are heartbeats"),
            **responses(shape, 404)}


ResumeFrom = Annotated[str | None, QueryParameter(name="lastEventId", description=(
    "resume after this event id (the Last-Event-ID header wins when both are sent)"))]


@get("/stream", responses=_stream_responses(PlainError), dependencies={"principal": Provide(stream_principal)})
async def workflow_stream(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                          workflowId: Annotated[str | None, QueryParameter(max_length=100)] = None,  # noqa: N803
                          lastEventId: ResumeFrom = None,  # noqa: N803
                          streamToken: Annotated[str | None, QueryParameter(max_length=2000, description=(  # noqa: N803
                              "for a browser EventSource: a token from POST /api/workflow/stream-token"))] = None,
                          ) -> ServerSentEvent:
    """Contract A: every run event of one workflow, as SSE, to its owner only (bearer or ?streamToken=)."""
    if workflowId is None or not workflowId.strip():
        raise ApiError(400, "workflowId is required", "workflowId")
    try:
        workflow_id = uuid.UUID(workflowId.strip())
    except ValueError:
        raise ApiError(400, "workflowId must be a UUID", "workflowId") from None
    after = last_event_id(request.headers, request.query_params)
    workflow = await workflows.owned(core, principal, workflow_id)
    return _sse_response(request, Scope(principal.tenant_id, workflow.id), after)


@get("/{workflow_id:uuid}/runs/{run_id:uuid}/events", responses=_stream_responses(V2Error))
async def run_events(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                     workflow_id: FromPath[uuid.UUID], run_id: FromPath[uuid.UUID],
                     lastEventId: ResumeFrom = None) -> ServerSentEvent:  # noqa: N803
    """v2: one run's events, as SSE."""
    after = last_event_id(request.headers, request.query_params)
    if await runs.find(core, principal.tenant_id, run_id, workflow_id=workflow_id) is None:
        raise NotFound("Run")
    return _sse_response(request, Scope(principal.tenant_id, workflow_id, run_id), after)


def _router(path: str, handler, exception_handlers) -> Router:
    return Router(path=path, route_handlers=[handler], dependencies={"principal": Provide(authenticate)},
                  exception_handlers=exception_handlers, tags=["streams"], security=[{"bearerAuth": []}])


workflow_router = _router("/api/workflow", workflow_stream, PLAIN_EXCEPTION_HANDLERS)  # contract A's shape
run_router = _router("/api/v2/workflows", run_events, EXCEPTION_HANDLERS_V2)
