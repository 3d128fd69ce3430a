"""JetStream streams, subjects, and the gateway's command bus (publish, then wait for the outcome)."""

from __future__ import annotations

import asyncio
import re
import uuid

import msgspec
import nats
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.settings import Settings

COMMANDS_STREAM = "WEFT_COMMANDS"
EVENTS_STREAM = "WEFT_EVENTS"
# A tenant id becomes a subject token, so it may hold no '.', '*', '>' or whitespace.
TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_outcome_decoder = msgspec.json.Decoder(Outcome)


def command_subject(service: str, tenant_id: str, command_type: str) -> str:
    return f"weft.cmd.{service}.{tenant_id}.{command_type}"


def event_subject(tenant_id: str, stream_id: str, event_type: str) -> str:
    category, _, key = stream_id.partition("-")
    return f"weft.evt.{tenant_id}.{category}.{key}.{event_type}"


def reply_subject(tenant_id: str, command_id: uuid.UUID) -> str:
    """Core-NATS subject on which the owning service announces a command's committed outcome.

    Derived from the command id, so every waiter for that command (a retry with the same
    Idempotency-Key included) hears the one answer.
    """
    return f"weft.reply.{tenant_id}.{command_id}"


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create or update both streams; safe to call from every process at start-up."""
    configs = [
        StreamConfig(
            name=COMMANDS_STREAM,
            subjects=["weft.cmd.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            duplicate_window=settings.events_duplicate_window_s,
            num_replicas=settings.nats_stream_replicas,
        ),
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=["weft.evt.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * 24 * 3600.0,
            duplicate_window=settings.events_duplicate_window_s,
            num_replicas=settings.nats_stream_replicas,
        ),
    ]
    for config in configs:
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)


class CommandNotAccepted(Exception):
    """JetStream did not acknowledge the command: nothing was accepted, the caller may retry (503)."""


class CommandBus:
    """Publishes commands with Nats-Msg-Id = command id and waits, bounded, for the committed outcome."""

    def __init__(self, nc: nats.NATS, js: JetStreamContext, timeout_s: float):
        self.nc, self.js, self.timeout_s = nc, js, timeout_s

    async def send(self, service: str, envelope: CommandEnvelope, timeout_s: float | None = None) -> Outcome | None:
        """Returns the outcome, or None when the service did not answer in time (the caller says 202)."""
        tenant_id, command_id = envelope.tenant_id, envelope.command_id
        # Subscribe before publishing so a fast reply cannot be missed.
        sub = await self.nc.subscribe(reply_subject(tenant_id, command_id), max_msgs=1)
        try:
            try:
                await self._connected()
                await self.js.publish(
                    command_subject(service, tenant_id, type(envelope.command).__name__),
                    msgspec.json.encode(envelope),
                    stream=COMMANDS_STREAM,
                    headers={"Nats-Msg-Id": str(command_id)},
                    timeout=self.timeout_s,
                )
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                raise CommandNotAccepted(str(exc) or type(exc).__name__) from exc
            try:
                msg = await sub.next_msg(timeout=timeout_s or self.timeout_s)
            except (TimeoutError, asyncio.TimeoutError, nats.errors.TimeoutError):
                return None
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.BadSubscriptionError:
                pass
        return _outcome_decoder.decode(msg.data)

    async def _connected(self) -> None:
        """Wait, bounded, for a live connection before publishing. While reconnecting, the client would
        buffer the command and send it after the reconnect, even after the caller was told 503 (nothing
        accepted) and retried: a second run. Not publishing at all keeps 503 meaning "not accepted"."""
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while not self.nc.is_connected:
            if self.nc.is_closed or asyncio.get_running_loop().time() >= deadline:
                raise CommandNotAccepted("not connected to NATS")
            await asyncio.sleep(0.05)
