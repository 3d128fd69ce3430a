"""Bearer-token authentication for the tenant API."""

from __future__ import annotations

import uuid

from litestar import Request

from libs.security.auth import InvalidToken, Principal, verify_token
from libs.security.stream_tokens import verify_stream_token
from services.gateway.errors import ApiError


async def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        return verify_token(request.app.state.settings, token.strip())
    except InvalidToken as exc:
        raise ApiError(401, str(exc).capitalize(), headers={"WWW-Authenticate": "Bearer"}) from exc


async def stream_principal(request: Request) -> Principal:
    """A live stream's caller: a bearer token, or `?streamToken=` (POST /api/workflow/stream-token) for a browser
    EventSource, which cannot set headers. The stream token is bound to the workflow it was issued for."""
    token = (request.query_params.get("streamToken") or "").strip()
    if not token:
        return await authenticate(request)
    try:
        workflow_id = uuid.UUID((request.query_params.get("workflowId") or "").strip())
    except ValueError:
        raise ApiError(400, "workflowId must be a UUID", "workflowId") from None
    try:
        return verify_stream_token(request.app.state.settings, token, workflow_id)
    except InvalidToken as exc:
        raise ApiError(401, str(exc).capitalize(), "streamToken") from exc
