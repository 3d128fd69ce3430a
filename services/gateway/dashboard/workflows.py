"""Dashboard pages for workflows: list and search, create (from a goal or a definition), detail with the plan
drawn as a graph, plan versions and their diff, what was decided, approve or reject a draft, run it."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from libs.security.auth import Principal
from services.gateway import approvals as links
from services.gateway.core import Core, authoring, inbox, insights, plans, runs, schedules, workflows
from services.gateway.core.errors import ApiError
from services.gateway.dashboard import forms, svg
from services.gateway.dashboard.render import page, see_other

Query = Annotated[str, QueryParameter(max_length=200)]


async def _list_page(request: Request, principal: Principal, core: Core, q: str = "", status: str = "",
                     errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
                     code: int = 200) -> Response:
    found = await workflows.search(core, principal, q, status=status or None)
    latest = await runs.latest_by_workflow(core, principal)
    return page(request, "workflows.html", code, title="Workflows", workflows=found, latest=latest, q=q,
                status=status, statuses=workflows.STATUSES, errors=errors or {}, values=values or {})


@get("/workflows")
async def list_workflows(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                         q: Query = "", status: Annotated[str, QueryParameter(max_length=20)] = "") -> Response:
    if status and status not in workflows.STATUSES:
        return await _list_page(request, principal, core, q, "", {"status": "Choose a listed status"}, code=400)
    return await _list_page(request, principal, core, q, status)


@post("/workflows")
async def create_workflow(request: Request, principal: NamedDependency[Principal],
                          core: NamedDependency[Core]) -> Response:
    form = await forms.read(request)
    kind = form.get("kind", "goal")
    try:
        if kind == "definition":
            try:
                definition = msgspec.json.decode(form.get("definition").encode() or b"null")
            except msgspec.DecodeError as exc:
                raise ApiError(400, f"definition is not valid JSON: {exc}", "definition") from None
            workflow_id = await authoring.create_from_definition(core, principal, form.get("name"), definition)
        else:
            workflow_id = await authoring.create_from_goal(core, principal, form.get("goal"))
    except ApiError as exc:
        fields = ("name", "definition") if kind == "definition" else ("goal",)
        return await _list_page(request, principal, core, errors=forms.errors_of(exc, fields, fields[-1]),
                                values=form.values, code=forms.status_of(exc))
    return see_other(f"/dashboard/workflows/{workflow_id}")


async def _detail(request: Request, principal: Principal, core: Core, workflow_id: uuid.UUID, *,
                  diff_from: int | None = None, diff_to: int | None = None, errors: dict[str, str] | None = None,
                  notice: str = "", code: int = 200) -> Response:
    workflow = await workflows.get(core, principal, workflow_id)
    versions = await plans.plan_versions(core.store, principal.tenant_id, workflow.id)
    by_number = {v["version"]: v for v in versions}
    diff = None
    to = diff_to if diff_to in by_number else (max(by_number) if by_number else None)
    frm = diff_from if diff_from in by_number else (to - 1 if to is not None else None)
    if to is not None and frm in by_number and frm != to:
        diff = plans.diff_plans(by_number[frm]["definition"], by_number[to]["definition"])
    found, _ = await runs.list_page(core, principal, workflow.id, limit=20, newest="run_number", total=False)
    return page(request, "workflow.html", code, title=workflow.name, workflow=workflow,
                graph=svg.plan_graph(workflow.definition), versions=versions, diff=diff, diff_from=frm, diff_to=to,
                decisions=await plans.decisions(core.store, principal.tenant_id, workflow.id), runs=found,
                step_decisions=await inbox.decisions(core, principal, workflow.id),
                schedules=await schedules.list_for(core, principal, workflow.id),
                durations=svg.durations_chart(await insights.step_durations(core, principal, workflow.id)),
                errors=errors or {}, notice=notice)


@get("/workflows/{workflow_id:uuid}")
async def workflow_detail(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                          workflow_id: FromPath[uuid.UUID],
                          from_: Annotated[int | None, QueryParameter(name="from", ge=1, le=10**6)] = None,
                          to: Annotated[int | None, QueryParameter(ge=1, le=10**6)] = None) -> Response:
    return await _detail(request, principal, core, workflow_id, diff_from=from_, diff_to=to)


@post("/workflows/{workflow_id:uuid}/approve")
async def approve_plan(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                       workflow_id: FromPath[uuid.UUID]) -> Response:
    form = await forms.read(request)
    workflow = await workflows.get(core, principal, workflow_id)
    return await _decide(request, principal, core, workflow, plans.approve(
        core, principal, workflow, form.get("plan_hash"), client_ip=links.client_ip(request),
        user_agent=links.user_agent(request)))


@post("/workflows/{workflow_id:uuid}/reject")
async def reject_plan(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                      workflow_id: FromPath[uuid.UUID]) -> Response:
    workflow = await workflows.get(core, principal, workflow_id)
    return await _decide(request, principal, core, workflow, plans.reject(core, principal, workflow))


async def _decide(request: Request, principal: Principal, core: Core, workflow, decision) -> Response:
    """Await the plan decision; back to the workflow's page, with the refusal next to the buttons."""
    try:
        await decision
    except ApiError as exc:
        return await _detail(request, principal, core, workflow.id, errors={"decision": exc.message},
                             code=forms.status_of(exc))
    return see_other(f"/dashboard/workflows/{workflow.id}")


@post("/workflows/{workflow_id:uuid}/run")
async def run_workflow(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                       workflow_id: FromPath[uuid.UUID]) -> Response:
    form = await forms.read(request)
    workflow = await workflows.get(core, principal, workflow_id)
    try:
        try:
            inputs: Any = msgspec.json.decode(form.get("inputs", "").strip().encode() or b"{}")
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"inputs are not valid JSON: {exc}", "inputs") from None
        if not isinstance(inputs, dict):
            raise ApiError(400, "inputs must be a JSON object", "inputs")
        run_id = await authoring.start_run(core, principal, workflow, inputs)
    except ApiError as exc:
        return await _detail(request, principal, core, workflow.id, errors=forms.errors_of(exc, ("inputs",), "run"),
                             code=forms.status_of(exc))
    return see_other(f"/dashboard/runs/{run_id}")


route_handlers = [list_workflows, create_workflow, workflow_detail, approve_plan, reject_plan, run_workflow]
