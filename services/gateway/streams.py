"""Live run events: SSE (contract A's workflow stream, v2's run stream) and a WebSocket, exact across reconnects.

Endpoints
- GET /api/workflow/stream?workflowId=<uuid>              SSE, every run of one workflow (contract A, plain errors)
- GET /api/v2/workflows/{id}/runs/{runId}/events          SSE, one run (v2 errors)
- WS  /api/v2/workflows/{id}/runs/{runId}/ws              the same messages as JSON text frames, "id" inside each

Every data event carries `id: <global_position>` (inside the JSON on the WebSocket). A client resumes with the
`Last-Event-ID` header (what EventSource sends on reconnect) or `?lastEventId=N` (the header wins when both are
given) and receives exactly the events after N, then live ones: no gap, no duplicate. Without either, the stream
starts at the beginning of the workflow's (or run's) history.

Messages (SSE `event:` name = the message's "type"):
- connected          {"type":"connected","workflowId"[,"runId"]}                 (no id: it is not an event)
- step_start         {"type":"step_start","stepId","data":{"runId","attempt","at"}}
- step_complete      {"type":"step_complete","stepId","data":{"runId","attempt","output","at",...}}
- step_error         {"type":"step_error","stepId","data":{"runId","attempt","error","at"}}
- workflow_complete  {"type":"workflow_complete","data":{"status":completed|failed|cancelled,"runId",
                      "eventType",...}}  for RunCompleted / RunFailed / RunCancelled / RunTerminated
                      (terminated maps to "cancelled"; eventType says which it was)
- run_event          {"type":"run_event","eventType":"<RunCreated|RunStarted|StepSkipped|...>"[,"stepId"],
                      "data":{"runId",...the event's fields in camelCase}}  for every other run event
Heartbeat: an SSE comment `: heartbeat` (WebSocket: {"type":"heartbeat"}) every settings.stream_heartbeat_s.
When the server must drop a stream (live buffer over MAX_BUFFER, or the gateway's NATS connection reconnected and
may have missed messages) it sends `: reconnect` (WebSocket: close code 1013) and closes; the client reconnects
with its last id and loses nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from litestar import Request, Router, WebSocket, get, websocket
from litestar.di import Provide
from litestar.exceptions import WebSocketDisconnect
from litestar.response import ServerSentEvent, ServerSentEventMessage

from libs.security.auth import InvalidToken, Principal, verify_token
from services.gateway import queries
from services.gateway.auth import authenticate, stream_principal
from services.gateway.core import Core, workflows
from services.gateway.errors import PLAIN_EXCEPTION_HANDLERS, ApiError

log = structlog.get_logger()

MAX_BUFFER = 10_000  # live messages held for one stream before it is dropped (the client resumes by id)
REPLAY_PAGE = 500
NATS_CHECK_S = 1.0  # how often an idle stream checks that its NATS connection has not reconnected
_MAX_POSITION = 2**63 - 1

TERMINAL_STATUS = {"RunCompleted": "completed", "RunFailed": "failed", "RunCancelled": "cancelled",
                   "RunTerminated": "cancelled"}
STEP_MESSAGES = {"StepStarted": "step_start", "StepCompleted": "step_complete", "StepFailed": "step_error"}


# ---------------------------------------------------------------- messages


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def run_message(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """A run event's stream message (the SSE data / WebSocket frame without its id)."""
    fields = {_camel(k): v for k, v in data.items() if k != "type"}
    run_id = fields.pop("runId", None)
    step_id = fields.pop("stepId", None)
    if event_type in STEP_MESSAGES:
        kind = STEP_MESSAGES[event_type]
        return {"type": kind, "stepId": step_id, "data": {"runId": run_id, **fields}}
    if event_type in TERMINAL_STATUS:
        return {"type": "workflow_complete",
                "data": {"status": TERMINAL_STATUS[event_type], "runId": run_id, "eventType": event_type, **fields}}
    message: dict[str, Any] = {"type": "run_event", "eventType": event_type}
    if step_id is not None:
        message["stepId"] = step_id
    message["data"] = {"runId": run_id, **fields}
    return message


