"""The v2 API's rate limit (spec E: 100 requests per minute per user), with the public API's headers.

A token bucket per (tenant, user) of `WEFT_V2_RATE_LIMIT_PER_MINUTE` tokens refilled evenly over a minute,
kept in the same shared Postgres buckets as the API keys', so it holds across gateway processes. Requests
without a valid token pass through untouched: the route answers them 401 and they name no user.
"""

from __future__ import annotations

import time

import msgspec
import structlog
from litestar.types import ASGIApp, Receive, Scope, Send

from libs.security.auth import InvalidToken, Principal, verify_token
from libs.events.db import DB_UNAVAILABLE
from libs.security.ratelimit import Limit, SharedBuckets
from libs.telemetry import metrics
from services.gateway.asgi import answer, bearer_token, with_headers
from services.gateway.errors import error_body

log = structlog.get_logger()
V2_PREFIX = "/api/v2/"
PRINCIPAL_TTL_S = 60.0
MAX_CACHED = 10_000


def v2_limit(per_minute: int) -> Limit:
    return Limit(burst=per_minute, per_minute=per_minute)


def _whose(state, token: str) -> Principal | None:
    """The token's user, remembered for a minute. This only chooses whose bucket a request draws on (the
    route verifies the token itself, every time), so a token that expired within the minute can at worst
    charge its own user's bucket; it saves a second signature check on every v2 request."""
    cache: dict[str, tuple[float, Principal]] | None = getattr(state, "v2_principals", None)
    if cache is None:
        cache = state.v2_principals = {}
    now = time.monotonic()
    hit = cache.get(token)
    if hit is not None and hit[0] > now:
        return hit[1]
    try:
        principal = verify_token(state.settings, token)
    except InvalidToken:
        return None
    if len(cache) >= MAX_CACHED:
        cache.clear()
    cache[token] = (now + PRINCIPAL_TTL_S, principal)
    return principal


def v2_rate_limit_middleware(app: ASGIApp) -> ASGIApp:
    """App-wide middleware that acts only on /api/v2/ paths (the v2 router, its run streams, schedules and
    the API-key admin routes), so every v2 route is covered whichever module declares it."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        token = bearer_token(scope) if scope["type"] == "http" and scope["path"].startswith(V2_PREFIX) else None
        state = scope["litestar_app"].state
        per_minute = state.settings.v2_rate_limit_per_minute
        if not token or per_minute <= 0:
            await app(scope, receive, send)
            return
        principal = _whose(state, token)
        if principal is None:
            await app(scope, receive, send)
            return
        buckets: SharedBuckets = state.buckets
        try:
            decision = await buckets.take(f"user:{principal.tenant_id}/{principal.user_id}", principal.tenant_id,
                                          v2_limit(per_minute))
        except DB_UNAVAILABLE + (TimeoutError,) as exc:
            # Fail open: the limiter protects the service, and while the database is away the route
            # itself answers 503 (or 202 for an accepted command).
            log.warning("rate_limit_unavailable", error=f"{type(exc).__name__}: {exc}")
            await app(scope, receive, send)
            return
        headers = decision.headers()
        if not decision.allowed:
            message = f"Rate limit exceeded: at most {per_minute} requests per minute per user"
            payload = msgspec.json.encode({**error_body(message), "retryAfter": decision.retry_after_s})
            metrics.RATE_LIMITED.labels("v2").inc()
            await answer(send, 429, payload, headers)
            return
        await app(scope, receive, with_headers(send, headers))

    return middleware
