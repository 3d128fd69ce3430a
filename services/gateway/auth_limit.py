"""Failed authentication is rate-limited per client address (issue 15): key and token guessing is bounded.

Every 401 the gateway answers (an unknown or malformed API key, a bad or expired JWT, on any surface) takes a
token from the client address's bucket in the shared Postgres buckets (libs/security/ratelimit.py), so the
bound holds across gateway processes: `WEFT_AUTH_FAILURES_PER_MINUTE` failures a minute, burst the same.
The 401 carries the bucket's X-RateLimit-Limit/-Remaining/-Reset headers. Once the bucket is empty, every
request from that address that carries credentials (a bearer header or `?token=`) gets 429 with the same
headers, `Retry-After` and `retryAfter`, without being checked, until the bucket has a token again: a
guess that would have been right is refused like the rest, so guessing gains nothing from being fast.
Requests without credentials (health, approval links) are never refused here.
"""

from __future__ import annotations

import time

import msgspec
import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from libs.events.db import DB_UNAVAILABLE
from libs.security.ratelimit import Decision, Limit, SharedBuckets
from services.gateway.asgi import answer
from services.gateway.errors import error_body, plain_error_body
from services.gateway.public.errors import encoded

log = structlog.get_logger()
BUCKET_TENANT = "_auth_failures"  # rate_buckets rows are per tenant; these belong to no tenant
MAX_BLOCKED = 10_000
MESSAGE = "Too many failed authentication attempts from this address; retry later"


def _held(state) -> dict[str, tuple[float, Decision]]:
    """Addresses held in this process: address -> (until, the decision that emptied its bucket). On the app's
    state, because Litestar builds an app-level middleware once per route."""
    held = getattr(state, "auth_failures_held", None)
    if held is None:
        held = state.auth_failures_held = {}
    return held


def _has_credentials(scope: Scope) -> bool:
    if any(name == b"authorization" for name, _ in scope["headers"]):
        return True
    query = scope.get("query_string", b"")
    return query.startswith(b"token=") or b"&token=" in query


def _refusal(path: str, decision: Decision) -> bytes:
    retry = decision.retry_after_s
    if path.startswith("/api/v1/public"):
        return encoded(429, MESSAGE, retryAfter=retry)
    if path.startswith("/api/v2/"):
        return msgspec.json.encode({**error_body(MESSAGE), "retryAfter": retry})
    return msgspec.json.encode({**plain_error_body(429, MESSAGE), "retryAfter": retry})


def failed_auth_limit_middleware(app: ASGIApp) -> ASGIApp:

    async def charge(state, address: str, limit: Limit) -> Decision | None:
        blocked = _held(state)
        buckets: SharedBuckets = state.buckets
        try:
            decision = await buckets.take(f"authfail:{address}", BUCKET_TENANT, limit)
        except DB_UNAVAILABLE + (TimeoutError,) as exc:  # fail open: the 401 stands without headers
            log.warning("auth_failure_limit_unavailable", error=f"{type(exc).__name__}: {exc}")
            return None
        if not decision.allowed or decision.remaining == 0:
            if len(blocked) >= MAX_BLOCKED:
                blocked.clear()
            blocked[address] = (time.monotonic() + max(decision.retry_after_s, 1), decision)
        return decision

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["litestar_app"].state
        per_minute = state.settings.auth_failures_per_minute
        if scope["type"] != "http" or per_minute <= 0 or not _has_credentials(scope):
            await app(scope, receive, send)
            return
        address = scope["client"][0] if scope.get("client") else ""
        blocked = _held(state)
        hold = blocked.get(address)
        if hold is not None:
            if hold[0] > time.monotonic():
                decision = hold[1]
                await answer(send, 429, _refusal(scope["path"], decision),
                             decision.headers() | {"Retry-After": str(max(1, round(hold[0] - time.monotonic())))})
                return
            blocked.pop(address, None)
        limit = Limit(burst=per_minute, per_minute=per_minute)

        async def watching(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                decision = await charge(state, address, limit)
                if decision is not None:
                    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in decision.headers().items()]
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await app(scope, receive, watching)

    return middleware