@dataclass(frozen=True)
class StreamEvent:
    position: int
    message: dict[str, Any]


@dataclass(frozen=True)
class Connected:
    message: dict[str, Any]


@dataclass(frozen=True)
class Reconnect:
    reason: str


class _Heartbeat:
    def __repr__(self) -> str:
        return "HEARTBEAT"


HEARTBEAT = _Heartbeat()


# ---------------------------------------------------------------- the feed


@dataclass(frozen=True)
class Scope:
    tenant_id: str
    workflow_id: uuid.UUID
    run_id: uuid.UUID | None = None  # None: every run of the workflow

    @property
    def subject(self) -> str:
        # Tenant ids match bus.TENANT_RE (no '.', '*', '>'), so they are safe subject tokens.
        if self.run_id is not None:
            return f"weft.evt.{self.tenant_id}.run.{self.run_id}.*"
        return f"weft.evt.{self.tenant_id}.run.>"

    def hello(self) -> dict[str, Any]:
        body = {"type": "connected", "workflowId": str(self.workflow_id)}
        if self.run_id is not None:
            body["runId"] = str(self.run_id)
        return body


_REPLAY_WORKFLOW = (
    "SELECT e.global_position, e.type, e.data::text AS data FROM events e"
    " JOIN runs r ON e.stream_id = 'run-' || r.id::text"
    " WHERE r.tenant_id = $1 AND r.workflow_id = $2 AND e.tenant_id = $1 AND e.global_position > $3"
    " ORDER BY e.global_position LIMIT $4"
)
_REPLAY_RUN = (
    "SELECT global_position, type, data::text AS data FROM events"
    " WHERE tenant_id = $1 AND stream_id = $2 AND global_position > $3"
    " ORDER BY global_position LIMIT $4"
)
_OTHER_RUNS_CAP = 100_000


