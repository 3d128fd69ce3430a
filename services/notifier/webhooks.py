"""Run events -> webhook deliveries (spec D): which endpoints get one, in one transaction; and the wiring.

Each of RunStarted, RunCompleted, RunFailed and StepAwaitingApproval becomes one delivery per subscribed,
enabled endpoint of the tenant (api_key_id NULL) and of the API key that started the run (the RunCreated
actor "api_key:<key id>"). The deliveries, the record that this event was processed and each first
attempt's durable timer commit in one transaction, so a redelivered event makes nothing twice and a crash
after the commit loses nothing.
"""

from __future__ import annotations

import uuid
from functools import partial
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from libs.events.consumer import subscribe_events
from libs.events.faults import crash_point
from libs.adapters.outbound import GuardedHttpClient
from libs.domain.run_view import fold_run
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.schemas.registry import event_of
from libs.events.schemas.webhook import AttemptWebhookDelivery, NotifyWebhookEndpointDisabled
from libs.runtime.service import ServiceContext
from libs.events.settings import Settings
from libs.events.store import EventStore
from libs.events.timers import set_timers
from libs.telemetry import metrics
from libs.adapters.webhooks import attempt_timer, delivery_id
from services.notifier.webhook_delivery import WebhookSender
from services.notifier.webhook_payload import NOTIFIED, api_key_of, payload

log = structlog.get_logger()


class WebhookIntake:
    def __init__(self, store: EventStore, settings: Settings, sender: WebhookSender) -> None:
        self.store, self.settings, self.sender = store, settings, sender

    async def on_run_event(self, subject: str, headers: dict[str, Any], data: bytes) -> None:
        """weft.evt.<tenant>.run.<run uuid>.<EventType>, relayed with the event's id, stream and version."""
        event_name = NOTIFIED.get(subject.rsplit(".", 1)[-1])
        if event_name is None:
            return
        tenant_id = subject.split(".")[2]
        created = await self.record(tenant_id, uuid.UUID(headers["Nats-Msg-Id"]), headers["Weft-Stream"],
                                    int(headers["Weft-Version"]), event_name)
        for new in created:
            self.sender.start(tenant_id, new, 1)

    async def record(self, tenant_id: str, event_id: uuid.UUID, stream_id: str, version: int,
                     event_name: str) -> list[uuid.UUID]:
        """Create this event's deliveries (and their first attempts' timers); [] if it was processed before."""
        async with self.store.tenant_transaction(tenant_id) as conn:
            wanted = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled AND $1 = ANY(events))", event_name)
        if not wanted:  # the common case: nobody listens, so nothing is read or written
            return []
        # The run up to this event: the same payload however late or often the event is processed.
        recorded = await self.store.read_stream(tenant_id, stream_id, to_version=version)
        if len(recorded) != version or recorded[-1].event_id != event_id:
            raise LookupError(f"{stream_id} v{version} is not event {event_id}")  # NAKed and retried
        body = payload(event_name, event_of(recorded[-1]), fold_run(recorded)).decode()
        key_id = api_key_of(recorded[0].metadata.get("actor"))
        run_id = uuid.UUID(stream_id.split("-", 1)[1])
        now = datetime.now(UTC)
        async with self.store.tenant_transaction(tenant_id) as conn:
            first = await conn.fetchval(
                "INSERT INTO webhook_event_intake (event_id, tenant_id, deliveries) VALUES ($1, $2, 0)"
                " ON CONFLICT (event_id) DO NOTHING RETURNING true", event_id, tenant_id)
            if not first:
                return []
            endpoints = await conn.fetch(
                "SELECT id FROM webhook_endpoints WHERE enabled AND $1 = ANY(events)"
                " AND (api_key_id IS NULL OR api_key_id = $2)", event_name, key_id)
            ids = [delivery_id(event_id, e["id"]) for e in endpoints]
            await conn.execute(
                "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_id, event, execution_id, payload)"
                " SELECT d, $2, e, $3, $4, $5, $6 FROM unnest($1::uuid[], $7::uuid[]) AS t(d, e)"
                " ON CONFLICT DO NOTHING",
                ids, tenant_id, event_id, event_name, run_id, body, [e["id"] for e in endpoints],
            )
            await conn.execute("UPDATE webhook_event_intake SET deliveries = $2 WHERE event_id = $1", event_id, len(ids))
            # The first attempt is made at once in this process; its timer makes it only if that never
            # got recorded (this process died), a lease later.
            lease = now + timedelta(seconds=self.settings.webhook_lease_s)
            await set_timers(conn, tenant_id, [attempt_timer(tenant_id, d, 1, lease, str(event_id)) for d in ids])
        crash_point("webhook_deliveries_recorded")  # committed, no attempt made, the event not acked
        log.info("webhook_deliveries_created", webhook_event=event_name, run_id=str(run_id), deliveries=len(ids))
        return ids


async def handle_command(sender: WebhookSender, envelope: CommandEnvelope) -> Outcome:
    """Orders from durable timers. Both are idempotent by the state they check, so a re-published or
    redelivered command does nothing twice. The outcome is recorded like every other command's: a timer's
    command stays in the command log (and is published again) until it is (docs/decisions/0030)."""
    match envelope.command:
        case AttemptWebhookDelivery(delivery_id=delivery, attempt=number):
            await sender.attempt(envelope.tenant_id, delivery, number)
        case NotifyWebhookEndpointDisabled(endpoint_id=endpoint_id, disabled_at=disabled_at):
            await sender.notify_disabled(envelope.tenant_id, endpoint_id, disabled_at)
    return await sender.store.record_outcome(envelope.tenant_id, Outcome(command_id=envelope.command_id, status=200))


def setup_webhooks(ctx: ServiceContext, settings: Settings) -> WebhookSender:
    """Subscribe the notified run events; the caller subscribes the commands (one subscriber per service)."""
    client = GuardedHttpClient(settings)
    sender = WebhookSender(ctx.store, settings, client)
    intake = WebhookIntake(ctx.store, settings, sender)
    for event_type in NOTIFIED:
        subscribe_events(ctx.broker, durable=f"notifier-webhooks-{event_type}", subject=f"weft.evt.*.run.*.{event_type}",
                         settings=settings, handle=intake.on_run_event)
    ctx.on_stop.append(sender.stop)
    ctx.on_stop.append(client.aclose)
    metrics.add_sampler(partial(sample_dead_letters, ctx.pool))
    return sender


async def sample_dead_letters(pool) -> None:
    """weft_webhook_dead_letters: dead-lettered deliveries not replayed yet, every tenant. Through migration 026's
    function: the notifier's app login sees no tenant's rows outside a tenant transaction (it read 0 here)."""
    metrics.WEBHOOK_DEAD_LETTERS.set(await pool.fetchval("SELECT weft_count_dead_letters()"))


__all__ = ["WebhookIntake", "handle_command", "setup_webhooks"]
