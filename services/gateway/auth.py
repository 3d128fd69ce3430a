"""Bearer-token authentication for the tenant API."""

from __future__ import annotations

import uuid

import structlog
from litestar import Request
from litestar.di import NamedDependency

from libs.security.auth import InvalidToken, Principal, verify_token
from libs.security.stream_tokens import verify_stream_token
from services.gateway.core import Core
from services.gateway.errors import ApiError


async def authenticate(request: Request, core: NamedDependency[Core]) -> Principal:
    """The caller from the bearer JWT; 401 otherwise.

    It takes `core` so that Litestar resolves the two in sequence: dependencies of one level are resolved
    concurrently in tasks of their own, whose context changes (the log binding below) the request never sees.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        principal = verify_token(core.settings, token.strip())
    except InvalidToken as exc:
        raise ApiError(401, str(exc).capitalize(), headers={"WWW-Authenticate": "Bearer"}) from exc
    structlog.contextvars.bind_contextvars(tenant_id=principal.tenant_id)  # in this request's log lines
    return principal


async def stream_principal(request: Request, core: NamedDependency[Core]) -> Principal:
    """A live stream's caller: a bearer token, or `?streamToken=` (POST /api/workflow/stream-token) for a browser
    EventSource, which cannot set headers. The stream token is bound to the workflow it was issued for."""
    token = (request.query_params.get("streamToken") or "").strip()
    if not token:
        return await authenticate(request, core)
    try:
        workflow_id = uuid.UUID((request.query_params.get("workflowId") or "").strip())
    except ValueError:
        raise ApiError(400, "workflowId must be a UUID", "workflowId") from None
    try:
        return verify_stream_token(core.settings, token, workflow_id)
    except InvalidToken as exc:
        raise ApiError(401, str(exc).capitalize(), "streamToken") from exc