class EventFeed:
    """Connected, then the scope's run events after `after` (replay, then live), in global order, each once.

    The handoff (why there is no gap and no duplicate):
    1. Subscribe to the core-NATS subject first and flush, so the server has registered our interest; from
       here on every message the relay publishes reaches our buffer (bounded, see MAX_BUFFER).
    2. Replay from Postgres every event of the scope with global_position > after, in pages, until a short
       page. Appends are serialised (EventStore.append), so global_position order is commit order: an event
       that a replay page does not see either has a position above every position that page saw (a later
       page or the live buffer gets it) or was committed after the last page's snapshot.
    3. The relay publishes an event only after its commit, in position order. An event committed after the
       last replay snapshot is therefore published after step 1, and it is in the buffer. Events the replay
       already sent may also be in the buffer (committed earlier but relayed late, or republished after a
       relay failover): they are dropped by position (<= last sent). Live positions only increase, so one
       high-water mark is all the dedup state needed. Gaps between positions are normal (other streams,
       other tenants, rolled-back identities) and are never treated as loss.
    What could still lose a live message is core NATS itself (at-most-once): if the gateway's connection
    reconnects, or our buffer overflows, the feed ends with Reconnect and the client resumes by id; the
    replay of the next connection fills whatever was missed.
    """

    def __init__(self, ctx: Any, scope: Scope, after: int, *, max_buffer: int = MAX_BUFFER,
                 page: int = REPLAY_PAGE) -> None:
        self.ctx, self.scope, self.after, self.max_buffer, self.page = ctx, scope, after, max_buffer, page
        self._queue: asyncio.Queue = asyncio.Queue()
        self._overflow = False
        self._mine: set[str] = set() if scope.run_id is None else {str(scope.run_id)}
        self._others: set[str] = set()

    async def _on_msg(self, msg: Any) -> None:
        if self._overflow:
            return
        if self._queue.qsize() >= self.max_buffer:
            self._overflow = True
            self._queue.put_nowait(None)  # wakes the reader, which ends the feed
            return
        self._queue.put_nowait(msg)

    async def _replay_page(self, after: int) -> list[Any]:
        s = self.scope
        async with self.ctx.store.tenant_transaction(s.tenant_id) as conn:
            if s.run_id is None:
                return await conn.fetch(_REPLAY_WORKFLOW, s.tenant_id, s.workflow_id, after, self.page)
            return await conn.fetch(_REPLAY_RUN, s.tenant_id, f"run-{s.run_id}", after, self.page)

    async def _belongs(self, run_id: str, event_type: str, data: dict[str, Any]) -> bool:
        """Is this run one of the scope's workflow's runs? Cached; asks the runs table for an unknown run."""
        if run_id in self._mine:
            return True
        if run_id in self._others or self.scope.run_id is not None:
            return False
        if event_type == "RunCreated":
            workflow_id = data.get("workflow_id")
        else:
            try:
                rid = uuid.UUID(run_id)
            except ValueError:
                return False
            async with self.ctx.store.tenant_transaction(self.scope.tenant_id) as conn:
                found = await conn.fetchval("SELECT workflow_id FROM runs WHERE tenant_id = $1 AND id = $2",
                                            self.scope.tenant_id, rid)
            workflow_id = None if found is None else str(found)
        if workflow_id == str(self.scope.workflow_id):
            self._mine.add(run_id)
            return True
        if len(self._others) >= _OTHER_RUNS_CAP:
            self._others.clear()
        self._others.add(run_id)
        return False

    async def __aiter__(self) -> AsyncIterator[StreamEvent | Connected | Reconnect]:
        nc = self.ctx.nc
        sub = await nc.subscribe(self.scope.subject, cb=self._on_msg)
        try:
            await nc.flush()  # step 1: the server holds our subscription before the replay reads
            reconnects = nc.stats["reconnects"]
            yield Connected(self.scope.hello())
            last = self.after
            while True:  # step 2: replay in pages
                rows = await self._replay_page(last)
                for row in rows:
                    last = row["global_position"]
                    yield StreamEvent(last, run_message(row["type"], msgspec.json.decode(row["data"])))
                if len(rows) < self.page:
                    break
            while True:  # step 3: live, deduplicated by position
                if self._overflow:
                    log.warning("stream_buffer_overflow", tenant=self.scope.tenant_id, subject=self.scope.subject)
                    yield Reconnect("buffer overflow")
                    return
                if nc.stats["reconnects"] != reconnects or nc.is_closed:
                    yield Reconnect("event connection reset")
                    return
                try:
                    msg = await asyncio.wait_for(self._queue.get(), NATS_CHECK_S)
                except TimeoutError:
                    continue
                if msg is None:
                    continue  # the overflow marker; handled at the top
                headers = msg.headers or {}
                try:
                    position = int(headers["Weft-Position"])
                    stream_id, event_type = headers["Weft-Stream"], headers["Weft-Type"]
                except (KeyError, ValueError):
                    log.warning("stream_message_without_headers", subject=msg.subject)
                    continue
                if position <= last:
                    continue  # already sent by the replay (or a relay republish)
                data = msgspec.json.decode(msg.data)
                run_id = stream_id.partition("-")[2]
                if not await self._belongs(run_id, event_type, data):
                    continue
                last = position
                yield StreamEvent(position, run_message(event_type, data))
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - a closed connection has no subscription left to remove
                pass


