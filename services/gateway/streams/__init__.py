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

Modules, one job each: messages (a run event as a stream message), feed (replay then live, each event once),
heartbeats, resume (where a stream starts, what exists), sse and websocket (the transports and their routes).
"""

from __future__ import annotations

from services.gateway.streams.feed import MAX_BUFFER, NATS_CHECK_S, REPLAY_PAGE, EventFeed, Scope
from services.gateway.streams.heartbeats import with_heartbeats
from services.gateway.streams.messages import HEARTBEAT, Connected, Reconnect, StreamEvent, run_message
from services.gateway.streams.resume import last_event_id
from services.gateway.streams.sse import run_events, run_router, sse_messages, workflow_router, workflow_stream
from services.gateway.streams.websocket import run_ws, ws_router

routers = (workflow_router, run_router, ws_router)

__all__ = [
    "HEARTBEAT", "MAX_BUFFER", "NATS_CHECK_S", "REPLAY_PAGE", "Connected", "EventFeed", "Reconnect", "Scope",
    "StreamEvent", "last_event_id", "routers", "run_events", "run_message", "run_router", "run_ws",
    "sse_messages", "with_heartbeats", "workflow_router", "workflow_stream", "ws_router",
]
