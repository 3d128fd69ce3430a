"""Webhook attempts: send one signed attempt through the guarded client, record it, and in the same
transaction schedule the next one (a durable timer), dead-letter the delivery, or disable its endpoint.

Every attempt is ordered by a durable timer (libs/events/timers.py) whose id derives from (delivery,
attempt number). A first attempt is also made at once in-process; its timer, due a lease later, makes it
again only if this process died before recording it. Recording is idempotent (the attempt's primary key), so
two senders of one attempt record it once; both sent the same webhook-id, which a receiver honours.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import structlog

from libs.events.faults import crash_point
from libs.adapters.mail import MailError, message_id_for, send_mail
from libs.adapters.outbound import GuardedHttpClient, OutboundError
from libs.events.settings import Settings
from libs.events.store import EventStore
from libs.events.timers import cancel_timer, set_timers
from libs.adapters.webhooks import attempt_timer, attempt_timer_id, disabled_notice_timer, request_headers
from libs.telemetry import metrics
from libs.telemetry.tracing import traced
from services.notifier import webhook_policy as policy

log = structlog.get_logger()
# weft_webhook_attempts{outcome}: what a recorded attempt led to.
ATTEMPT_OUTCOMES = {"delivered": "delivered", "pending": "retrying", "dead": "dead_lettered"}

_TARGET_SQL = (
    "SELECT d.id, d.status, d.attempts, d.round_start, d.payload, d.event, d.execution_id, d.endpoint_id,"
    " e.id AS found, e.url, e.secret, e.enabled FROM webhook_deliveries d"
    " LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = $1"
)


def _delivery(row: asyncpg.Record) -> policy.Delivery:
    return policy.Delivery(status=row["status"], attempts=row["attempts"], round_start=row["round_start"])


class WebhookSender:
    """Makes and records attempts; `start` runs a first attempt in the background, bounded by
    settings.webhook_workers at once."""

    def __init__(self, store: EventStore, settings: Settings, client: GuardedHttpClient,
                 rng: random.Random | None = None) -> None:
        self.store, self.settings, self.client = store, settings, client
        self.delays = policy.parse_delays(settings.webhook_retry_delays_s)
        self.rng = rng or random.Random()
        self._slots = asyncio.Semaphore(max(1, settings.webhook_workers))
        self._tasks: set[asyncio.Task] = set()

    def start(self, tenant_id: str, delivery_id: uuid.UUID, attempt: int = 1) -> None:
        task = asyncio.create_task(self._background(tenant_id, delivery_id, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background(self, tenant_id: str, delivery_id: uuid.UUID, attempt: int) -> None:
        try:
            async with self._slots:
                await self.attempt(tenant_id, delivery_id, attempt)
        except Exception as exc:  # noqa: BLE001 - the attempt's durable timer makes it again
            log.warning("webhook_attempt_deferred", delivery_id=str(delivery_id), attempt=attempt,
                        error=f"{type(exc).__name__}: {exc}")

    async def stop(self) -> None:
        """Abandon background attempts: each has a durable timer that makes it later."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def attempt(self, tenant_id: str, delivery_id: uuid.UUID, number: int) -> None:
        """Make attempt `number` unless it is not due (made already, delivery no longer pending); one span each."""
        with traced("webhook delivery") as span:
            if span.is_recording():
                span.set_attributes({"weft.delivery_id": str(delivery_id), "weft.attempt": number})
            await self._attempt(tenant_id, delivery_id, number)

    async def _attempt(self, tenant_id: str, delivery_id: uuid.UUID, number: int) -> None:
        async with self.store.tenant_transaction(tenant_id) as conn:
            target = await conn.fetchrow(_TARGET_SQL, delivery_id)
        if target is None or not policy.is_next_attempt(_delivery(target), number):
            log.info("webhook_attempt_not_due", delivery_id=str(delivery_id), attempt=number)
            return
        if target["found"] is None or not target["enabled"]:
            await self._close_without_sending(tenant_id, delivery_id, number, deleted=target["found"] is None)
            return
        attempt = await self._send(target, number)
        crash_point("webhook_after_send")
        after = await self.record(tenant_id, delivery_id, attempt)
        if after is not None:  # counted once it is committed, by what follows from it
            metrics.WEBHOOK_DELIVERIES.labels(ATTEMPT_OUTCOMES[after.status]).inc()

    async def _send(self, target: asyncpg.Record, number: int) -> policy.Attempt:
        started_at = datetime.now(UTC)
        body = target["payload"].encode()
        headers = request_headers(target["secret"], event=target["event"], execution_id=str(target["execution_id"]),
                                  webhook_id=str(target["id"]), timestamp=int(started_at.timestamp()), body=body)
        began = time.monotonic()
        try:
            response = await self.client.request("POST", target["url"], headers=headers, content=body,
                                                 timeout=self.settings.webhook_timeout_s)
        except OutboundError as exc:
            attempt = policy.Attempt(number=number, started_at=started_at, status_code=None,
                                     latency_ms=round((time.monotonic() - began) * 1000, 3), error=str(exc))
        else:
            attempt = policy.Attempt(number=number, started_at=started_at, status_code=response.status,
                                     latency_ms=response.elapsed_ms, response_body=response.text[:policy.RESPONSE_SNIPPET])
        log.info("webhook_attempted", delivery_id=str(target["id"]), attempt=number, status=attempt.status_code,
                 latency_ms=attempt.latency_ms, error=attempt.failure)
        return attempt

    async def record(self, tenant_id: str, delivery_id: uuid.UUID, attempt: policy.Attempt) -> policy.Next | None:
        """Record the attempt and what follows from it, in one transaction; None when it was recorded before."""
        now = datetime.now(UTC)
        async with self.store.tenant_transaction(tenant_id) as conn:
            # The row lock orders this against a concurrent replay, delete or second sender.
            row = await conn.fetchrow("SELECT status, attempts, round_start, endpoint_id FROM webhook_deliveries"
                                      " WHERE id = $1 FOR UPDATE", delivery_id)
            if row is None:
                return None
            inserted = await conn.fetchval(
                "INSERT INTO webhook_attempts (delivery_id, attempt, tenant_id, started_at, status_code, latency_ms,"
                " error, response_body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (delivery_id, attempt) DO NOTHING RETURNING true",
                delivery_id, attempt.number, tenant_id, attempt.started_at, attempt.status_code, attempt.latency_ms,
                attempt.error, attempt.response_body,
            )
            delivery = _delivery(row)
            if not inserted or not policy.is_next_attempt(delivery, attempt.number):
                return None  # another sender recorded it, or the delivery was cancelled meanwhile
            # The in-process attempt's lease timer is no longer needed (a no-op for a timer that fired).
            await cancel_timer(conn, tenant_id, attempt_timer_id(delivery_id, attempt.number))
            after = policy.after_attempt(delivery, attempt, now=now, delays=self.delays,
                                         jitter=self.settings.webhook_retry_jitter, unit=self.rng.random())
            await conn.execute(
                "UPDATE webhook_deliveries SET status = $2, attempts = $3, last_error = $4, next_attempt_at = $5,"
                " updated_at = $6, delivered_at = CASE WHEN $2 = 'delivered' THEN $6::timestamptz END WHERE id = $1",
                delivery_id, after.status, attempt.number, after.error,
                after.retry_at, now,
            )
            if after.status == "delivered":
                await conn.execute("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1",
                                   row["endpoint_id"])
            elif after.status == "pending":
                await set_timers(conn, tenant_id, [attempt_timer(tenant_id, delivery_id, attempt.number + 1,
                                                                 after.retry_at)])
            else:
                await self._dead_letter(conn, tenant_id, delivery_id, row["endpoint_id"], after.error or "", now,
                                        counts=True)
        return after

    async def _close_without_sending(self, tenant_id: str, delivery_id: uuid.UUID, number: int, *, deleted: bool) -> None:
        """The endpoint was deleted (the delivery is cancelled) or disabled (dead-lettered for a later replay
        once it is enabled again; this does not count as the endpoint failing)."""
        now = datetime.now(UTC)
        async with self.store.tenant_transaction(tenant_id) as conn:
            row = await conn.fetchrow("SELECT status, attempts, round_start, endpoint_id FROM webhook_deliveries"
                                      " WHERE id = $1 FOR UPDATE", delivery_id)
            if row is None or not policy.is_next_attempt(_delivery(row), number):
                return
            await cancel_timer(conn, tenant_id, attempt_timer_id(delivery_id, number))
            if deleted:
                await conn.execute("UPDATE webhook_deliveries SET status = 'cancelled', last_error = 'endpoint deleted',"
                                   " next_attempt_at = NULL, updated_at = $2 WHERE id = $1", delivery_id, now)
            else:
                await self._dead_letter(conn, tenant_id, delivery_id, row["endpoint_id"], "endpoint disabled", now,
                                        counts=False)
        metrics.WEBHOOK_DELIVERIES.labels("cancelled" if deleted else "dead_lettered").inc()
        log.info("webhook_closed_unsent", delivery_id=str(delivery_id), reason="deleted" if deleted else "disabled")

    async def _dead_letter(self, conn: asyncpg.Connection, tenant_id: str, delivery_id: uuid.UUID,
                           endpoint_id: uuid.UUID, reason: str, now: datetime, *, counts: bool) -> None:
        await conn.execute("UPDATE webhook_deliveries SET status = 'dead', last_error = $2, next_attempt_at = NULL,"
                           " updated_at = $3 WHERE id = $1", delivery_id, reason, now)
        await conn.execute(
            "INSERT INTO webhook_dead_letters (delivery_id, tenant_id, endpoint_id, reason, dead_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (delivery_id) DO UPDATE"
            " SET reason = excluded.reason, dead_at = excluded.dead_at, replayed_at = NULL",
            delivery_id, tenant_id, endpoint_id, reason, now,
        )
        log.warning("webhook_dead_lettered", delivery_id=str(delivery_id), reason=reason)
        if not counts:
            return
        endpoint = await conn.fetchrow(
            "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1 WHERE id = $1"
            " RETURNING consecutive_failures, enabled", endpoint_id)
        if endpoint is None or not endpoint["enabled"]:
            return
        if policy.disables_endpoint(endpoint["consecutive_failures"], self.settings.webhook_disable_after):
            # Disabling and the order to email the owner commit together: the mail cannot be lost.
            await conn.execute(
                "UPDATE webhook_endpoints SET enabled = false, disabled_at = $2, disabled_reason = $3,"
                " owner_notified_at = NULL WHERE id = $1",
                endpoint_id, now, f"{endpoint['consecutive_failures']} deliveries in a row failed; last: {reason}",
            )
            await set_timers(conn, tenant_id, [disabled_notice_timer(tenant_id, endpoint_id, now)])
            log.warning("webhook_endpoint_disabled", endpoint_id=str(endpoint_id),
                        consecutive_failures=endpoint["consecutive_failures"])

    async def notify_disabled(self, tenant_id: str, endpoint_id: uuid.UUID, disabled_at: datetime) -> None:
        """Email the owner that the endpoint was disabled, at most once per disabling (docs/decisions/0010).

        The notice is claimed (a sent_emails row keyed by the disabling, and owner_notified_at) in a transaction
        that commits before the SMTP exchange, so neither a concurrent redelivery nor a crash after the server's
        250 sends it again. A retryable refusal gives the claim back; the command is redelivered. The price is
        the crash during the exchange itself, which loses this notice; the disabling stays visible in the API
        (enabled false, disabled_at, disabled_reason)."""
        notice_id = uuid.uuid5(endpoint_id, f"webhook-disabled:{disabled_at.timestamp()}")
        message_id = message_id_for(f"webhook-disabled:{endpoint_id}:{disabled_at.timestamp()}")
        async with self.store.tenant_transaction(tenant_id) as conn:
            endpoint = await conn.fetchrow(
                "SELECT url, owner_email, disabled_at, disabled_reason, owner_notified_at FROM webhook_endpoints"
                " WHERE id = $1 FOR UPDATE", endpoint_id)
            if endpoint is None or endpoint["owner_notified_at"] is not None or endpoint["disabled_at"] != disabled_at:
                return  # deleted, already told, or enabled (and maybe disabled again) since
            if not endpoint["owner_email"]:
                log.warning("webhook_endpoint_disabled_no_owner", endpoint_id=str(endpoint_id))
                return
            claimed = await conn.fetchval(
                "INSERT INTO sent_emails (event_id, recipient, tenant_id, kind, message_id) VALUES ($1, $2, $3,"
                " 'webhook_disabled', $4) ON CONFLICT (event_id, recipient) DO NOTHING RETURNING true",
                notice_id, endpoint["owner_email"], tenant_id, message_id)
            if not claimed:
                return
            await conn.execute("UPDATE webhook_endpoints SET owner_notified_at = $2 WHERE id = $1",
                               endpoint_id, datetime.now(UTC))
        try:
            await send_mail(
                self.settings, to=endpoint["owner_email"], subject="Weft: webhook endpoint disabled",
                text=_disabled_text(endpoint_id, endpoint["url"], endpoint["disabled_reason"], disabled_at),
                headers={"Message-ID": message_id, "X-Weft-Webhook-Endpoint": str(endpoint_id)},
            )
        except MailError as exc:
            async with self.store.tenant_transaction(tenant_id) as conn:
                if exc.retryable:  # give the claim back: the redelivered command sends it
                    await conn.execute("DELETE FROM sent_emails WHERE event_id = $1 AND recipient = $2",
                                       notice_id, endpoint["owner_email"])
                    await conn.execute("UPDATE webhook_endpoints SET owner_notified_at = NULL WHERE id = $1"
                                       " AND disabled_at = $2", endpoint_id, disabled_at)
                else:
                    await conn.execute("UPDATE sent_emails SET error = $3 WHERE event_id = $1 AND recipient = $2",
                                       notice_id, endpoint["owner_email"], str(exc)[:1000])
            if exc.retryable:
                raise
            log.error("webhook_owner_mail_failed", endpoint_id=str(endpoint_id), error=str(exc))
            return
        crash_point("webhook_after_owner_mail")
        log.info("webhook_owner_mail_sent", endpoint_id=str(endpoint_id), message_id=message_id)


def _disabled_text(endpoint_id: uuid.UUID, url: str, reason: str | None, disabled_at: datetime) -> str:
    return (
        f"Weft disabled your webhook endpoint {endpoint_id}\n"
        f"  {url}\n"
        f"at {disabled_at.isoformat()} because {reason or 'its deliveries kept failing'}.\n\n"
        "No further webhooks are sent to it. Failed deliveries are kept as dead letters.\n"
        f"Enable it again:   PATCH /api/v2/webhooks/{endpoint_id}  {{\"enabled\": true}}\n"
        "Replay a delivery: POST /api/v2/webhooks/deliveries/<delivery id>/replay\n"
    )
