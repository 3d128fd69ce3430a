"""The WebSocket transport: one run's events as JSON text frames, "id" inside each."""

from __future__ import annotations

import asyncio
import uuid

from litestar import Router, WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath

from libs.security.auth import InvalidToken, verify_token
from services.gateway.errors import ApiError
from services.gateway.streams.feed import EventFeed, Scope
from services.gateway.streams.heartbeats import with_heartbeats
from services.gateway.streams.messages import HEARTBEAT, Connected, Reconnect, StreamEvent
from services.gateway.core import runs
from services.gateway.streams.resume import last_event_id


# WebSocket close codes (4000-4999 are the application's).
WS_TRY_AGAIN_LATER = 1013
WS_BAD_REQUEST, WS_UNAUTHORIZED, WS_NOT_FOUND = 4400, 4401, 4404


async def _ws_refuse(socket: WebSocket, code: int, status: int, message: str) -> None:
    await socket.send_json({"type": "error", "status": status, "error": message})
    await socket.close(code=code, reason=message[:120])


@websocket("/{workflow_id:str}/runs/{run_id:str}/ws")
async def run_ws(socket: WebSocket, workflow_id: FromPath[str], run_id: FromPath[str]) -> None:
    """v2: one run's events over a WebSocket. Auth: `Authorization: Bearer` or `?token=` (browsers cannot set
    headers on a WebSocket). Errors are sent as {"type":"error","status","error"} and close 4400/4401/4404."""
    await socket.accept()
    settings, ctx = socket.app.state.settings, socket.app.state.ctx
    scheme, _, token = socket.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    token = token or (socket.query_params.get("token") or "").strip()
    if not token:
        return await _ws_refuse(socket, WS_UNAUTHORIZED, 401, "Missing bearer token")
    try:
        principal = verify_token(settings, token)
    except InvalidToken as exc:
        return await _ws_refuse(socket, WS_UNAUTHORIZED, 401, str(exc).capitalize())
    try:
        wid, rid = uuid.UUID(workflow_id), uuid.UUID(run_id)
    except ValueError:
        return await _ws_refuse(socket, WS_NOT_FOUND, 404, "Run not found")
    try:
        after = last_event_id(socket.headers, socket.query_params)
    except ApiError as exc:
        return await _ws_refuse(socket, WS_BAD_REQUEST, 400, exc.message)
    if await runs.find(socket.app.state.core, principal.tenant_id, rid, workflow_id=wid) is None:
        return await _ws_refuse(socket, WS_NOT_FOUND, 404, "Run not found")

    feed = EventFeed(ctx, Scope(principal.tenant_id, wid, rid), after)
    stream = with_heartbeats(feed.__aiter__(), settings.stream_heartbeat_s)

    async def pump() -> int:
        async for item in stream:
            if item is HEARTBEAT:
                await socket.send_json({"type": "heartbeat"})
            elif isinstance(item, StreamEvent):
                await socket.send_json({"id": item.position, **item.message})
            elif isinstance(item, Connected):
                await socket.send_json(item.message)
            elif isinstance(item, Reconnect):
                return WS_TRY_AGAIN_LATER
        return 1000

    async def until_client_leaves() -> None:
        try:
            while True:
                await socket.receive_data(mode="text")  # clients send nothing we need; this notices a close
        except WebSocketDisconnect:
            return

    sender, listener = asyncio.create_task(pump()), asyncio.create_task(until_client_leaves())
    try:
        await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, listener):
            task.cancel()
        await asyncio.gather(sender, listener, return_exceptions=True)
        await stream.aclose()  # unsubscribes from NATS
    if sender.done() and not sender.cancelled() and sender.exception() is None:
        code = sender.result()
        try:
            await socket.close(code=code, reason="reconnect with lastEventId" if code != 1000 else None)
        except (WebSocketDisconnect, RuntimeError):
            pass


ws_router = Router(path="/api/v2/workflows", route_handlers=[run_ws])
