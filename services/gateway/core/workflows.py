"""Workflow use cases: read, list, and the rule that only an active workflow runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from libs.domain.definition import validate_definition
from libs.events.errors import DomainError
from libs.security.auth import Principal
from services.gateway.core import Core
from services.gateway.core.errors import NOT_OWNER, WORKFLOW_NOT_ACTIVE, ApiError, NotFound

STATUSES = ("draft", "active", "archived")
SETTABLE_STATUSES = ("active", "archived")  # what a client may PATCH; draft -> active is a plan approval


class Workflow(msgspec.Struct, frozen=True, kw_only=True):
    """A row of the workflows read model, with its definition decoded."""

    id: uuid.UUID
    tenant_id: str
    name: str
    description: str | None
    definition: dict[str, Any]
    version: str
    status: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    stream_version: int
    goal: str | None
    schedule: str | None
    source: str
    plan_version: int
    plan_hash: str | None

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.definition.get("nodes", [])


_COLUMNS = ("id, tenant_id, name, description, definition::text AS definition, version, status, created_by,"
            " created_at, updated_at, stream_version, goal, schedule, source, plan_version, plan_hash")


def _workflow(row) -> Workflow:
    return Workflow(**{**dict(row), "definition": msgspec.json.decode(row["definition"])})


async def find(core: Core, tenant_id: str, workflow_id: uuid.UUID) -> Workflow | None:
    async with core.store.tenant_transaction(tenant_id) as conn:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM workflows WHERE tenant_id = $1 AND id = $2",
                                  tenant_id, workflow_id)
    return None if row is None else _workflow(row)


async def get(core: Core, principal: Principal, workflow_id: uuid.UUID, field: str | None = None) -> Workflow:
    """The caller's tenant's workflow; another tenant's is as unknown as a missing one (404)."""
    workflow = await find(core, principal.tenant_id, workflow_id)
    if workflow is None:
        raise NotFound("Workflow", field)
    return workflow


async def list_page(core: Core, principal: Principal, *, status: str | None = None, limit: int = 500,
                    offset: int = 0) -> tuple[list[Workflow], int]:
    """Newest first, with the total count of the filter."""
    where = "tenant_id = $1 AND ($2::text IS NULL OR status = $2)"
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM workflows WHERE {where} ORDER BY created_at DESC, id"
                                " LIMIT $3 OFFSET $4", principal.tenant_id, status, limit, offset)
        total = await conn.fetchval(f"SELECT count(*) FROM workflows WHERE {where}", principal.tenant_id, status)
    return [_workflow(r) for r in rows], total


def require_active(workflow: Workflow) -> None:
    """Only an active workflow runs (a draft waits for plan approval; archived ones are retired)."""
    if workflow.status != "active":
        raise ApiError(409, f"Workflow is {workflow.status}; only an active workflow can run", "status",
                       code=WORKFLOW_NOT_ACTIVE)


def check_definition(definition: Any, field: str = "definition") -> None:
    """Structure, references, acyclicity and every step against the step catalogue; 400 naming the node."""
    try:
        validate_definition(definition, field)
    except DomainError as exc:
        raise ApiError(exc.status, exc.message, exc.field) from exc


async def search(core: Core, principal: Principal, q: str, *, status: str | None = None, limit: int = 200
                 ) -> list[Workflow]:
    """Newest first, whose name, goal or description contains `q` (case-insensitive), optionally by status."""
    q = q.strip()
    if len(q) > 200:
        raise ApiError(400, "search must be at most 200 characters", "q")
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"status must be one of: {', '.join(STATUSES)}", "status")
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM workflows WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) AND"
            " (name ILIKE $3 OR coalesce(goal, '') ILIKE $3 OR coalesce(description, '') ILIKE $3)"
            " ORDER BY created_at DESC, id LIMIT $4", principal.tenant_id, status, pattern, limit)
    return [_workflow(r) for r in rows]


async def owned(core: Core, principal: Principal, workflow_id: uuid.UUID, field: str | None = None) -> Workflow:
    """The caller's own workflow: another tenant's is unknown (404), another user's of the tenant is 403.

    Every assistant use case that reads or changes one workflow (cancel, stream, history, rerun, feedback)
    asks this, so "only its owner sees a workflow's events" is one rule."""
    workflow = await get(core, principal, workflow_id, field)
    if workflow.created_by != principal.user_id:
        raise ApiError(403, "This workflow belongs to another user", field, code=NOT_OWNER)
    return workflow
