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

import asyncpg
import msgspec
import nats
import nats.errors
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
from libs.telemetry import metrics
from libs.telemetry.tracing import SpanKind, context_from, mark_error, traced

log = structlog.get_logger()
# (stream, durable) of every subscriber registered through this module, per broker: see keep_consumers.
_DURABLES: weakref.WeakKeyDictionary[NatsBroker, list[tuple[str, str]]] = weakref.WeakKeyDictionary()


async def _whole_message(msg: NatsMessage) -> NatsMessage:
    """Hand handlers the message object as their body. Asking for it by injection (a `msg: NatsMessage`
    parameter) makes fast_depends resolve a synchronous Context dependency in a worker thread for every
    message, about 15% of the executor's time under load (bench/bench_runs.py profile)."""
    return msg


def _fetch_times_out_as_documented() -> None:
    """An idle pull fetch must end in nats.errors.TimeoutError, which FastStream's pull loop expects and skips.

    Since nats-py 2.15 (nats-io/nats.py#934) `fetch(batch > 1)` raises a bare asyncio.TimeoutError when the
    server's "request timeout" reply arrives just before the client's own timer (about one idle fetch in 20).
    FastStream's loop does not catch that: the pull task dies, FastStream logs an ERROR traceback and restarts
    it. Translating the bare timeout restores the contract (proposed upstream in nats-io/nats.py#1008); it is
    idempotent and changes nothing once nats-py raises the documented error itself."""
    fetch = JetStreamContext.PullSubscription.fetch
    if getattr(fetch, "weft_documented_timeout", False):
        return

    async def documented_fetch(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await fetch(self, *args, **kwargs)
        except nats.errors.TimeoutError:
            raise
        except asyncio.TimeoutError as exc:
            raise nats.errors.TimeoutError from exc

    documented_fetch.weft_documented_timeout = True  # type: ignore[attr-defined]
    JetStreamContext.PullSubscription.fetch = documented_fetch  # type: ignore[method-assign]


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
    store: EventStore, *, tenant_id: str, command_id: uuid.UUID, subject: str, reason: str, deliveries: int,
    status: int = 500,
) -> Outcome:
    """Record a poison command as a CommandRejected event (and its outcome, `status`) in one transaction."""
    event = CommandRejected(
        command_id=command_id, subject=subject, reason=reason[:2000], deliveries=deliveries, at=datetime.now(UTC)
    )
    try:
        return await store.append(
            f"command-{command_id}",
            0,
            [event],
            metadata=Metadata(tenant_id=tenant_id, command_id=str(command_id)),
            status=status,
            error=reason[:2000] if status < 500 else None,
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
    _fetch_times_out_as_documented()
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
            metrics.COMMANDS.labels("undecodable", "rejected").inc()
            return
        # The outcome goes to the publisher's inbox (libs/events/bus.ReplyInbox) when it named one.
        reply_to = (raw.headers or {}).get(REPLY_HEADER)
        if not is_inbox(reply_to):
            reply_to = reply_subject(tenant_id, envelope.command_id)
        structlog.contextvars.bind_contextvars(
            command_id=str(envelope.command_id), correlation_id=envelope.correlation_id,
            causation_id=str(envelope.command_id),
        )
        command_type = type(envelope.command).__name__
        # The span continues the sender's trace (traceparent header); events this command appends carry it on.
        with traced(f"command {command_type}", context=context_from(raw.headers),
                                          kind=SpanKind.CONSUMER) as span:
            outcome_label = await _handle_and_ack(msg, envelope, deliveries, tenant_id, reply_to)
            metrics.labelled(metrics.COMMANDS, command_type, outcome_label).inc()
            if outcome_label in ("nacked", "rejected"):
                mark_error(span, outcome_label)

    async def _handle_and_ack(msg, envelope: CommandEnvelope, deliveries: int, tenant_id: str, reply_to: str) -> str:
        """Handle, record, ack and announce one decoded command; returns the metric's outcome label."""
        raw = msg.raw_message
        command_type = type(envelope.command).__name__
        started = time.perf_counter()
        keepalive = asyncio.create_task(_keep_in_progress(msg, settings.ack_wait_s / 3))
        try:
            outcome = await _handle_through_db_outage(handle, envelope)
        except Exception as exc:  # noqa: BLE001 - every failure is either retried or recorded
            # Data Postgres cannot store (SQLSTATE class 22: a NUL in text, a number out of range, ...) fails the
            # same way on every delivery: refuse it now, as the client's error, instead of after MaxDeliver.
            bad_data = isinstance(exc, asyncpg.DataError)
            if bad_data or deliveries >= settings.max_deliver:
                outcome = await reject_command(
                    store, tenant_id=tenant_id, command_id=envelope.command_id, subject=raw.subject,
                    reason=f"Invalid data: {exc}" if bad_data else f"{type(exc).__name__}: {exc}",
                    deliveries=deliveries, status=400 if bad_data else 500,
                )
                await msg.reject()
                log.error("command_rejected", error=str(exc))
                await nc.publish(reply_to, msgspec.json.encode(outcome))
                return "rejected"
            delay = backoff(settings, deliveries)
            await msg.nack(delay=delay)
            log.warning("command_nacked", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
            return "nacked"
        finally:
            keepalive.cancel()
        # Ack only after the outcome is committed; then announce it to whoever waits.
        crash_point("before_ack")
        await msg.ack()
        await nc.publish(reply_to, msgspec.json.encode(outcome))
        elapsed = time.perf_counter() - started
        metrics.labelled(metrics.COMMAND_LATENCY, command_type).observe(elapsed)
        log.info("command_handled", status=outcome.status, handled_ms=round(elapsed * 1000, 2))
        return "ok" if outcome.ok else "refused"


def subscribe_events(
    broker: NatsBroker,
    *,
    durable: str,
    subject: str,
    settings: Settings,
    handle: Callable[[str, dict[str, Any], bytes], Awaitable[None]],
) -> None:
    """Register a durable event subscriber on WEFT_EVENTS; handle(subject, headers, data) must be idempotent."""
    _fetch_times_out_as_documented()
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
        # The event's metadata traceparent, put in the headers by the relay: this reaction joins the trace.
        with traced(f"event {raw.subject.rsplit('.', 1)[-1]}", kind=SpanKind.CONSUMER,
                                          context=context_from(raw.headers)) as span:
            try:
                await handle(raw.subject, dict(raw.headers or {}), raw.data)
            except Exception as exc:  # noqa: BLE001 - events are retried until handled; nothing is dropped
                delay = backoff(settings, raw.metadata.num_delivered)
                await msg.nack(delay=delay)
                log.warning("event_nacked", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
                mark_error(span, "nacked")
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
