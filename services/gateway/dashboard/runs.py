"""Dashboard pages for runs: list with a status filter and a chart, run detail with a live timeline (SSE),
node states, logs, inputs and outputs, and a slider showing the run as of any past event (`to_version`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from libs.events.schemas.registry import event_of
from libs.security.auth import Principal
from services.gateway.core import Core, authoring, inbox, insights, runs, status, workflows
from services.gateway.core.errors import ApiError, NotFound
from services.gateway.dashboard import forms, svg
from services.gateway.dashboard.render import html, page, see_other
# The stream feed (replay then live, exact by position) is the API's; only these names are used from it.
from services.gateway.streams import EventFeed, Reconnect, Scope, StreamEvent

STATUSES = (*status.ACTIVE, *status.TERMINAL)


@get("/runs")
async def list_runs(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                    status: Annotated[str, QueryParameter(max_length=30)] = "",
                    q: Annotated[str, QueryParameter(max_length=200)] = "") -> Response:
    errors = {}
    if status and status not in STATUSES:
        errors, status = {"status": "Choose a listed status"}, ""
    found = await insights.recent_runs(core, principal, run_status=status or None, q=q)
    chart = svg.runs_chart(await insights.runs_per_day(core, principal))
    return page(request, "runs.html", 400 if errors else 200, title="Runs", runs=found, status=status, q=q,
                statuses=STATUSES, chart=chart, errors=errors)


async def _run(core: Core, principal: Principal, run_id: uuid.UUID) -> runs.Run:
    run = await runs.find(core, principal.tenant_id, run_id)
    if run is None:
        raise NotFound("Run")
    return run


def _state(request: Request, view: Any, latest: int, live: bool, nodes: list[dict[str, Any]]) -> str:
    """Status, slider, the step graph coloured by state, node states, inputs, outputs and logs."""
    states = {sid: node.state.lower() for sid, node in view.node_states.items()}
    return html("run_state.html", request, view=view, latest=latest, live=live,
                graph=svg.plan_graph({"nodes": nodes}, states))


@get("/runs/{run_id:uuid}")
async def run_detail(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                     run_id: FromPath[uuid.UUID]) -> Response:
    run = await _run(core, principal, run_id)
    view = await runs.view(core, principal.tenant_id, run.id)
    workflow_name = await _workflow_name(core, principal, run.workflow_id)
    pending = await inbox.pending(core, principal, run.id)
    nodes = await _nodes(core, principal, run)
    return page(request, "run.html", title=f"Run {run.run_number} of {workflow_name}", run=run, view=view,
                workflow_name=workflow_name, state=_state(request, view, view.version, True, nodes), pending=pending,
                live=run.status not in status.TERMINAL)


async def _workflow_name(core: Core, principal: Principal, workflow_id: uuid.UUID) -> str:
    found = await workflows.find(core, principal.tenant_id, workflow_id)
    return found.name if found else "a deleted workflow"


async def _nodes(core: Core, principal: Principal, run: runs.Run) -> list[dict[str, Any]]:
    """The definition the run started with (RunCreated carries it), so an edited plan draws the right graph."""
    recorded = await core.store.read_stream(principal.tenant_id, f"run-{run.id}", to_version=1)
    first = event_of(recorded[0]) if recorded else None
    return list(getattr(first, "definition", {}).get("nodes", [])) if first is not None else []


@get("/runs/{run_id:uuid}/at")
async def run_as_of(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                    run_id: FromPath[uuid.UUID], version: Annotated[int, QueryParameter(ge=1, le=10**9)]) -> Response:
    """The run as it was right after its `version`th event (a fragment for the slider)."""
    run = await _run(core, principal, run_id)
    latest = await runs.view(core, principal.tenant_id, run.id)
    view = await runs.view(core, principal.tenant_id, run.id, to_version=min(version, latest.version))
    nodes = await _nodes(core, principal, run)
    return Response(_state(request, view, latest.version, False, nodes), media_type="text/html")


def _line(message: dict[str, Any]) -> str:
    kind, data = message.get("type"), message.get("data") or {}
    step = message.get("stepId")
    if kind == "step_start":
        return f"Step {step} started (attempt {data.get('attempt', 1)})"
    if kind == "step_complete":
        return f"Step {step} completed"
    if kind == "step_error":
        return f"Step {step} failed: {data.get('error', '')}"
    if kind == "workflow_complete":
        return f"Run {data.get('status')}" + (f": {data['error']}" if data.get("error") else "")
    return f"{message.get('eventType')}" + (f" ({step})" if step else "")


async def _timeline(request: Request, core: Core, principal: Principal, run: runs.Run, after: int
                    ) -> AsyncIterator[ServerSentEventMessage]:
    """Each event as a timeline item, then the run's state folded to it; the stream ends with the run."""
    feed = EventFeed(request.app.state.ctx, Scope(principal.tenant_id, run.workflow_id, run.id), after)
    nodes = await _nodes(core, principal, run)
    async for item in feed:
        if isinstance(item, Reconnect):
            return  # the browser reconnects with Last-Event-ID and misses nothing
        if not isinstance(item, StreamEvent):
            continue
        message = item.message
        item_html = html("timeline_item.html", request, line=_line(message), message=message)
        yield ServerSentEventMessage(id=item.position, event="timeline", data=item_html)
        view = await runs.view(core, principal.tenant_id, run.id)
        yield ServerSentEventMessage(event="state", data=_state(request, view, view.version, True, nodes))
        if message.get("type") == "workflow_complete":
            yield ServerSentEventMessage(event="done", data="done")
            return


@get("/runs/{run_id:uuid}/events")
async def run_events(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                     run_id: FromPath[uuid.UUID]) -> ServerSentEvent:
    run = await _run(core, principal, run_id)
    raw = request.headers.get("last-event-id", "").strip()
    after = int(raw) if raw.isdigit() and len(raw) < 19 else 0
    return ServerSentEvent(_timeline(request, core, principal, run, after))


@post("/runs/{run_id:uuid}/stop")
async def stop_run(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                   run_id: FromPath[uuid.UUID]) -> Response:
    run = await _run(core, principal, run_id)
    try:
        await authoring.stop_run(core, principal, run)
    except ApiError as exc:
        return page(request, "error.html", forms.status_of(exc), title="Run not stopped", message=exc.message)
    return see_other(f"/dashboard/runs/{run.id}")


route_handlers = [list_runs, run_detail, run_as_of, run_events, stop_run]
