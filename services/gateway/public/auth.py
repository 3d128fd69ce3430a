"""API-key authentication and the per-key rate limit of the public API, as one ASGI middleware.

One database round trip per request (libs.security.apikeys.admit) finds the key by its hash and takes a
token from the key's bucket. The rate-limit headers are added to every response a known key gets, errors
included, by wrapping `send`; the route sees the key as `request.state.api_key` (and the `api_key`
dependency). A request without a known key draws on its client address's bucket (D's default limit), so
its 401 carries the headers too and key guessing is rate-limited (docs/decisions/0100). The middleware is
app-wide and acts on /api/v1/public paths only, so routing errors there (404, 405) carry them as well.
"""

from __future__ import annotations

import uuid

import msgspec
import structlog
from litestar import Request
from litestar.types import ASGIApp, Receive, Scope, Send

from libs.security.apikeys import DEFAULT_BURST, admit
from libs.security.ratelimit import Decision, Limit
from libs.security.auth import Principal
from libs.events.db import DB_UNAVAILABLE
from libs.telemetry import metrics
from services.gateway.asgi import answer, bearer_token, with_headers
from services.gateway.errors import RETRY_AFTER_S
from services.gateway.public.errors import PREFIX, encoded

log = structlog.get_logger()


class ApiKeyPrincipal(msgspec.Struct):
    key_id: uuid.UUID
    tenant_id: str
    name: str
    workflow_ids: tuple[str, ...]

    @property
    def actor(self) -> str:
        """Who a run started with this key was started by: the run's metadata actor and created_by."""
        return f"api_key:{self.key_id}"

    def principal(self) -> Principal:
        """The gateway's caller identity for the shared dispatch path (Idempotency-Key scope included)."""
        return Principal(tenant_id=self.tenant_id, user_id=self.actor)


def provide_api_key(request: Request) -> ApiKeyPrincipal:
    return request.state.api_key


ANONYMOUS_TENANT = ""  # buckets of callers without a key belong to no tenant


def anonymous_limit(per_minute: int) -> Limit:
    return Limit(burst=max(DEFAULT_BURST, per_minute // 6), per_minute=max(per_minute, 1))


async def _anonymous(scope: Scope) -> Decision:
    """A token from the bucket of the caller's address: the limit a request without a valid key is held to."""
    state = scope["litestar_app"].state
    client = scope.get("client") or ("unknown", 0)
    limit = anonymous_limit(state.settings.public_anonymous_rate_per_minute)
    return await state.buckets.take(f"anon:{client[0]}", ANONYMOUS_TENANT, limit)


def _public(scope: Scope) -> bool:
    return scope["type"] == "http" and (scope["path"] == PREFIX or scope["path"].startswith(PREFIX + "/"))


def api_key_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if not _public(scope):
            await app(scope, receive, send)
            return
        token = bearer_token(scope)
        try:
            admission = await admit(scope["litestar_app"].state.ctx.pool, token) if token else None
            # A request with no key at all draws on the address's anonymous bucket; one with a wrong key is a
            # failed authentication, counted with every surface's in the failed-auth bucket (auth_limit.py).
            anonymous = await _anonymous(scope) if admission is None and not token else None
        except DB_UNAVAILABLE + (TimeoutError,) as exc:
            log.warning("api_key_check_unavailable", error=f"{type(exc).__name__}: {exc}")
            await answer(send, 503, encoded(503, "Service temporarily unavailable; retry shortly"),
                         {"Retry-After": RETRY_AFTER_S})
            return
        if admission is None and token:
            await answer(send, 401, encoded(401, "Invalid API key"), {"WWW-Authenticate": "Bearer"})
            return
        if anonymous is not None:
            headers = anonymous.headers()
            if not anonymous.allowed:
                await answer(send, 429, encoded(429, "Rate limit exceeded", retryAfter=anonymous.retry_after_s),
                             headers)
                return
            await answer(send, 401, encoded(401, "Invalid API key"), {"WWW-Authenticate": "Bearer", **headers})
            return
        headers = admission.rate.headers()
        if not admission.rate.allowed:
            metrics.RATE_LIMITED.labels("public").inc()
            await answer(send, 429, encoded(429, "Rate limit exceeded", retryAfter=admission.rate.retry_after_s),
                         headers)
            return
        # Checked after the rate limit: a deactivated key that keeps calling is still held to its bucket.
        if not admission.active:
            await answer(send, 403, encoded(403, "API key is inactive"), headers)
            return
        if admission.expired:
            await answer(send, 403, encoded(403, "API key has expired"), headers)
            return
        structlog.contextvars.bind_contextvars(tenant_id=admission.tenant_id)  # in this request's log lines
        scope.setdefault("state", {})["api_key"] = ApiKeyPrincipal(
            key_id=admission.key_id, tenant_id=admission.tenant_id, name=admission.name,
            workflow_ids=admission.workflow_ids)
        await app(scope, receive, with_headers(send, headers))

    return middleware
