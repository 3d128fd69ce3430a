"""The SSE transport: contract A's workflow stream and v2's run stream."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Router, get
from litestar.di import Provide
from litestar.response import ServerSentEvent, ServerSentEventMessage

from libs.security.auth import Principal
from services.gateway.auth import authenticate
from services.gateway.errors import PLAIN_EXCEPTION_HANDLERS, ApiError
from services.gateway.streams.feed import EventFeed, Scope
from services.gateway.streams.heartbeats import with_heartbeats
from services.gateway.streams.messages import HEARTBEAT, Connected, Reconnect, StreamEvent
from services.gateway.streams.resume import last_event_id, run_exists, uuid_or_404, workflow_exists


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


@get("/stream")
async def workflow_stream(request: Request, principal: Principal) -> ServerSentEvent:
    """Contract A: every run event of one workflow, as SSE."""
    raw = request.query_params.get("workflowId")
    if raw is None or not raw.strip():
        raise ApiError(400, "workflowId is required", "workflowId")
    try:
        workflow_id = uuid.UUID(raw.strip())
    except ValueError:
        raise ApiError(400, "workflowId must be a UUID", "workflowId") from None
    after = last_event_id(request.headers, request.query_params)
    if not await workflow_exists(request.app.state.ctx, principal.tenant_id, workflow_id):
        raise ApiError(404, "Workflow not found")
    return _sse_response(request, Scope(principal.tenant_id, workflow_id), after)


@get("/{workflow_id:str}/runs/{run_id:str}/events")
async def run_events(request: Request, principal: Principal, workflow_id: str, run_id: str) -> ServerSentEvent:
    """v2: one run's events, as SSE."""
    wid, rid = uuid_or_404(workflow_id, "Workflow"), uuid_or_404(run_id, "Run")
    after = last_event_id(request.headers, request.query_params)
    if not await run_exists(request.app.state.ctx, principal.tenant_id, wid, rid):
        raise ApiError(404, "Run not found")
    return _sse_response(request, Scope(principal.tenant_id, wid, rid), after)


workflow_router = Router(
    path="/api/workflow",
    route_handlers=[workflow_stream],
    dependencies={"principal": Provide(authenticate)},
    exception_handlers=PLAIN_EXCEPTION_HANDLERS,
)
run_router = Router(
    path="/api/v2/workflows",
    route_handlers=[run_events],
    dependencies={"principal": Provide(authenticate)},
)
