"""The assistant page (type a command, see the plan, watch it run) and the history page (every event, searched)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from libs.security.auth import Principal
from services.gateway.core import Core, authoring, insights, runs, workflows
from services.gateway.core.errors import ApiError
from services.gateway.dashboard import forms, svg
from services.gateway.dashboard.render import page, see_other


@get("/assistant")
async def show_assistant(request: Request, principal: NamedDependency[Principal]) -> Response:
    return page(request, "assistant.html", title="Assistant", errors={}, values={})


@post("/assistant")
async def run_command(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core]) -> Response:
    """Plan the command (active at once when nothing leaves Weft, else a draft awaiting approval) and, if
    active, start it and open its run; otherwise open the workflow to approve the plan."""
    form = await forms.read(request)
    try:
        workflow_id = await authoring.create_from_goal(core, principal, form.get("command"), source="assistant",
                                                       activate_if_safe=True)
        workflow = await workflows.get(core, principal, workflow_id)
        if workflow.status != "active":
            return see_other(f"/dashboard/workflows/{workflow.id}")
        run_id = await authoring.start_run(core, principal, workflow, {})
    except ApiError as exc:
        return page(request, "assistant.html", forms.status_of(exc), title="Assistant",
                    errors=forms.errors_of(exc, ("command",), "command"), values=form.values)
    return see_other(f"/dashboard/runs/{run_id}")


@get("/history")
async def history(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                  q: Annotated[str, QueryParameter(max_length=200)] = "",
                  before: Annotated[int | None, QueryParameter(ge=1, le=2**63 - 1)] = None) -> Response:
    found = await insights.history(core, principal, q, before=before)
    items = [{**dict(r), "data": msgspec.json.decode(r["data"])} for r in found]
    return page(request, "history.html", title="History", events=items, q=q,
                older=found[-1]["global_position"] if len(found) == 100 else None)


@get("/")
async def home(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core]) -> Response:
    chart = svg.runs_chart(await insights.runs_per_day(core, principal))
    recent = await insights.recent_runs(core, principal, limit=10)
    latest = await runs.latest_by_workflow(core, principal)
    return page(request, "home.html", title="Overview", chart=chart, runs=recent, workflow_count=len(latest),
                durations=svg.durations_chart(await insights.step_durations(core, principal)))


route_handlers = [show_assistant, run_command, history, home]
