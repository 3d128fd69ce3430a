"""What the sync and async clients share, with no I/O: calls, decoding, errors, retry rules, rate-limit headers."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from weft_client.errors import ApiError, error_for, retry_after_seconds
from weft_client.types import CommandState, Page, RateLimit

V2 = "/api/v2/workflows"
PUBLIC = "/api/v1/public"
RETRY_STATUSES = (503,)  # "not accepted": safe to repeat with the same Idempotency-Key
DEFAULT_TIMEOUT_S = 30.0
MAX_RATE_LIMIT_WAITS = 10  # a gateway answering 429 with Retry-After: 0 forever must not spin the client
_json = msgspec.json.Decoder()


@dataclass
class Call:
    """One request and how to read its answer: `pick` the envelope's field, `into` the type to convert it to.
    `keyed` calls (commands) carry an Idempotency-Key, so repeating them is safe; `follow` turns a committed
    202's command state into the call that reads the result (None: repeat this call with its key)."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    into: Any = None
    pick: str | None = None
    keyed: bool = False
    idempotency_key: str | None = None
    timeout_s: float | None = None
    follow: Callable[[CommandState], Call | Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    page_key: str | None = None  # a list read as a Page: the envelope's list field
    page_offset: int = 0

    def __post_init__(self) -> None:
        if self.keyed and self.idempotency_key is None:
            # One key per logical call, reused by every retry: a retried command is committed once.
            self.idempotency_key = str(uuid.uuid4())
        if self.params:
            self.params = {k: v for k, v in self.params.items() if v is not None}

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.idempotency_key is not None:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers

    @property
    def retryable(self) -> bool:
        """Reads are safe to repeat; writes only with an Idempotency-Key."""
        return self.method == "GET" or self.idempotency_key is not None


def decode(content: bytes) -> Any:
    if not content:
        return None
    try:
        return _json.decode(content)
    except msgspec.DecodeError:
        return content.decode(errors="replace")


def error_from(status: int, content: bytes, headers: dict[str, str]) -> ApiError:
    """The refusal as an exception, in whichever shape the surface answered: v2 {"success": false, "error",
    "field"}, the public API {"message", "error", "statusCode"}, the console's {"error", "message"}."""
    body = decode(content)
    message, field_name = None, None
    if isinstance(body, dict):
        field_name = body.get("field") if isinstance(body.get("field"), str) else None
        if isinstance(body.get("message"), str) and "success" not in body:
            message = body["message"]
        elif isinstance(body.get("error"), str):
            message = body["error"]
    if message is None:
        message = body.strip()[:300] if isinstance(body, str) and body.strip() else f"HTTP {status}"
    return error_for(status, message, field_name, body=body, headers=headers)


def result(call: Call, content: bytes) -> Any:
    """The typed result of a successful answer."""
    body = decode(content)
    if call.page_key is not None:
        items = msgspec.convert(body[call.page_key], call.into)
        return Page(items=items, count=int(body.get("count", len(items))), offset=call.page_offset)
    if call.pick is not None:
        body = body[call.pick]
    if call.into is None:
        return body
    return msgspec.convert(body, call.into)


def rate_limit(headers: Any, previous: RateLimit) -> RateLimit:
    """The X-RateLimit-* headers of a response (or the previous ones when it has none)."""
    values = {}
    for name in ("limit", "remaining", "reset"):
        raw = headers.get(f"x-ratelimit-{name}")
        if raw is not None:
            try:
                values[name] = int(float(raw))
            except ValueError:
                pass
    return RateLimit(**values) if values else previous


def backoff(attempt: int, base: float = 0.25, cap: float = 5.0) -> float:
    """Full-jitter exponential backoff for the attempt-th retry (1-based)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def retry_delay(status: int, headers: dict[str, str], attempt: int, cap: float) -> float:
    """How long to wait before retrying a 503 or 429: the gateway's Retry-After, else backoff; never past cap."""
    asked = retry_after_seconds(headers)
    return min(cap, asked if asked is not None else backoff(attempt))


def command_state(content: bytes) -> CommandState:
    return msgspec.convert(decode(content)["command"], CommandState)


def resource_id(state: CommandState, kind: str) -> str:
    """The uuid of what a committed command made, from its resource ("run-<uuid>")."""
    prefix, _, ident = (state.resource or "").partition("-")
    if prefix != kind or not ident:
        raise ApiError(500, f"command {state.id} committed on {state.resource!r}, not a {kind}")
    return ident


@dataclass
class Settings:
    """Client behaviour: retries of 503 and dropped connections, waiting on 429, following 202s."""

    max_retries: int = 4
    wait_on_rate_limit: bool = True
    max_rate_limit_wait_s: float = 60.0
    max_retry_wait_s: float = 10.0
    follow_timeout_s: float = 60.0
    poll_interval_s: float = 0.2
    timeout_s: float = DEFAULT_TIMEOUT_S
    # An event stream silent for this long (the gateway sends a heartbeat every 30 s by default) is dead:
    # reconnect from the last id rather than wait forever on a connection that vanished without a FIN.
    stream_idle_timeout_s: float = 90.0
    extra_headers: dict[str, str] = field(default_factory=dict)
