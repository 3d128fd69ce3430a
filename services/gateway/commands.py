"""Send a command and turn its committed outcome into a response; Idempotency-Key support."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
from litestar import Request, Response

from libs.security.auth import Principal
from libs.events.bus import CommandBus
from libs.events.db import DB_UNAVAILABLE
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.store import EventStore
from services.gateway.errors import ApiError, error_body

log = structlog.get_logger()

# Namespace for ids derived from an Idempotency-Key: the same key always names the same command and entity.
_KEY_NAMESPACE = uuid.UUID("5d0f6c2e-8f5b-4a8e-9a57-3c1e4f6b2a10")
MAX_KEY_LENGTH = 255

Render = Callable[[Outcome], Awaitable[tuple[int, dict[str, Any]]]]


def entity_id(command_id: uuid.UUID) -> uuid.UUID:
    """The id of what a command creates, derived from its id so a replayed command names the same thing."""
    return uuid.uuid5(command_id, "entity")


def now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(self, bus: CommandBus, store: EventStore):
        self.bus, self.store = bus, store
        # Commands sent through this gateway's bus are accepted when their command-log row commits
        # (DESIGN section 3, docs/decisions/0030); the bus needs the store for that.
        if bus.store is None:
            bus.store = store

    async def dispatch(
        self,
        request: Request,
        principal: Principal,
        service: str,
        make_command: Callable[[uuid.UUID], Any],
        render: Render,
        body: bytes = b"",
        *,
        timeout_s: float | None = None,
        shape: Callable[[int, str, str | None], dict] | None = None,
    ) -> Response:
        """Publish the command, wait for its outcome, render it. With an Idempotency-Key the first
        response is stored and replayed for every later request carrying that key."""
        key = request.headers.get("idempotency-key")
        if key is None:
            response, _, _ = await self._send(request, principal, service, uuid.uuid4(), make_command, render,
                                              timeout_s, shape)
            return response
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ApiError(400, f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters", "Idempotency-Key")
        request_hash = hashlib.sha256(
            request.method.encode() + b" " + request.url.path.encode() + b"\n" + body
        ).hexdigest()
        stored = await self._stored(principal, key)
        if stored is not None:
            return self._replay(stored, request_hash)
        command_id = uuid.uuid5(_KEY_NAMESPACE, f"{principal.tenant_id}/{principal.user_id}/{key}")
        response, status, payload = await self._send(request, principal, service, command_id, make_command, render,
                                                     timeout_s, shape)
        if status == 202:
            return response  # not settled yet; a retry with the key waits again
        async with self.store.tenant_transaction(principal.tenant_id) as conn:
            await conn.execute(
                "INSERT INTO idempotency_keys (tenant_id, actor, key, request_hash, command_id, response_status,"
                " response_body) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT DO NOTHING",
                principal.tenant_id, principal.user_id, key, request_hash, command_id, status,
                msgspec.json.encode(payload).decode(),
            )
        # Whoever stored first wins; every caller returns that stored response.
        return self._replay(await self._stored(principal, key), request_hash)

    async def _stored(self, principal: Principal, key: str):
        async with self.store.tenant_transaction(principal.tenant_id) as conn:
            return await conn.fetchrow(
                "SELECT request_hash, response_status, response_body::text AS body FROM idempotency_keys"
                " WHERE tenant_id = $1 AND actor = $2 AND key = $3",
                principal.tenant_id, principal.user_id, key,
            )

    @staticmethod
    def _replay(stored, request_hash: str) -> Response:
        if stored["request_hash"] != request_hash:
            raise ApiError(422, "Idempotency-Key was already used with a different request", "Idempotency-Key")
        return Response(
            msgspec.json.decode(stored["body"]),
            status_code=stored["response_status"],
            headers={"Idempotent-Replayed": "true"},
        )

    async def _send(self, request, principal, service, command_id, make_command, render, timeout_s=None, shape=None):
        envelope = CommandEnvelope(
            command_id=command_id,
            tenant_id=principal.tenant_id,
            actor=principal.user_id,
            correlation_id=request.headers.get("x-correlation-id") or str(command_id),
            command=make_command(command_id),
            issued_at=now(),
        )
        started = time.perf_counter()
        outcome = await self.bus.send(service, envelope, timeout_s)
        replied = time.perf_counter()
        rendered = None
        try:
            if outcome is None:
                # The reply can be missed (service restarted after commit): the record is authoritative.
                outcome = await self.store.outcome(principal.tenant_id, command_id)
            if outcome is not None and outcome.ok:
                rendered = await render(outcome)
        except DB_UNAVAILABLE as exc:
            # The command log has the command: it will run once Postgres is back. Not readable now is a
            # 202 with the lookup location, never a 503, which would invite a retry and so a second run.
            log.warning("outcome_unreadable", command_id=str(command_id), error=f"{type(exc).__name__}: {exc}")
            outcome = None
        if outcome is None:
            payload = {
                "success": True,
                "status": "accepted",
                "command_id": str(command_id),
                "message": "Accepted; the change is not yet committed. Poll the location for its outcome.",
                "location": f"/api/v2/workflows/commands/{command_id}",
            }
            return Response(payload, status_code=202, headers={"Location": payload["location"]}), 202, payload
        if not outcome.ok:
            message = outcome.error or "Command refused"
            payload = shape(outcome.status, message, outcome.field) if shape else error_body(message, outcome.field)
            headers = {"Retry-After": "5"} if outcome.status == 503 else None
            return Response(payload, status_code=outcome.status, headers=headers), outcome.status, payload
        status, payload = rendered
        log.debug("command_dispatched", command_id=str(command_id), service=service,
                  outcome_ms=round((replied - started) * 1000, 2),
                  render_ms=round((time.perf_counter() - replied) * 1000, 2))
        return Response(payload, status_code=status), status, payload
