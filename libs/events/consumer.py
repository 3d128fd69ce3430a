"""Durable pull consumers with explicit ack after commit, NAK with delay, and poison handling.

FastStream's default ack policy terminates a message on any exception, which would silently drop a
command whose handler failed once; every Weft subscriber uses AckPolicy.MANUAL and this wrapper.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats
import nats.js.errors
import structlog
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, NatsBroker, NatsMessage, PullSub
from faststream.nats.schemas import JStream
from nats.js import JetStreamContext

from libs.events.bus import COMMANDS_STREAM, EVENTS_STREAM, REPLY_HEADER, ensure_streams, is_inbox, reply_subject
from libs.events.db import DB_UNAVAILABLE
from libs.events.faults import crash_point
from libs.events.schemas import CommandEnvelope, CommandRejected, Metadata, Outcome
from libs.events.settings import Settings
from libs.events.store import CommandAlreadyProcessed, EventStore

log = structlog.get_logger()
# (stream, durable) of every subscriber registered through this module, per broker: see keep_consumers.
_DURABLES: weakref.WeakKeyDictionary[NatsBroker, list[tuple[str, str]]] = weakref.WeakKeyDictionary()


async def _whole_message(msg: NatsMessage) -> NatsMessage:
    """Hand handlers the message object as their body. Asking for it by injection (a `msg: NatsMessage`
    parameter) makes fast_depends resolve a synchronous Context dependency in a worker thread for every
    message, about 15% of the executor's time under load (bench/bench_runs.py profile)."""
    return msg


def backoff(settings: Settings, deliveries: int) -> float:
    return min(settings.nak_delay_s * 2 ** max(deliveries - 1, 0), 30.0)


