"""Run use cases: start, stop, read, list. Every surface that starts or stops a run comes through here."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response

from libs.domain import inputs as inputs_rule
from libs.domain.definition import refuse_nul
from libs.domain.run_view import RunView, fold_run
from libs.events.errors import DomainError
from libs.events.schemas import Outcome
from libs.events.schemas.run import CancelRun, StartRun, TerminateRun
from libs.security.auth import Principal
from services.gateway.commands import Render, entity_id, now
from services.gateway.core import Core, status
from services.gateway.core.errors import RUN_FINISHED, ApiError, NotFound
from services.gateway.core.workflows import Workflow, require_active


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """A row of the runs read model, JSON columns decoded."""

    id: uuid.UUID
    workflow_id: uuid.UUID
    run_number: int
    status: str  # canonical (status.py)
    inputs: dict[str, Any]
    outputs: Any
    error: str | None
    steps: dict[str, Any]
    created_by: str
    started_at: datetime
    finished_at: datetime | None


_COLUMNS = ("id, workflow_id, run_number, status, inputs::text AS inputs, outputs::text AS outputs, error,"
            " steps::text AS steps, created_by, started_at, finished_at")


def _run(row: asyncpg.Record) -> Run:
    values = dict(row)
    for key in ("inputs", "outputs", "steps"):
        values[key] = None if values[key] is None else msgspec.json.decode(values[key])
    return Run(**values)


async def find(core: Core, tenant_id: str, run_id: uuid.UUID, *, workflow_id: uuid.UUID | None = None,
               created_by: str | None = None) -> Run | None:
    """The run if the tenant has it (and it belongs to `workflow_id` / was started by `created_by` when given)."""
    async with core.store.tenant_transaction(tenant_id) as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM runs WHERE tenant_id = $1 AND id = $2"
            " AND ($3::uuid IS NULL OR workflow_id = $3) AND ($4::text IS NULL OR created_by = $4)",
            tenant_id, run_id, workflow_id, created_by)
    return None if row is None else _run(row)


async def get(core: Core, principal: Principal, workflow_id: uuid.UUID, run_ref: str, what: str = "Run") -> Run:
    """A workflow's run named by its uuid or, as the console names runs, its number; 404 otherwise."""
    number = int(run_ref) if run_ref.isascii() and run_ref.isdigit() and len(run_ref) < 10 else None
    try:
        run_id = None if number is not None else uuid.UUID(run_ref)
    except ValueError:
        raise NotFound(what) from None
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM runs WHERE tenant_id = $1 AND workflow_id = $2 AND (run_number = $3 OR id = $4)",
            principal.tenant_id, workflow_id, number, run_id)
    if row is None:
        raise NotFound(what)
    return _run(row)


async def list_page(core: Core, principal: Principal, workflow_id: uuid.UUID, *, statuses: list[str] | None = None,
                    limit: int = 200, offset: int = 0, newest: str = "started_at", total: bool = True
                    ) -> tuple[list[Run], int | None]:
    """A workflow's runs, newest first (by start time, or by number for the console), with the total (None when
    `total` is False: counting reads every run of the workflow, so only a caller that shows it asks).

    The page is chosen on the index alone (runs_tenant_workflow_page, an index-only scan that also filters by
    status), and only its rows are read: a deep offset skips index entries instead of fetching and sorting every
    run before it (docs/decisions/0036)."""
    order = {"started_at": "started_at DESC, id", "run_number": "run_number DESC"}[newest]
    where = "tenant_id = $1 AND workflow_id = $2 AND ($3::text[] IS NULL OR status = ANY($3))"
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM runs WHERE id IN (SELECT id FROM runs WHERE {where} ORDER BY {order}"
            f" LIMIT $4 OFFSET $5) ORDER BY {order}", principal.tenant_id, workflow_id, statuses, limit, offset)
        count = None
        if total and rows and len(rows) < limit:  # the last page: the total follows without counting
            count = offset + len(rows)
        elif total:
            count = await conn.fetchval(f"SELECT count(*) FROM runs WHERE {where}", principal.tenant_id, workflow_id,
                                        statuses)
    return [_run(r) for r in rows], count


