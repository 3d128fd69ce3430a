"""Webhook endpoints, delivery ids, the timers that drive attempts, and signing: spec D's
X-Webhook-Signature and the Standard Webhooks headers (webhook-id, -timestamp, -signature), made together."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import httpx

from libs.events.schemas import CommandEnvelope
from libs.events.schemas.webhook import AttemptWebhookDelivery, NotifyWebhookEndpointDisabled
from libs.events.timers import Timer, timer_id_for

__all__ = [
    "EVENTS", "USER_AGENT", "InvalidEndpoint", "attempt_timer", "attempt_timer_id", "create_endpoint", "delivery_id", "disabled_notice_timer",
    "generate_secret", "request_headers", "signature_headers", "signing_key", "standard_secret", "validate_endpoint",
]

# Spec D's event names, in the order the spec lists them.
EVENTS = ("execution.started", "execution.completed", "execution.failed", "execution.pending_approval")
USER_AGENT = "Workflow-Automation-Platform/1.0"
STANDARD_PREFIX = "whsec_"
MAX_URL = 2048
SECRET_LENGTH = (8, 512)


class InvalidEndpoint(ValueError):
    """An endpoint field breaks a rule; `field` names it (the API answers 400 with it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def generate_secret() -> str:
    """A fresh secret in the Standard Webhooks form (whsec_ + base64 of 32 random bytes)."""
    return STANDARD_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key: a whsec_ secret is base64 of the key (what receivers' libraries
    expect); any other secret is used as its UTF-8 bytes, as spec D's signature always uses it."""
    if secret.startswith(STANDARD_PREFIX):
        try:
            key = base64.b64decode(secret[len(STANDARD_PREFIX):], validate=True)
        except binascii.Error:
            key = b""
        if key:
            return key
    return secret.encode()


def standard_secret(secret: str) -> str:
    """The secret as a Standard Webhooks library takes it (whsec_ + base64 of the signing key)."""
    return STANDARD_PREFIX + base64.b64encode(signing_key(secret)).decode()


def validate_endpoint(url: str, events: Sequence[str], secret: str, owner_email: str | None = None
                      ) -> tuple[str, tuple[str, ...]]:
    """(url, events without repeats) or InvalidEndpoint naming the field. Whether the URL's host is a public
    address is checked on every attempt by the guarded client, not here: DNS answers change."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL or not url.isprintable():
        raise InvalidEndpoint("url", f"url must be 1-{MAX_URL} printable characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidEndpoint("url", f"url is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidEndpoint("url", "url must be an absolute http or https URL")
    if isinstance(events, str) or not events:
        raise InvalidEndpoint("events", f"events must be a non-empty list of: {', '.join(EVENTS)}")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise InvalidEndpoint("events", f"unknown event {unknown[0]!r}; events are: {', '.join(EVENTS)}")
    low, high = SECRET_LENGTH
    if not isinstance(secret, str) or not low <= len(secret) <= high or not secret.isprintable():
        raise InvalidEndpoint("secret", f"secret must be {low}-{high} printable characters")
    if owner_email is not None and (not isinstance(owner_email, str) or "@" not in owner_email
                                    or len(owner_email) > 320 or not owner_email.isprintable()
                                    or any(c in owner_email for c in ",")):
        raise InvalidEndpoint("owner_email", "owner_email must be one email address")
    return url, tuple(dict.fromkeys(events))


async def create_endpoint(conn: asyncpg.Connection, *, tenant_id: str, url: str, events: Sequence[str], secret: str,
                          api_key_id: uuid.UUID | None = None, owner_email: str | None = None) -> uuid.UUID:
    """Register a webhook endpoint (conn inside a tenant transaction); InvalidEndpoint on a bad field.

    Without api_key_id it receives the events of every run of the tenant; with one, only of runs started
    with that API key."""
    url, unique_events = validate_endpoint(url, events, secret, owner_email)
    endpoint_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO webhook_endpoints (id, tenant_id, api_key_id, url, events, secret, owner_email)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        endpoint_id, tenant_id, api_key_id, url, list(unique_events), secret, owner_email,
    )
    return endpoint_id


def delivery_id(event_id: uuid.UUID, endpoint_id: uuid.UUID) -> uuid.UUID:
    """One event to one endpoint is one delivery, whatever processes the event how often."""
    return uuid.uuid5(event_id, f"webhook-endpoint:{endpoint_id}")


def attempt_timer_id(delivery: uuid.UUID, attempt: int) -> uuid.UUID:
    return timer_id_for("webhook-attempt", delivery, attempt)


def attempt_timer(tenant_id: str, delivery: uuid.UUID, attempt: int, due_at: datetime, correlation_id: str = "") -> Timer:
    """The durable timer that makes attempt `attempt` of a delivery at due_at. Its id (and the command's)
    derives from both, so setting it twice sets it once and JetStream drops a second publication."""
    timer_id = attempt_timer_id(delivery, attempt)
    command = AttemptWebhookDelivery(delivery_id=delivery, attempt=attempt)
    return _timer(tenant_id, timer_id, due_at, command, correlation_id or str(delivery))


def disabled_notice_timer(tenant_id: str, endpoint_id: uuid.UUID, disabled_at: datetime) -> Timer:
    timer_id = timer_id_for("webhook-endpoint-disabled", endpoint_id, disabled_at.isoformat())
    command = NotifyWebhookEndpointDisabled(endpoint_id=endpoint_id, disabled_at=disabled_at)
    return _timer(tenant_id, timer_id, disabled_at, command, str(endpoint_id))


def _timer(tenant_id: str, timer_id: uuid.UUID, due_at: datetime, command: object, correlation_id: str) -> Timer:
    envelope = CommandEnvelope(command_id=timer_id, tenant_id=tenant_id, actor="notifier",
                               correlation_id=correlation_id, command=command, issued_at=due_at)
    return Timer(timer_id=timer_id, due_at=due_at, service="notifier", envelope=envelope)


def signature_headers(secret: str, *, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Both signatures of one attempt over the exact body bytes: spec D's `X-Webhook-Signature:
    sha256=<hex HMAC-SHA256(secret, body)>`, and Standard Webhooks' `webhook-signature: v1,<base64
    HMAC-SHA256(key, "<id>.<timestamp>.<body>")>` with its id and timestamp (receivers reject replays by
    id and stale timestamps)."""
    d_signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    standard = base64.b64encode(hmac.new(signing_key(secret), signed, hashlib.sha256).digest()).decode()
    return {
        "X-Webhook-Signature": f"sha256={d_signature}",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{standard}",
    }


def request_headers(secret: str, *, event: str, execution_id: str, webhook_id: str, timestamp: int,
                    body: bytes) -> dict[str, str]:
    """Every header of one webhook request, as spec D lists them, plus the Standard Webhooks three."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Webhook-Event": event,
        "X-Webhook-Execution-Id": execution_id,
        **signature_headers(secret, webhook_id=webhook_id, timestamp=timestamp, body=body),
    }
