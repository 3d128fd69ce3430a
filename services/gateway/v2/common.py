"""Helpers every v2 route module shares: ids, paging parameters, definition checks, workflow lookup."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request

from libs.security.auth import Principal
from libs.domain.definition import validate_definition
from libs.events.errors import DomainError
from services.gateway import queries
from services.gateway.errors import ApiError

WORKFLOW_STATUSES = ("active", "archived")


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, f"{what} not found") from None  # a malformed id can name nothing


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", name) from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}", name)
    return value


def _check_definition(definition: Any) -> None:
    try:
        validate_definition(definition)
    except DomainError as exc:
        raise ApiError(exc.status, exc.message, exc.field) from exc


def _ctx(request: Request):
    return request.app.state.ctx, request.app.state.dispatcher


async def _workflow_or_404(request: Request, principal: Principal, workflow_id: str):
    ctx, _ = _ctx(request)
    wid = _uuid(workflow_id, "Workflow")
    async with ctx.store.tenant_transaction(principal.tenant_id) as conn:
        row = await queries.get_workflow(conn, principal.tenant_id, wid)
    if row is None:
        raise ApiError(404, "Workflow not found")
    return row
