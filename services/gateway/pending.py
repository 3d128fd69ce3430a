"""Commands the gateway answered 202 for, so that the lookup a 202 points at can tell a pending command from
an id nobody was given (issue 15: GET /api/v2/workflows/commands/<any uuid> answered 200 "pending").

Which commands are pending is not in Postgres (a committed command's outcome is, in processed_commands), so
the gateway notes each 202 in a JetStream key-value bucket, keyed by tenant and command id, kept TRACK_TTL_S.
A lookup answers:
- the recorded outcome, when there is one (whatever the bucket says);
- "pending", when this tenant was answered 202 for that id;
- 404 otherwise: unknown ids and other tenants' ids alike.
The note is written after the 202's command was accepted (PubAck); a gateway that dies between the two leaves
a command whose lookup says 404 until its outcome commits. The bucket is a lookup aid, never a copy of a
command: losing it changes no run.
"""

from __future__ import annotations

import uuid

import nats
import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType

from libs.events.bus import CommandBus
from libs.events.schemas import Outcome
from services.gateway.errors import RETRY_AFTER_S, ApiError

log = structlog.get_logger()

BUCKET = "WEFT_PENDING_COMMANDS"
TRACK_TTL_S = 7 * 24 * 3600


class PendingCommands:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._kv = None

    async def open(self) -> None:
        try:
            self._kv = await self.js.create_key_value(KeyValueConfig(
                bucket=BUCKET, history=1, ttl=TRACK_TTL_S, storage=StorageType.FILE))
        except nats.js.errors.BadRequestError:  # exists with other settings: use it as it is
            self._kv = await self.js.key_value(BUCKET)

    @staticmethod
    def _key(tenant_id: str, command_id: uuid.UUID) -> str:
        return f"{tenant_id}.{command_id}"  # tenant ids match bus.TENANT_RE: valid key tokens

    async def remember(self, tenant_id: str, command_id: uuid.UUID) -> None:
        try:
            await self._kv.put(self._key(tenant_id, command_id), b"")
        except (nats.errors.Error, TimeoutError) as exc:  # the 202 stands; only its lookup degrades to 404
            log.warning("pending_command_not_noted", command_id=str(command_id), error=f"{type(exc).__name__}: {exc}")

    async def known(self, tenant_id: str, command_id: uuid.UUID) -> bool:
        """Was this tenant answered 202 for command_id? 503 (ApiError) when the bucket cannot be read."""
        try:
            await self._kv.get(self._key(tenant_id, command_id))
        except nats.js.errors.KeyNotFoundError:
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("pending_command_lookup_unavailable", error=f"{type(exc).__name__}: {exc}")
            raise ApiError(503, "Service temporarily unavailable; retry shortly",
                           headers={"Retry-After": RETRY_AFTER_S}) from None
        return True


class TrackingCommandBus(CommandBus):
    """The command bus, noting every command it gives up waiting for (the caller answers 202)."""

    def __init__(self, *args, pending: PendingCommands, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pending = pending

    async def send(self, service, envelope, timeout_s=None) -> Outcome | None:
        outcome = await super().send(service, envelope, timeout_s)
        if outcome is None:
            await self.pending.remember(envelope.tenant_id, envelope.command_id)
        return outcome
