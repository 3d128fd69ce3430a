"""v2 run routes: execute, list, detail (also as of a past event), terminate."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from libs.domain.run_view import RunView, evolve, initial
from libs.events.schemas import Outcome
from libs.events.schemas.run import StartRun
from libs.security.auth import Principal
from services.gateway.core import Core, runs, status, workflows
from services.gateway.core.errors import NotFound
from services.gateway.errors import V2Error, accepted_response, responses
from services.gateway.timestamps import iso
from services.gateway.v2.shapes import ExecuteBody, Message, RunBody, RunEnvelope, RunList, RunStatusWord, run_body

CONFLICT = ResponseSpec(
    data_container=V2Error, generate_examples=False,
    description="Conflict: another run of this workflow is active (set the definition's `\"concurrency\": "
                "\"unlimited\"` to let runs overlap), or the workflow is not active.")
MAX_VERSION = 2**31 - 1  # versions are int4; anything larger means "the latest" anyway


@post("/{workflow_id:uuid}/execute", status_code=201,
      responses={**responses(V2Error, 404, 422, 429), **accepted_response(), 409: CONFLICT},
      description="Start a run. A workflow allows one active run (a DESIGN rule E does not mention): while "
                  "another run of it is pending, running or awaiting approval, execute answers 409, unless the "
                  "definition sets `\"concurrency\": \"unlimited\"` at its top level, which lets runs overlap. "
                  "409 too when the workflow is not active (archived).")
async def execute_workflow(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                           workflow_id: FromPath[uuid.UUID],
                           data: JSONBody[ExecuteBody] = ExecuteBody()) -> Response[RunEnvelope]:
    workflow = await workflows.get(core, principal, workflow_id)
    sent: list[StartRun] = []
    keyed = "idempotency-key" in request.headers

    async def render(outcome: Outcome):
        # The run as created (its first event, RunCreated), not whatever it has become since: a quick run
        # may be over before the reply arrives. Its progress is GET .../runs/:runId. Without an
        # Idempotency-Key the command id is new, so the run is the one this command created: its RunCreated is
        # the command's own. With one, an earlier request may have created it: read it.
        if not keyed:
            view = evolve(initial, sent[-1].created())
        elif (view := await runs.view(core, principal.tenant_id, runs.run_id_of(outcome), 1)) is None:
            raise NotFound("Run")
        body = _view_body(view)
        body.version = None
        return 201, RunEnvelope(success=True, run=body)

    return await runs.start(core, request, principal, workflow, data.inputs, render,
                            await request.body(), on_command=sent.append)


@get("/{workflow_id:uuid}/runs", responses=responses(V2Error, 404, 429))
async def list_runs(principal: NamedDependency[Principal], core: NamedDependency[Core],
                    workflow_id: FromPath[uuid.UUID], status: FromQuery[RunStatusWord | None] = None,
                    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
                    offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0) -> RunList:
    workflow = await workflows.get(core, principal, workflow_id)
    statuses = _statuses(status)
    found, total = await runs.list_page(core, principal, workflow.id, statuses=statuses, limit=limit, offset=offset)
    return RunList(success=True, runs=[run_body(r) for r in found], count=total)


def _statuses(word: str | None) -> list[str] | None:
    return status.canonical("v2", word) if word else None


def _view_body(view: RunView) -> RunBody:
    """A folded run in the read model's shape, plus the number of events folded."""
    return RunBody(id=str(view.run_id), workflow_id=str(view.workflow_id), status=status.word(view.status, "v2"),
                   inputs=view.inputs, outputs=view.outputs, error=view.error, started_at=iso(view.started_at),
                   finished_at=iso(view.finished_at), version=view.version)


@get("/{workflow_id:uuid}/runs/{run_id:uuid}", responses=responses(V2Error, 404, 429))
async def get_run(principal: NamedDependency[Principal], core: NamedDependency[Core], workflow_id: FromPath[uuid.UUID],
                  run_id: FromPath[uuid.UUID],
                  at_version: Annotated[int | None, QueryParameter(ge=1, description=(
                      "Fold only the run's first N events; past its last event, the run as it ended"))] = None
                  ) -> RunEnvelope:
    """The run from the read model, or with `?at_version=N` the run folded from its first N events.

    N past the run's last event is not an error: the answer is the state after the last event, and
    "version" says how many events were folded, so a client sees where the run's history ends.
    """
    if at_version is not None:
        view = await runs.view(core, principal.tenant_id, run_id, min(at_version, MAX_VERSION))
        if view is None or view.workflow_id != workflow_id:
            raise NotFound("Run")
        return RunEnvelope(success=True, run=_view_body(view))
    run = await runs.find(core, principal.tenant_id, run_id, workflow_id=workflow_id)
    if run is None:
        raise NotFound("Run")
    return RunEnvelope(success=True, run=run_body(run))


@delete("/{workflow_id:uuid}/runs/{run_id:uuid}", status_code=200,
        responses={**responses(V2Error, 404, 409, 429), **accepted_response()})
async def terminate_run(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                        workflow_id: FromPath[uuid.UUID], run_id: FromPath[uuid.UUID]) -> Response[Message]:
    run = await runs.find(core, principal.tenant_id, run_id, workflow_id=workflow_id)
    if run is None:
        raise NotFound("Run")

    async def render(_: Outcome):
        return 200, Message(success=True, message="Workflow run terminated successfully")

    return await runs.stop(core, request, principal, run.id, run.status, render, terminate=True,
                           reason="Terminated by user", word=status.word(run.status, "v2"))