async def _keep_in_progress(msg: NatsMessage, every_s: float) -> None:
    """Tell JetStream a long handler (a model call) is still working, so it is not redelivered meanwhile."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await msg.in_progress()
        except nats.errors.Error:
            return


def _consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(max_deliver=settings.max_deliver, ack_wait=settings.ack_wait_s)


async def reject_command(
    store: EventStore, *, tenant_id: str, command_id: uuid.UUID, subject: str, reason: str, deliveries: int
) -> Outcome:
    """Record a poison command as a CommandRejected event (and its outcome) in one transaction."""
    event = CommandRejected(
        command_id=command_id, subject=subject, reason=reason[:2000], deliveries=deliveries, at=datetime.now(UTC)
    )
    try:
        return await store.append(
            f"command-{command_id}",
            0,
            [event],
            metadata=Metadata(tenant_id=tenant_id, command_id=str(command_id)),
            status=500,
        )
    except CommandAlreadyProcessed as done:
        return done.outcome


async def _handle_through_db_outage(handle: Callable[[CommandEnvelope], Awaitable[Outcome]],
                                    envelope: CommandEnvelope) -> Outcome:
    """handle(envelope), retried in place while Postgres is unreachable (the keepalive holds the message).

    A database outage is not the command's fault: NAKing it would spend JetStream deliveries, and once
    MaxDeliver is reached an accepted command would be rejected as poison, or dropped unrecorded when the
    rejection cannot be written either."""
    delay = 0.2
    while True:
        try:
            return await handle(envelope)
        except DB_UNAVAILABLE as exc:
            log.warning("command_waiting_for_database", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def subscribe_commands(
    broker: NatsBroker,
    *,
    service: str,
    settings: Settings,
    store: EventStore,
    nc: nats.NATS,
    command_type: Any,
    handle: Callable[[CommandEnvelope], Awaitable[Outcome]],
    max_workers: int = 1,
) -> None:
    """Register the service's command subscriber on weft.cmd.<service>.> (durable, pull, manual ack).

    max_workers > 1 handles that many commands at once (the planner's model calls are slow); commands on
    one aggregate stay safe through expected-version checks.
    """
    decoder = msgspec.json.Decoder(CommandEnvelope[command_type])  # type: ignore[index]
    _DURABLES.setdefault(broker, []).append((COMMANDS_STREAM, f"{service}-commands"))

    @broker.subscriber(
        f"weft.cmd.{service}.>",
        stream=JStream(COMMANDS_STREAM, declare=False),
        durable=f"{service}-commands",
        pull_sub=PullSub(batch_size=16, timeout=1.0),
        config=_consumer_config(settings),
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
        decoder=_whole_message,
        **({"max_workers": max_workers} if max_workers > 1 else {}),
    )
    async def on_command(msg) -> None:  # the NatsMessage itself (see _whole_message)
        raw = msg.raw_message
        deliveries = raw.metadata.num_delivered
        tenant_id = raw.subject.split(".")[3]
        structlog.contextvars.bind_contextvars(tenant_id=tenant_id, subject=raw.subject, deliveries=deliveries)
        try:
            envelope = decoder.decode(raw.data)
        except msgspec.MsgspecError as exc:
            # Undecodable: it will never succeed, so reject it now rather than after MaxDeliver.
            command_id = uuid.UUID(raw.headers.get("Nats-Msg-Id")) if raw.headers else uuid.uuid4()
            await reject_command(store, tenant_id=tenant_id, command_id=command_id, subject=raw.subject,
                                 reason=f"undecodable command: {exc}", deliveries=deliveries)
            await msg.reject()
            log.error("command_undecodable", error=str(exc))
            return
        # The outcome goes to the publisher's inbox (libs/events/bus.ReplyInbox) when it named one.
        reply_to = (raw.headers or {}).get(REPLY_HEADER)
        if not is_inbox(reply_to):
            reply_to = reply_subject(tenant_id, envelope.command_id)
        structlog.contextvars.bind_contextvars(
            command_id=str(envelope.command_id), correlation_id=envelope.correlation_id,
            causation_id=str(envelope.command_id),
        )
        started = time.perf_counter()
        keepalive = asyncio.create_task(_keep_in_progress(msg, settings.ack_wait_s / 3))
        try:
            outcome = await _handle_through_db_outage(handle, envelope)
        except Exception as exc:  # noqa: BLE001 - every failure is either retried or recorded
            if deliveries >= settings.max_deliver:
                outcome = await reject_command(
                    store, tenant_id=tenant_id, command_id=envelope.command_id, subject=raw.subject,
                    reason=f"{type(exc).__name__}: {exc}", deliveries=deliveries,
                )
                await msg.reject()
                log.error("command_rejected", error=str(exc))
                await nc.publish(reply_to, msgspec.json.encode(outcome))
                return
            delay = backoff(settings, deliveries)
            await msg.nack(delay=delay)
            log.warning("command_nacked", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
            return
        finally:
            keepalive.cancel()
        # Ack only after the outcome is committed; then announce it to whoever waits.
        crash_point("before_ack")
        await msg.ack()
        await nc.publish(reply_to, msgspec.json.encode(outcome))
        log.info("command_handled", status=outcome.status, handled_ms=round((time.perf_counter() - started) * 1000, 2))


def subscribe_events(
    broker: NatsBroker,
    *,
    durable: str,
    subject: str,
    settings: Settings,
    handle: Callable[[str, dict[str, Any], bytes], Awaitable[None]],
) -> None:
    """Register a durable event subscriber on WEFT_EVENTS; handle(subject, headers, data) must be idempotent."""
    _DURABLES.setdefault(broker, []).append((EVENTS_STREAM, durable))

    @broker.subscriber(
        subject,
        stream=JStream(EVENTS_STREAM, declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=16, timeout=1.0),
        config=ConsumerConfig(ack_wait=settings.ack_wait_s),
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
        decoder=_whole_message,
    )
    async def on_event(msg) -> None:  # the NatsMessage itself (see _whole_message)
        raw = msg.raw_message
        structlog.contextvars.bind_contextvars(subject=raw.subject, message_id=(raw.headers or {}).get("Nats-Msg-Id"))
        try:
            await handle(raw.subject, dict(raw.headers or {}), raw.data)
        except Exception as exc:  # noqa: BLE001 - events are retried until handled; nothing is dropped
            delay = backoff(settings, raw.metadata.num_delivered)
            await msg.nack(delay=delay)
            log.warning("event_nacked", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
            return
        crash_point("before_ack")
        await msg.ack()


async def keep_consumers(broker: NatsBroker, nc: nats.NATS, js: JetStreamContext, settings: Settings,
                         every_s: float = 1.0) -> None:
    """Recreate the streams and this process's durable consumers when nats-server comes back without them.

    JetStream is a transport, not a store (DESIGN section 3): a server that lost its store knows no stream and
    no consumer, and the subscribers' fetches would find nothing forever. Each consumer's config is taken once
    the broker has created it, and declared again, unchanged, after every reconnect that finds it missing.
    The relay refills WEFT_EVENTS and publishes again the logged commands with no outcome."""
    configs: dict[tuple[str, str], Any] = {}
    for stream, durable in _DURABLES.get(broker, ()):
        while (stream, durable) not in configs:
            try:
                configs[(stream, durable)] = (await js.consumer_info(stream, durable)).config
            except (nats.errors.Error, asyncio.TimeoutError) as exc:  # NATS not there right now: wait for it
                log.warning("consumer_config_unread", durable=durable, error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(every_s)
    reconnects = nc.stats["reconnects"]
    while True:
        await asyncio.sleep(every_s)
        if nc.stats["reconnects"] == reconnects or not nc.is_connected:
            continue
        try:
            await ensure_streams(js, settings)
            for (stream, durable), config in configs.items():
                try:
                    await js.consumer_info(stream, durable)
                except nats.js.errors.NotFoundError:
                    await js.add_consumer(stream, config)
                    log.warning("consumer_recreated", stream=stream, durable=durable)
            reconnects = nc.stats["reconnects"]
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            log.warning("consumers_check_failed", error=f"{type(exc).__name__}: {exc}")
