"""Public API execution routes (spec D): execute an agent (workflow), its status, its results.

Runs start through the same path as every surface (core.runs.prepare_start over the Dispatcher), as the key's
actor `api_key:<key_id>`; a key sees only the runs it started (another key's or tenant's: 404).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
import nats
import structlog
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from libs.domain.row_results import row_results
from libs.security import apikeys
from libs.events.bus import CommandNotAccepted
from libs.events.db import DB_UNAVAILABLE
from libs.events.schemas import Outcome
from services.gateway import timestamps
from services.gateway.core import runs, workflows
from services.gateway.core.ids import parse_id
from services.gateway.core.workflows import Workflow
from services.gateway.commands import entity_id, now
from services.gateway.public.auth import ApiKeyPrincipal
from services.gateway.public.errors import PublicApiError, body, public_responses

log = structlog.get_logger()
MAX_CSV_ROWS = 100
# Canonical run status -> the public contract's word (DESIGN section 5).
PUBLIC_STATUS = {"pending": "pending", "running": "running", "awaiting_approval": "pending_approval",
                 "completed": "completed", "failed": "failed", "cancelled": "cancelled"}


class ExecuteAgentBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    input: dict[str, Any] = {}
    description: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


def truncate_csv(inputs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """input.csvData cut to its first 100 rows, and the warning that says so when it was longer."""
    rows = inputs.get("csvData")
    if rows is None:
        return inputs, []
    if not isinstance(rows, list):
        raise PublicApiError(400, "input.csvData must be an array of rows")
    if len(rows) <= MAX_CSV_ROWS:
        return inputs, []
    warning = f"input.csvData had {len(rows)} rows; only the first {MAX_CSV_ROWS} are used"
    return {**inputs, "csvData": rows[:MAX_CSV_ROWS]}, [warning]


def _execution_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise PublicApiError(404, "Execution not found") from None


def _shape(status: int, message: str, field: str | None) -> dict[str, Any]:
    return body(status, message if not field or field in message else f"{message} ({field})")


async def _workflow(request: Request, api_key: ApiKeyPrincipal, workflow_id: str) -> Workflow:
    wid = parse_id(workflow_id, "Workflow")
    # A workflow the key does not list is "not found", like an unknown or another tenant's one: D's 403
    # reasons are about the key itself, and a key learns nothing of its tenant's other workflows (0100).
    if str(wid) not in api_key.workflow_ids:
        raise PublicApiError(404, "Workflow not found")
    return await workflows.get(request.app.state.core, api_key.principal(), wid)


class _Quota:
    """One execute's reservation against the key's monthly quota: kept when this request started a run
    (charged once per run, however often the request is repeated), released otherwise."""

    def __init__(self, store, api_key: ApiKeyPrincipal, at: datetime):
        self.store, self.key, self.at, self.settled = store, api_key, at, False

    async def reserve(self) -> None:
        async with self.store.tenant_transaction(self.key.tenant_id) as conn:
            if not await apikeys.reserve_execution(conn, self.key.tenant_id, self.key.key_id, self.at):
                raise PublicApiError(403, "API key usage limit exceeded")

    async def charge(self, run_id: uuid.UUID) -> None:
        async with self.store.tenant_transaction(self.key.tenant_id) as conn:
            if not await apikeys.record_execution(conn, self.key.tenant_id, self.key.key_id, run_id):
                await apikeys.release_execution(conn, self.key.tenant_id, self.key.key_id, self.at)
        self.settled = True

    async def release(self) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            async with self.store.tenant_transaction(self.key.tenant_id) as conn:
                await apikeys.release_execution(conn, self.key.tenant_id, self.key.key_id, self.at)
        except (asyncpg.PostgresError, *DB_UNAVAILABLE, OSError, TimeoutError) as exc:
            # The reservation stays counted: the error is on the side of the limit, never past it.
            log.warning("quota_release_failed", key_id=str(self.key.key_id), error=f"{type(exc).__name__}: {exc}")


def _accepted(run_id: uuid.UUID, started_at: datetime, warnings: list[str]) -> dict[str, Any]:
    payload = {"executionId": str(run_id), "status": "pending", "startedAt": timestamps.iso(started_at),
               "message": "Execution started successfully"}
    if warnings:
        payload["warnings"] = warnings
    return payload


class Started(msgspec.Struct, kw_only=True, omit_defaults=True):
    executionId: str  # noqa: N815 - the contract's field names
    status: str
    startedAt: str | None  # noqa: N815
    message: str
    warnings: list[str] | None = None


class Status(msgspec.Struct, kw_only=True):
    id: str
    status: str
    startedAt: str | None  # noqa: N815
    completedAt: str | None  # noqa: N815
    error: str | None
    approvalStatus: str | None  # noqa: N815


class Results(msgspec.Struct, kw_only=True):
    id: str
    status: str
    output: dict[str, Any] | None
    error: str | None
    startedAt: str | None  # noqa: N815
    completedAt: str | None  # noqa: N815


@post("/agents/{workflow_id:str}/execute", status_code=202, responses=public_responses(409, 422))
async def execute_agent(request: Request, api_key: NamedDependency[ApiKeyPrincipal], workflow_id: FromPath[str],
                        data: JSONBody[ExecuteAgentBody] = ExecuteAgentBody()) -> Response[Started]:
    raw = await request.body()
    parsed = data
    inputs, warnings = truncate_csv(parsed.input)
    workflow = await _workflow(request, api_key, workflow_id)
    start = runs.prepare_start(workflow, inputs, api_key.actor, description=parsed.description or "",
                               field="input")
    sent: dict[str, Any] = {}

    def make(command_id: uuid.UUID):
        command = start(command_id)
        sent.update(run_id=entity_id(command_id), at=command.at)
        return command

    store = request.app.state.ctx.store
    quota = _Quota(store, api_key, now())
    await quota.reserve()

    async def render(outcome: Outcome):
        await quota.charge(runs.run_id_of(outcome))
        # 201 marks a settled answer, which the dispatcher stores for Idempotency-Key replays (a 202 it
        # would not); the contract's 202 is put back below.
        return 201, _accepted(runs.run_id_of(outcome), sent["at"], warnings)

    try:
        response = await request.app.state.dispatcher.dispatch(
            request, api_key.principal(), "executor", make, render, raw, shape=_shape)
    except (CommandNotAccepted, nats.errors.Error):
        await quota.release()  # JetStream did not take the command (503): nothing will run
        raise
    except BaseException:
        if not sent:  # failed before a command existed; otherwise it may run, so it stays counted
            await quota.release()
        raise
    if response.status_code == 202 and "executionId" not in response.content:
        # JetStream holds the command but the executor has not answered yet: the run id is already known
        # (it derives from the command id), so the caller gets it and can poll its status ("pending").
        await quota.charge(sent["run_id"])
        return Response(_accepted(sent["run_id"], sent["at"], warnings), status_code=202)
    await quota.release()  # refused, or a replayed response (Idempotency-Key): no new run was started
    if response.status_code == 201:
        return Response(response.content, status_code=202, headers=response.headers)
    return response


async def visible_run(request: Request, api_key: ApiKeyPrincipal, execution_id: str
                       ) -> tuple[uuid.UUID, asyncpg.Record | None]:
    """(id, the run) if this key started it; (id, None) if it did but the executor has not recorded the
    run yet; 404 otherwise (another key's, another tenant's, or no such run)."""
    rid = _execution_id(execution_id)
    async with request.app.state.ctx.store.tenant_transaction(api_key.tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT id, workflow_id, status, outputs::text AS outputs, error, steps::text AS steps, started_at,"
            " finished_at FROM runs WHERE tenant_id = $1 AND id = $2 AND created_by = $3",
            api_key.tenant_id, rid, api_key.actor)
        if row is None and not await apikeys.started_by_key(conn, api_key.tenant_id, api_key.key_id, rid):
            raise PublicApiError(404, "Execution not found")
    return rid, row


def approval_status(steps: dict[str, Any], run_status: str = "awaiting_approval") -> str | None:
    """From the approval steps (those that paused): pending while one waits, rejected if one was rejected,
    approved if all were approved, null when the run has none. A run that ended (cancelled, say) while a
    step waited left it undecided: "cancelled", never "pending" (docs/decisions/0100)."""
    paused = [s for s in steps.values() if isinstance(s, dict) and "approval" in s]
    if any(s.get("status") == "awaiting_approval" for s in paused):
        return "cancelled" if run_status in ("completed", "failed", "cancelled") else "pending"
    if any(s.get("status") == "failed" for s in paused):
        return "rejected"
    if any(s.get("status") == "completed" for s in paused):
        return "approved"
    return None


@get("/executions/{execution_id:str}/status", responses=public_responses())
async def execution_status(request: Request, api_key: NamedDependency[ApiKeyPrincipal],
                           execution_id: FromPath[str]) -> Status:
    rid, row = await visible_run(request, api_key, execution_id)
    if row is None:
        return Status(id=str(rid), status="pending", startedAt=None, completedAt=None, error=None,
                      approvalStatus=None)
    return Status(id=str(row["id"]), status=PUBLIC_STATUS.get(row["status"], row["status"]),
                  startedAt=timestamps.iso(row["started_at"]), completedAt=timestamps.iso(row["finished_at"]),
                  error=row["error"], approvalStatus=approval_status(msgspec.json.decode(row["steps"]), row["status"]))


def results_output(outputs: dict[str, Any], steps: dict[str, Any]) -> dict[str, Any]:
    """D's output, from the runs read model's steps (the notifier's webhooks use the same function)."""
    done = [s for s in steps.values() if isinstance(s, dict) and s.get("status") == "completed"]
    done.sort(key=lambda s: s.get("finished_at") or "")
    return row_results(outputs, [s.get("output") for s in done])


@get("/executions/{execution_id:str}/results", responses=public_responses())
async def execution_results(request: Request, api_key: NamedDependency[ApiKeyPrincipal],
                            execution_id: FromPath[str]) -> Results:
    rid, row = await visible_run(request, api_key, execution_id)
    if row is None:
        return Results(id=str(rid), status="pending", output=None, error=None, startedAt=None, completedAt=None)
    output = None
    if row["status"] == "completed":
        output = results_output(msgspec.json.decode(row["outputs"] or "{}"), msgspec.json.decode(row["steps"]))
    return Results(id=str(row["id"]), status=PUBLIC_STATUS.get(row["status"], row["status"]), output=output,
                   error=row["error"], startedAt=timestamps.iso(row["started_at"]),
                   completedAt=timestamps.iso(row["finished_at"]))


route_handlers = [execute_agent, execution_status, execution_results]
