"""The console contract (spec B): goal -> LLM plan -> draft awaiting approval; workflows with steps and runs."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from libs.domain import cron
from libs.events.schemas import Outcome
from libs.events.schemas.plan import CreateWorkflowFromGoal, PlanGenerated, ReviseWorkflowPlan
from libs.security.auth import Principal
from services.gateway.commands import entity_id, now
from services.gateway.console.shapes import (
    STOPPED,
    Created,
    GoalBody,
    PlanDiff,
    PlannerInfo,
    PlanVersion,
    PlanVersions,
    RunStarted,
    RunStopped,
    StepsBody,
    StepsUpdated,
    WorkflowDetail,
    WorkflowListItem,
    run_item,
    steps_of,
    workflow_fields,
)
from services.gateway.core import Core, runs, status, workflows
from services.gateway.core.errors import ApiError
from services.gateway.core.plans import diff_plans, plan_event, plan_versions
from services.gateway.errors import PlainError, accepted_response, plain_error_body, responses
from services.gateway.timestamps import iso

COMMAND = {**responses(PlainError, 404, 409, 422), **accepted_response()}
READ = responses(PlainError, 404)


def _check_schedule(schedule: str | None) -> None:
    """The cron the scheduler will attach once the plan is approved (in UTC): refused now, not then."""
    if schedule is None:
        return
    try:
        cron.parse(schedule)
    except cron.CronError as exc:
        raise ApiError(400, f"schedule {exc}", "schedule") from None


@post("/", status_code=201, responses=COMMAND)
async def create_from_goal(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                           data: JSONBody[GoalBody]) -> Response[Created]:
    goal = data.goal.strip()
    if len(goal) < 5:
        raise ApiError(400, "goal must be at least 5 characters", "goal")
    _check_schedule(data.schedule)

    def make(command_id: uuid.UUID) -> CreateWorkflowFromGoal:
        return CreateWorkflowFromGoal(workflow_id=entity_id(command_id), goal=goal, schedule=data.schedule,
                                      source="console", created_by=principal.user_id, at=now(),
                                      requester_email=principal.email)

    async def render(outcome: Outcome):
        workflow = await workflows.get(core, principal, runs.run_id_of(outcome))
        plan = await plan_event(core.store, principal.tenant_id, outcome.stream_id)
        message = "Plan generated and saved as a draft; approve it to activate the workflow."
        if isinstance(plan, PlanGenerated) and plan.source == "offline-planner":
            message += " Planned by the offline planner (no LLM configured): review the steps."
        return 201, Created(
            workflowId=str(workflow.id), title=workflow.name, steps=steps_of(workflow.definition),
            status=workflow.status, message=message, schedule=workflow.schedule, planVersion=workflow.plan_version,
            planHash=workflow.plan_hash, estimatedCostUsd=plan.est_cost_usd if plan else 0.0,
            outboundSteps=plan.outbound_steps if plan else [],
            planner=PlannerInfo(source=plan.source, model=plan.model, confidence=plan.confidence,
                                cached=plan.cached) if plan else None)

    return await core.dispatcher.dispatch(request, principal, "planner", make, render, await request.body(),
                                          timeout_s=core.settings.planning_timeout_s, shape=plain_error_body)


@get("/", responses=responses(PlainError))
async def list_workflows(principal: NamedDependency[Principal], core: NamedDependency[Core]) -> list[WorkflowListItem]:
    found, _ = await workflows.list_page(core, principal, limit=500)
    latest = await runs.latest_by_workflow(core, principal)
    return [WorkflowListItem(**workflow_fields(w), latestRun=run_item(latest[w.id]) if w.id in latest else None)
            for w in found]


@get("/{workflow_id:uuid}", responses=READ)
async def get_workflow(principal: NamedDependency[Principal], core: NamedDependency[Core],
                       workflow_id: FromPath[uuid.UUID]) -> WorkflowDetail:
    workflow = await workflows.get(core, principal, workflow_id)
    found, _ = await runs.list_page(core, principal, workflow.id, limit=200, newest="run_number", total=False)
    return WorkflowDetail(**workflow_fields(workflow), workflowSteps=steps_of(workflow.definition),
                          workflowRuns=[run_item(r) for r in found])


@post("/{workflow_id:uuid}/steps", status_code=200, responses=COMMAND)
async def edit_steps(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                     workflow_id: FromPath[uuid.UUID], data: JSONBody[StepsBody]) -> Response[StepsUpdated]:
    workflow = await workflows.get(core, principal, workflow_id)

    def make(_: uuid.UUID) -> ReviseWorkflowPlan:
        return ReviseWorkflowPlan(workflow_id=workflow.id, steps=[_step(s) for s in data.steps],
                                  revised_by=principal.user_id, at=now(), requester_email=principal.email)

    async def render(outcome: Outcome):
        fresh = await workflows.get(core, principal, workflow.id)
        return 200, StepsUpdated(workflowId=str(fresh.id), status=fresh.status, planVersion=fresh.plan_version,
                                 planHash=fresh.plan_hash, steps=steps_of(fresh.definition),
                                 message="Plan updated; approval is requested for this version.")

    return await core.dispatcher.dispatch(request, principal, "planner", make, render, await request.body(),
                                          shape=plain_error_body)


def _step(step) -> dict:
    return msgspec.to_builtins(step)


@get("/{workflow_id:uuid}/plans", responses=READ)
async def list_plan_versions(principal: NamedDependency[Principal], core: NamedDependency[Core],
                             workflow_id: FromPath[uuid.UUID]) -> PlanVersions:
    workflow = await workflows.get(core, principal, workflow_id)
    versions = await plan_versions(core.store, principal.tenant_id, workflow.id)
    return PlanVersions(workflowId=str(workflow.id), versions=[
        PlanVersion(version=v["version"], planHash=v["planHash"], source=v["source"], model=v.get("model"),
                    revisedBy=v.get("revisedBy"), createdAt=iso(v["createdAt"]), steps=steps_of(v["definition"]))
        for v in versions])


@get("/{workflow_id:uuid}/plans/diff", responses=READ)
async def diff_plan_versions(
    principal: NamedDependency[Principal], core: NamedDependency[Core], workflow_id: FromPath[uuid.UUID],
    to: Annotated[int | None, QueryParameter(description="plan version (default: the latest)")] = None,
    from_: Annotated[int | None, QueryParameter(name="from", description="plan version (default: to - 1)")] = None,
) -> PlanDiff:
    workflow = await workflows.get(core, principal, workflow_id)
    versions = {v["version"]: v for v in await plan_versions(core.store, principal.tenant_id, workflow.id)}
    if not versions:
        raise ApiError(404, "This workflow has no plan versions")
    to = max(versions) if to is None else to
    frm = to - 1 if from_ is None else from_
    for name, version in (("from", frm), ("to", to)):
        if version not in versions:
            raise ApiError(404, f"Plan version {version} not found", name)
    return PlanDiff(workflowId=str(workflow.id), from_=frm, to=to, fromHash=versions[frm]["planHash"],
                    toHash=versions[to]["planHash"],
                    **diff_plans(versions[frm]["definition"], versions[to]["definition"]))


@post("/{workflow_id:uuid}/run", status_code=201, responses=COMMAND,
      description="Start a run; 422 unless the workflow is active, 409 while another run is active.")
async def run_workflow(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                       workflow_id: FromPath[uuid.UUID]) -> Response[RunStarted]:
    workflow = await workflows.get(core, principal, workflow_id)

    async def render(outcome: Outcome):
        run = await runs.find(core, principal.tenant_id, runs.run_id_of(outcome))
        return 201, RunStarted(runId=run.run_number if run else None, conversationId=str(runs.run_id_of(outcome)),
                               message="Workflow run started")

    return await runs.start(core, request, principal, workflow, {}, render, shape=plain_error_body)


@post("/{workflow_id:uuid}/runs/{run_id:str}/stop", status_code=200, responses=COMMAND)
async def stop_run(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                   workflow_id: FromPath[uuid.UUID], run_id: FromPath[str]) -> Response[RunStopped]:
    """Terminate a run named by its number (or uuid); the console then shows it failed, "Stopped by user"."""
    workflow = await workflows.get(core, principal, workflow_id)
    run = await runs.get(core, principal, workflow.id, run_id)

    async def render(_: Outcome):
        return 200, RunStopped(message="Run stopped", runId=run.run_number, status="failed", error=STOPPED)

    return await runs.stop(core, request, principal, run.id, run.status, render, terminate=True, reason=STOPPED,
                           word=f"{status.word(run.status, 'console')} (run {run.run_number})",
                           shape=plain_error_body)