async def latest_by_workflow(core: Core, principal: Principal) -> dict[uuid.UUID, Run]:
    """Each workflow's most recent run."""
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(f"SELECT DISTINCT ON (workflow_id) {_COLUMNS} FROM runs WHERE tenant_id = $1"
                                " ORDER BY workflow_id, run_number DESC", principal.tenant_id)
    return {row["workflow_id"]: _run(row) for row in rows}


async def active(core: Core, tenant_id: str, workflow_id: uuid.UUID) -> list[Run]:
    async with core.store.tenant_transaction(tenant_id) as conn:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM runs WHERE tenant_id = $1 AND workflow_id = $2"
                                " AND status = ANY($3) ORDER BY run_number", tenant_id, workflow_id,
                                list(status.ACTIVE))
    return [_run(r) for r in rows]


async def view(core: Core, tenant_id: str, run_id: uuid.UUID, to_version: int | None = None) -> RunView | None:
    """The run folded from its events (up to `to_version`); None when the tenant has no such run."""
    folded = fold_run(await core.store.read_stream(tenant_id, f"run-{run_id}", to_version=to_version))
    return folded if folded.exists else None


def run_id_of(outcome: Outcome) -> uuid.UUID:
    return uuid.UUID(outcome.stream_id.split("-", 1)[1])


def prepare_start(workflow: Workflow, inputs: dict[str, Any], actor: str, *, description: str = "",
                  field: str = "inputs", variables: dict[str, Any] | None = None) -> Callable[[uuid.UUID], StartRun]:
    """The rules of starting a run, then the StartRun factory (its run id derives from the command id).

    Only an active workflow runs; inputs get their defaults and are checked against `definition.inputs`.
    The one-active-run rule is the executor's (409 from its decider), since only it sees concurrent starts.
    """
    require_active(workflow)
    try:
        prepared = inputs_rule.prepare_inputs(workflow.definition, inputs)
        refuse_nul(variables or {}, "variables")
    except DomainError as exc:
        raise ApiError(exc.status, exc.message, exc.field or field) from None

    def make(command_id: uuid.UUID) -> StartRun:
        return StartRun(run_id=entity_id(command_id), workflow_id=workflow.id, workflow_version=workflow.stream_version,
                        definition=workflow.definition, inputs=prepared, created_by=actor, at=now(),
                        description=description, variables=variables or {})

    return make


async def start(core: Core, request: Request, principal: Principal, workflow: Workflow, inputs: dict[str, Any],
                render: Render, body: bytes = b"", *, shape=None,
                on_command: Callable[[StartRun], None] | None = None,
                variables: dict[str, Any] | None = None) -> Response:
    """Start a run of `workflow` as the caller and answer with `render(outcome)` (Idempotency-Key honoured)."""
    make = prepare_start(workflow, inputs, principal.user_id, variables=variables)

    def make_and_tell(command_id: uuid.UUID) -> StartRun:
        command = make(command_id)
        if on_command is not None:
            on_command(command)
        return command

    return await core.dispatcher.dispatch(request, principal, "executor", make_and_tell, render, body, shape=shape)


def stop_command(run_id: uuid.UUID, run_status: str, principal: Principal, *, terminate: bool, reason: str,
                 word: str) -> Callable[[uuid.UUID], CancelRun | TerminateRun]:
    """Only an unfinished run stops. Cancel lets the running step finish; terminate stops now (DESIGN 5)."""
    if run_status in status.TERMINAL:
        raise ApiError(400, f"Run is already {word}; only a running run can be stopped", code=RUN_FINISHED)
    kind = TerminateRun if terminate else CancelRun
    return lambda _: kind(run_id=run_id, reason=reason, requested_by=principal.user_id, at=now())


async def stop(core: Core, request: Request, principal: Principal, run_id: uuid.UUID, run_status: str,
               render: Render, *, terminate: bool, reason: str, word: str, shape=None) -> Response:
    make = stop_command(run_id, run_status, principal, terminate=terminate, reason=reason, word=word)
    return await core.dispatcher.dispatch(request, principal, "executor", make, render, shape=shape)
