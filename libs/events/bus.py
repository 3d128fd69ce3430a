"""JetStream streams, subjects, and the gateway's command bus (publish, then wait for the outcome)."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import TYPE_CHECKING

import msgspec
import nats
import structlog
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from libs.events.db import DB_UNAVAILABLE, SAFE_NAME
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.settings import Settings
from libs.telemetry.tracing import inject

if TYPE_CHECKING:
    from libs.events.store import EventStore

log = structlog.get_logger()
COMMANDS_STREAM = "WEFT_COMMANDS"
EVENTS_STREAM = "WEFT_EVENTS"
EVENTS_MAX_AGE_S = 7 * 24 * 3600.0
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
            max_age=EVENTS_MAX_AGE_S,
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
    """The command was not accepted, the caller may retry (503): its command-log row did not commit (Postgres
    unreachable), or, for a bus without a command log, JetStream did not acknowledge it."""


INBOX_PREFIX = "weft.inbox."


def is_inbox(subject: str | None) -> bool:
    return bool(subject) and subject.startswith(INBOX_PREFIX) and ".." not in subject


class ReplyInbox:
    """One core-NATS subscription per process (`weft.inbox.<id>.*`) on which every command's outcome arrives,
    instead of a SUB and an UNSUB per command. Waiters are futures keyed by command id; several waiters for one
    command (two requests with the same Idempotency-Key) all hear the one reply."""

    def __init__(self, nc: nats.NATS) -> None:
        self.nc = nc
        self.prefix = f"{INBOX_PREFIX}{uuid.uuid4().hex}."
        self._waiters: dict[uuid.UUID, list[asyncio.Future]] = {}
        self._sub = None

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self.nc.subscribe(self.prefix + "*", cb=self._on_reply)

    def subject(self, command_id: uuid.UUID) -> str:
        return f"{self.prefix}{command_id}"

    def expect(self, command_id: uuid.UUID) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(command_id, []).append(future)
        return future

    def forget(self, command_id: uuid.UUID, future: asyncio.Future) -> None:
        waiters = self._waiters.get(command_id)
        if waiters is not None:
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                del self._waiters[command_id]

    async def _on_reply(self, msg) -> None:
        try:
            command_id = uuid.UUID(msg.subject[len(self.prefix):])
            outcome = _outcome_decoder.decode(msg.data)
        except (ValueError, msgspec.MsgspecError):
            return
        for future in self._waiters.pop(command_id, ()):
            if not future.done():
                future.set_result(outcome)


class CommandBus:
    """Records a command in the Postgres command log (accepted = row committed), publishes it with
    Nats-Msg-Id = command id, and waits, bounded, for the committed outcome (DESIGN section 3).

    Without a `store` (tests, benches that publish straight to JetStream) there is no command log, and a
    missing PubAck is CommandNotAccepted as before."""

    def __init__(self, nc: nats.NATS, js: JetStreamContext, timeout_s: float, *, store: EventStore | None = None):
        self.nc, self.js, self.timeout_s = nc, js, timeout_s
        self.store = store
        self.inbox = ReplyInbox(nc)

    async def send(self, service: str, envelope: CommandEnvelope, timeout_s: float | None = None) -> Outcome | None:
        """Returns the outcome, or None when it is not known in time (the caller says 202)."""
        tenant_id, command_id = envelope.tenant_id, envelope.command_id
        structlog.contextvars.bind_contextvars(correlation_id=envelope.correlation_id)  # in the caller's log lines
        subject = command_subject(service, tenant_id, type(envelope.command).__name__)
        payload = msgspec.json.encode(envelope)
        await self.inbox.start()
        reply_to = self.inbox.subject(command_id)
        if self.store is not None:
            await self._record(envelope, subject, payload, reply_to)
        # Expect the reply before publishing, so a fast one cannot be missed.
        future = self.inbox.expect(command_id)
        try:
            try:
                ack = await self._publish(subject, payload, command_id, reply_to)
            except (nats.errors.Error, asyncio.TimeoutError, CommandNotAccepted) as exc:
                if self.store is None:
                    raise CommandNotAccepted(str(exc) or type(exc).__name__) from exc
                # Accepted all the same: the row is committed and the relay publishes it once NATS is back.
                log.warning("command_publish_deferred", command_id=str(command_id),
                            error=f"{type(exc).__name__}: {exc}")
                return None
            wait = timeout_s or self.timeout_s
            if ack.duplicate and self.store is not None:
                # An earlier publish of this command (a retry with the same Idempotency-Key, maybe through
                # another gateway) carried another inbox, so the reply may never come here: poll the record.
                return await self._wait_or_poll(future, tenant_id, command_id, wait)
            try:
                return await asyncio.wait_for(future, wait)
            except (TimeoutError, asyncio.TimeoutError):
                return None
        finally:
            self.inbox.forget(command_id, future)

    async def _record(self, envelope: CommandEnvelope, subject: str, payload: bytes, reply_to: str) -> None:
        """Commit the command's row: from here on it is accepted. Postgres unreachable: not accepted (503).

        One round trip: a simple-query string of two statements runs as one implicit transaction (so the
        transaction-local role and tenant apply to the insert, and a failure rolls both back). The values are
        literals, which is safe only because each is checked: ids are UUIDs, the tenant and role match
        db.SAFE_NAME, the subject and inbox are built here from those, and the payload is hex."""
        tenant_id = envelope.tenant_id
        if not SAFE_NAME.match(tenant_id) or not SAFE_NAME.match(self.store.app_role) or not _SAFE_SUBJECT.match(
                subject) or not _SAFE_SUBJECT.match(reply_to):
            raise ValueError(f"unsafe command-log values: {tenant_id!r}, {subject!r}, {reply_to!r}")
        sql = (
            f"SELECT set_config('role', '{self.store.app_role}', true), set_config('weft.tenant_id', '{tenant_id}', true);"
            " INSERT INTO command_log (command_id, tenant_id, subject, payload, reply_to)"
            f" VALUES ('{uuid.UUID(str(envelope.command_id))}', '{tenant_id}', '{subject}', '\\x{payload.hex()}'::bytea,"
            f" '{reply_to}') ON CONFLICT (command_id) DO NOTHING"
        )
        try:
            async with self.store.pool.acquire() as conn:
                await conn.execute(sql)
        except (*DB_UNAVAILABLE, OSError, asyncio.TimeoutError) as exc:
            raise CommandNotAccepted(f"command log unavailable: {type(exc).__name__}: {exc}") from exc

    async def _publish(self, subject: str, payload: bytes, command_id: uuid.UUID, reply_to: str):
        if self.store is not None and not self.nc.is_connected:
            # The command is in the log; a publish now would only sit in the client's buffer.
            raise CommandNotAccepted("not connected to NATS")
        if self.store is None:
            await self._connected()
        # traceparent: the handling service's span continues the caller's trace
        return await self.js.publish(subject, payload, stream=COMMANDS_STREAM, timeout=self.timeout_s,
                                     headers=inject({"Nats-Msg-Id": str(command_id), REPLY_HEADER: reply_to}))

    async def _wait_or_poll(self, future: asyncio.Future, tenant_id: str, command_id: uuid.UUID,
                            wait: float) -> Outcome | None:
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            try:
                return await asyncio.wait_for(asyncio.shield(future), min(left, 0.2))
            except (TimeoutError, asyncio.TimeoutError):
                pass
            outcome = await self.store.outcome(tenant_id, command_id)
            if outcome is not None:
                return outcome

    async def _connected(self) -> None:
        """Wait, bounded, for a live connection before publishing. While reconnecting, the client would
        buffer the command and send it after the reconnect, even after the caller was told 503 (nothing
        accepted) and retried: a second run. Not publishing at all keeps 503 meaning "not accepted"."""
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while not self.nc.is_connected:
            if self.nc.is_closed or asyncio.get_running_loop().time() >= deadline:
                raise CommandNotAccepted("not connected to NATS")
            await asyncio.sleep(0.05)


REPLY_HEADER = "Weft-Reply"
# Subjects and inboxes as built by this module: tokens of letters, digits, '_' and '-'.
_SAFE_SUBJECT = re.compile(r"^[A-Za-z0-9_.-]{1,300}$")


async def confirmed(acks: list[asyncio.Future], timeout_s: float = 10.0) -> None:
    """Wait for every PubAck of a pipelined batch; on any failure cancel the rest and raise, so the caller
    publishes the whole batch again (the dedupe window drops what had landed)."""
    try:
        await asyncio.wait_for(asyncio.gather(*acks), timeout_s)
    except BaseException:
        for ack in acks:
            ack.cancel()
        raise
