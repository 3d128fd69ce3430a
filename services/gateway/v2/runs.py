"""v2 run routes: execute, list, detail (also as of a past event), terminate."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post

from libs.security.auth import Principal
from libs.domain.run_view import RunView, evolve, initial
from libs.events.schemas import Outcome
from libs.events.schemas.run import StartRun, TerminateRun
from services.gateway import queries, runs
from services.gateway.bodies import ExecuteBody, decode_body
from services.gateway.commands import now
from services.gateway.errors import ApiError
from services.gateway.v2.common import _ctx, _int_param, _uuid, _workflow_or_404


@post("/{workflow_id:str}/execute")
async def execute_workflow(request: Request, principal: Principal, workflow_id: str) -> Response:
    raw = await request.body()
    body = decode_body(raw, ExecuteBody, empty_ok=True)
    row = await _workflow_or_404(request, principal, workflow_id)
    if row["status"] != "active":
        raise ApiError(409, f"Workflow is {row['status']}; only active workflows can be executed", "status")
    ctx, dispatcher = _ctx(request)
    definition = msgspec.json.decode(row["definition"])
    inputs = runs.prepare_inputs(definition, body.inputs)
    make = runs.start_command(row["id"], row["stream_version"], definition, inputs, principal.user_id)
    sent: list[StartRun] = []
    keyed = "idempotency-key" in request.headers

    def make_and_keep(command_id):
        sent.append(make(command_id))
        return sent[-1]

    async def render(outcome: Outcome):
        # The run as created (its first event, RunCreated), not whatever it has become since: a quick run
        # may be over before the reply arrives. Its progress is GET .../runs/:runId. Without an
        # Idempotency-Key the command id is new, so the run is the one this command created: its RunCreated is
        # the command's own. With one, an earlier request may have created it: read it.
        if not keyed:
            view = evolve(initial, sent[-1].created())
        elif (view := await runs.load_view(ctx.store, principal.tenant_id, runs.run_id_of(outcome), 1)) is None:
            raise ApiError(404, "Run not found")
        run = _view_json(view)
        del run["version"]
        return 201, {"success": True, "run": run}

    return await dispatcher.dispatch(request, principal, "executor", make_and_keep, render, raw)


@get("/{workflow_id:str}/runs")
async def list_runs(request: Request, principal: Principal, workflow_id: str) -> dict[str, Any]:
    status = request.query_params.get("status")
    if status is not None and status not in queries.V2_STATUS_FILTER:
        raise ApiError(400, "status must be one of: running, completed, failed, terminated", "status")
    limit = _int_param(request, "limit", 50, 1, 500)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    row = await _workflow_or_404(request, principal, workflow_id)
    ctx, _ = _ctx(request)
    statuses = queries.V2_STATUS_FILTER[status] if status else None
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        rows, total = await queries.list_runs(conn, principal.tenant_id, row["id"], statuses, limit, offset)
    return {"success": True, "runs": [queries.run_json(r) for r in rows], "count": total}


def _view_json(view: RunView) -> dict[str, Any]:
    """A folded run in the same shape as queries.run_json, plus the number of events folded."""
    return {
        "id": str(view.run_id), "workflow_id": str(view.workflow_id),
        "status": queries.V2_RUN_STATUS.get(view.status, view.status), "inputs": view.inputs,
        "outputs": view.outputs, "error": view.error, "started_at": queries.iso(view.started_at),
        "finished_at": queries.iso(view.finished_at), "version": view.version,
    }


def _at_version(request: Request) -> int | None:
    raw = request.query_params.get("at_version")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ApiError(400, "at_version must be a positive integer (an event number of the run)", "at_version")
    return min(value, 2**31 - 1)  # versions are int4; anything larger means "the latest" anyway


@get("/{workflow_id:str}/runs/{run_id:str}")
async def get_run(request: Request, principal: Principal, workflow_id: str, run_id: str) -> dict[str, Any]:
    """The run from the read model, or with `?at_version=N` the run folded from its first N events.

    N past the run's last event is not an error: the answer is the state after the last event, and
    "version" says how many events were folded, so a client sees where the run's history ends.
    """
    at_version = _at_version(request)
    wid, rid = _uuid(workflow_id, "Workflow"), _uuid(run_id, "Run")
    ctx, _ = _ctx(request)
    if at_version is not None:
        view = await runs.load_view(ctx.store, principal.tenant_id, rid, at_version)
        if view is None or view.workflow_id != wid:
            raise ApiError(404, "Run not found")
        return {"success": True, "run": _view_json(view)}
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        row = await queries.get_run(conn, principal.tenant_id, wid, rid)
    if row is None:
        raise ApiError(404, "Run not found")
    return {"success": True, "run": queries.run_json(row)}


@delete("/{workflow_id:str}/runs/{run_id:str}", status_code=200)
async def terminate_run(request: Request, principal: Principal, workflow_id: str, run_id: str) -> Response:
    wid, rid = _uuid(workflow_id, "Workflow"), _uuid(run_id, "Run")
    ctx, dispatcher = _ctx(request)
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        row = await queries.get_run(conn, principal.tenant_id, wid, rid)
    if row is None:
        raise ApiError(404, "Run not found")
    if row["status"] in runs.TERMINAL_STATUSES:
        word = queries.V2_RUN_STATUS[row["status"]]
        raise ApiError(400, f"Run is already {word}; only a running run can be terminated", "status")

    async def render(_: Outcome):
        return 200, {"success": True, "message": "Workflow run terminated successfully"}

    return await dispatcher.dispatch(request, principal, "executor", lambda _: TerminateRun(
        run_id=rid, reason="Terminated by user", requested_by=principal.user_id, at=now()), render)