async def with_heartbeats(source: AsyncIterator[Any], interval: float) -> AsyncIterator[Any]:
    """Items of `source`, plus HEARTBEAT every `interval` seconds (on a fixed schedule, whether or not
    items flow). The pending item is awaited in a task that is never cancelled by a heartbeat, so the
    source is only interrupted when this generator is closed (then it is closed too)."""
    loop = asyncio.get_running_loop()
    iterator = source.__aiter__()
    pending: asyncio.Future | None = None
    deadline = loop.time() + interval
    try:
        while True:
            now = loop.time()
            if now >= deadline:
                deadline = max(deadline + interval, now + interval / 2)
                yield HEARTBEAT
                continue
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=deadline - now)
            if not done:
                continue
            task, pending = pending, None
            try:
                item = task.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


# ---------------------------------------------------------------- transports


def last_event_id(headers: Any, query: Any) -> int:
    """The resume point: Last-Event-ID (EventSource's reconnect header) wins over ?lastEventId=; 0 = from the start."""
    raw = headers.get("last-event-id")
    name = "Last-Event-ID"
    if raw is None or not raw.strip():
        raw, name = query.get("lastEventId"), "lastEventId"
    if raw is None or not raw.strip():
        return 0
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(400, f"{name} must be a non-negative integer (an event id)", name) from None
    if not 0 <= value <= _MAX_POSITION:
        raise ApiError(400, f"{name} must be a non-negative integer (an event id)", name)
    return value


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


async def _workflow_exists(ctx: Any, tenant_id: str, workflow_id: uuid.UUID) -> bool:
    async with ctx.store.tenant_transaction(tenant_id) as conn:
        return await queries.get_workflow(conn, tenant_id, workflow_id) is not None


async def _run_exists(ctx: Any, tenant_id: str, workflow_id: uuid.UUID, run_id: uuid.UUID) -> bool:
    async with ctx.store.tenant_transaction(tenant_id) as conn:
        return await queries.get_run(conn, tenant_id, workflow_id, run_id) is not None


def _uuid_or_404(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, f"{what} not found") from None


@get("/stream", dependencies={"principal": Provide(stream_principal)})
async def workflow_stream(request: Request, principal: Principal, core: Core) -> ServerSentEvent:
    """Contract A: every run event of one workflow, as SSE, to its owner only (bearer or ?streamToken=)."""
    raw = request.query_params.get("workflowId")
    if raw is None or not raw.strip():
        raise ApiError(400, "workflowId is required", "workflowId")
    try:
        workflow_id = uuid.UUID(raw.strip())
    except ValueError:
        raise ApiError(400, "workflowId must be a UUID", "workflowId") from None
    after = last_event_id(request.headers, request.query_params)
    await workflows.owned(core, principal, workflow_id)
    return _sse_response(request, Scope(principal.tenant_id, workflow_id), after)


@get("/{workflow_id:str}/runs/{run_id:str}/events")
async def run_events(request: Request, principal: Principal, workflow_id: str, run_id: str) -> ServerSentEvent:
    """v2: one run's events, as SSE."""
    wid, rid = _uuid_or_404(workflow_id, "Workflow"), _uuid_or_404(run_id, "Run")
    after = last_event_id(request.headers, request.query_params)
    if not await _run_exists(request.app.state.ctx, principal.tenant_id, wid, rid):
        raise ApiError(404, "Run not found")
    return _sse_response(request, Scope(principal.tenant_id, wid, rid), after)


# WebSocket close codes (4000-4999 are the application's).
WS_TRY_AGAIN_LATER = 1013
WS_BAD_REQUEST, WS_UNAUTHORIZED, WS_NOT_FOUND = 4400, 4401, 4404


async def _ws_refuse(socket: WebSocket, code: int, status: int, message: str) -> None:
    await socket.send_json({"type": "error", "status": status, "error": message})
    await socket.close(code=code, reason=message[:120])


@websocket("/{workflow_id:str}/runs/{run_id:str}/ws")
async def run_ws(socket: WebSocket, workflow_id: str, run_id: str) -> None:
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
    if not await _run_exists(ctx, principal.tenant_id, wid, rid):
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
ws_router = Router(path="/api/v2/workflows", route_handlers=[run_ws])
routers = (workflow_router, run_router, ws_router)

