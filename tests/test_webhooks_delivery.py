"""Webhook intake and attempts in-process, against a real Postgres (a database of its own, so no relay,
scheduler or notifier process races these tests), real loopback receivers and a real SMTP server.

Each durable timer the code sets is read back from the timers table; calling `sender.attempt(n)` stands in
for the scheduler firing it (tests/test_webhooks.py lets the real scheduler do that). Every outbound dial
goes through the transport spy of tests/test_integrations.py, which dials nothing but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from typing import Any

import msgspec
import pytest
from standardwebhooks import Webhook

from libs.adapters.outbound import GuardedHttpClient
from libs.events.schemas import Metadata
from libs.events.schemas.run import RunCompleted, RunCreated, RunStarted
from libs.events.settings import Settings, load_settings
from libs.events.store import EventStore
from libs.adapters.webhooks import attempt_timer_id, create_endpoint, standard_secret
from services.notifier.webhook_delivery import WebhookSender
from services.notifier.webhooks import WebhookIntake
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.test_integrations import PUBLIC_IP, ScriptedResolver, dials, smtp  # noqa: F401 - fixtures

SECRET = "your-webhook-secret-key"


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"outbound_allow_hosts": "127.0.0.1:*", "outbound_timeout_s": 5.0,
                              "webhook_lease_s": 600.0}
    return load_settings({}, **(values | overrides))


@pytest.fixture
def store(isolated_store: EventStore) -> EventStore:
    return isolated_store


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


class Harness:
    def __init__(self, store: EventStore, tenant: str, settings: Settings, resolver: Any = None) -> None:
        self.store, self.tenant, self.settings = store, tenant, settings
        self.client = GuardedHttpClient(settings, resolver)
        self.sender = WebhookSender(store, settings, self.client)
        self.intake = WebhookIntake(store, settings, self.sender)

    async def endpoint(self, url: str, events: tuple[str, ...] = ("execution.started", "execution.completed"),
                       api_key_id: uuid.UUID | None = None, owner_email: str | None = None) -> uuid.UUID:
        async with self.store.tenant_transaction(self.tenant) as conn:
            return await create_endpoint(conn, tenant_id=self.tenant, url=url, events=events, secret=SECRET,
                                         api_key_id=api_key_id, owner_email=owner_email)

    async def run_event(self, actor: str = "alice", completed: bool = False) -> tuple[uuid.UUID, uuid.UUID, int]:
        """A run's stream with RunCreated (by `actor`) and RunStarted (+ RunCompleted); (run, last event id, version)."""
        run_id, now = uuid.uuid4(), datetime.now(UTC)
        events: list[Any] = [
            RunCreated(run_id=run_id, workflow_id=uuid.uuid4(), workflow_version=1,
                       definition={"nodes": [{"id": "a", "type": "echo"}], "concurrency": "unlimited"},
                       inputs={}, created_by=actor, at=now),
            RunStarted(run_id=run_id, at=now),
        ]
        if completed:
            events.append(RunCompleted(run_id=run_id, outputs={"successCount": 3, "failedCount": 0}, at=now))
        await self.store.append(f"run-{run_id}", 0, events, metadata=Metadata(tenant_id=self.tenant, actor=actor))
        last = (await self.store.read_stream(self.tenant, f"run-{run_id}"))[-1]
        return run_id, last.event_id, last.version

    async def deliver_event(self, name: str = "execution.started", **kwargs: Any) -> list[uuid.UUID]:
        run_id, event_id, version = await self.run_event(**kwargs)
        return await self.intake.record(self.tenant, event_id, f"run-{run_id}", version, name)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.store.tenant_transaction(self.tenant) as conn:
            return await conn.fetch(sql, *args)

    async def delivery(self, delivery_id: uuid.UUID) -> Any:
        (row,) = await self.fetch("SELECT * FROM webhook_deliveries WHERE id = $1", delivery_id)
        return row

    async def attempts(self, delivery_id: uuid.UUID) -> list[Any]:
        return await self.fetch("SELECT * FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt", delivery_id)

    async def timer(self, timer_id: uuid.UUID) -> Any:
        rows = await self.fetch("SELECT status, due_at, service, command_type, envelope::text AS envelope FROM timers"
                                " WHERE timer_id = $1", timer_id)
        return rows[0] if rows else None


@pytest.fixture
async def harness(store: EventStore, tenant: str):
    h = Harness(store, tenant, make_settings())
    yield h
    await h.sender.stop()
    await h.client.aclose()


# --- intake: events -> deliveries ---------------------------------------------------------------------


async def test_an_event_makes_one_delivery_per_endpoint_of_the_tenant_and_of_the_runs_key(harness, receiver):
    key, other_key = uuid.uuid4(), uuid.uuid4()
    tenant_wide = await harness.endpoint(receiver.url("/ok"))
    for_key = await harness.endpoint(receiver.url("/ok"), api_key_id=key)
    await harness.endpoint(receiver.url("/ok"), api_key_id=other_key)
    await harness.endpoint(receiver.url("/ok"), events=("execution.failed",))
    run_id, event_id, version = await harness.run_event(actor=f"api_key:{key}")
    created = await harness.intake.record(harness.tenant, event_id, f"run-{run_id}", version, "execution.started")
    rows = await harness.fetch("SELECT id, endpoint_id, event, execution_id, payload FROM webhook_deliveries"
                               " WHERE event_id = $1", event_id)
    assert {r["endpoint_id"] for r in rows} == {tenant_wide, for_key} and sorted(created) == sorted(r["id"] for r in rows)
    body = msgspec.json.decode(rows[0]["payload"])
    assert body["event"] == "execution.started" and body["executionId"] == str(run_id)
    assert body["data"]["status"] == "running"
    # Each first attempt's timer committed with its delivery, due a lease later, addressed to the notifier.
    for delivery_id in created:
        timer = await harness.timer(attempt_timer_id(delivery_id, 1))
        assert timer["status"] == "pending" and timer["service"] == "notifier"
        assert timer["command_type"] == "AttemptWebhookDelivery"
        assert timer["due_at"] > datetime.now(UTC) + timedelta(seconds=500)
    # The same event again (a redelivery after a crash before the ack) makes nothing.
    again = await harness.intake.record(harness.tenant, event_id, f"run-{run_id}", version, "execution.started")
    assert again == []
    assert len(await harness.fetch("SELECT id FROM webhook_deliveries WHERE event_id = $1", event_id)) == 2


async def test_a_run_not_started_with_a_key_reaches_only_the_tenants_endpoints(harness, receiver):
    tenant_wide = await harness.endpoint(receiver.url("/ok"))
    await harness.endpoint(receiver.url("/ok"), api_key_id=uuid.uuid4())
    created = await harness.deliver_event(actor="alice")
    assert [(await harness.delivery(d))["endpoint_id"] for d in created] == [tenant_wide]


async def test_no_subscribed_endpoint_means_nothing_is_read_or_written(harness, receiver):
    await harness.endpoint(receiver.url("/ok"), events=("execution.failed",))
    run_id, event_id, version = await harness.run_event()
    assert await harness.intake.record(harness.tenant, event_id, f"run-{run_id}", version, "execution.started") == []
    assert await harness.fetch("SELECT * FROM webhook_event_intake WHERE event_id = $1", event_id) == []


# --- attempts -------------------------------------------------------------------------------------------


async def test_a_delivered_attempt_is_signed_verifiable_and_recorded(harness, receiver):
    await harness.endpoint(receiver.url("/ok"))
    (delivery_id,) = await harness.deliver_event("execution.completed", completed=True)
    await harness.sender.attempt(harness.tenant, delivery_id, 1)
    (request,) = receiver.requests
    stored = (await harness.delivery(delivery_id))["payload"].encode()
    assert request.body == stored  # the exact bytes that were signed
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Workflow-Automation-Platform/1.0"
    assert headers["x-webhook-event"] == "execution.completed"
    assert headers["x-webhook-execution-id"] == msgspec.json.decode(stored)["executionId"]
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-webhook-signature"], expected)
    assert headers["webhook-id"] == str(delivery_id)
    assert Webhook(standard_secret(SECRET)).verify(request.body, headers)["data"]["output"] == {
        "successCount": 3, "failedCount": 0}
    row = await harness.delivery(delivery_id)
    assert row["status"] == "delivered" and row["attempts"] == 1 and row["delivered_at"] is not None
    (attempt,) = await harness.attempts(delivery_id)
    assert attempt["status_code"] == 200 and attempt["latency_ms"] > 0 and attempt["error"] is None
    # Recorded, so its lease timer is cancelled: the scheduler never makes this attempt again.
    assert (await harness.timer(attempt_timer_id(delivery_id, 1)))["status"] == "cancelled"


async def test_a_failing_receiver_is_retried_after_1_5_15_seconds_with_jitter_then_dead_lettered(harness, receiver):
    endpoint = await harness.endpoint(receiver.url("/fail"))
    (delivery_id,) = await harness.deliver_event()
    for number, wait in ((1, 1.0), (2, 5.0), (3, 15.0)):
        before = datetime.now(UTC)
        await harness.sender.attempt(harness.tenant, delivery_id, number)
        after = datetime.now(UTC)
        timer = await harness.timer(attempt_timer_id(delivery_id, number + 1))
        assert timer["status"] == "pending", number
        assert before + timedelta(seconds=wait * 0.8) <= timer["due_at"] <= after + timedelta(seconds=wait * 1.2)
        assert msgspec.json.decode(timer["envelope"])["command"] == {
            "type": "AttemptWebhookDelivery", "delivery_id": str(delivery_id), "attempt": number + 1}
        row = await harness.delivery(delivery_id)
        assert row["status"] == "pending" and row["next_attempt_at"] == timer["due_at"]
    await harness.sender.attempt(harness.tenant, delivery_id, 4)
    row = await harness.delivery(delivery_id)
    assert row["status"] == "dead" and row["attempts"] == 4 and row["last_error"] == "HTTP 500"
    assert await harness.timer(attempt_timer_id(delivery_id, 5)) is None
    attempts = await harness.attempts(delivery_id)
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 500), (2, 500), (3, 500), (4, 500)]
    assert all(a["response_body"] and "failing on purpose" in a["response_body"] for a in attempts)
    (dead,) = await harness.fetch("SELECT * FROM webhook_dead_letters WHERE delivery_id = $1", delivery_id)
    assert dead["endpoint_id"] == endpoint and dead["reason"] == "HTTP 500"
    (ep,) = await harness.fetch("SELECT consecutive_failures, enabled FROM webhook_endpoints WHERE id = $1", endpoint)
    assert ep["consecutive_failures"] == 1 and ep["enabled"]
    # A late or repeated order for an attempt already made sends nothing and records nothing.
    await harness.sender.attempt(harness.tenant, delivery_id, 2)
    assert len(receiver.requests) == 4 and len(await harness.attempts(delivery_id)) == 4


async def test_two_senders_of_one_attempt_record_it_once_and_the_receiver_applies_it_once(harness, receiver):
    await harness.endpoint(receiver.url("/slow?s=0.2"))
    (delivery_id,) = await harness.deliver_event()
    await asyncio.gather(harness.sender.attempt(harness.tenant, delivery_id, 1),
                         harness.sender.attempt(harness.tenant, delivery_id, 1))
    assert len(receiver.requests) == 2  # both sent (the lease ran out while the first was in flight) ...
    assert {r.headers["webhook-id"] for r in receiver.requests} == {str(delivery_id)}
    assert list(receiver.applied) == [str(delivery_id)]  # ... under one webhook-id: applied once
    assert len(await harness.attempts(delivery_id)) == 1
    assert (await harness.delivery(delivery_id))["status"] == "delivered"


async def test_a_redirect_is_recorded_as_a_failure_and_not_followed(harness, receiver):
    await harness.endpoint(receiver.url("/redirect"))
    (delivery_id,) = await harness.deliver_event()
    await harness.sender.attempt(harness.tenant, delivery_id, 1)
    assert [urlpath(r.path) for r in receiver.requests] == ["/redirect"]
    (attempt,) = await harness.attempts(delivery_id)
    assert attempt["status_code"] == 302 and receiver.applied == {}
    assert "redirects are not followed" in (await harness.delivery(delivery_id))["last_error"]


def urlpath(path: str) -> str:
    return path.split("?", 1)[0]


async def test_a_slow_receiver_is_cut_at_the_timeout(store, tenant, receiver):
    h = Harness(store, tenant, make_settings(webhook_timeout_s=0.3))
    try:
        await h.endpoint(receiver.url("/slow?s=5"))
        (delivery_id,) = await h.deliver_event()
        started = time.monotonic()
        await h.sender.attempt(tenant, delivery_id, 1)
        assert time.monotonic() - started < 2.0
    finally:
        await h.client.aclose()
    (attempt,) = await h.attempts(delivery_id)
    assert attempt["status_code"] is None and "timed out after 0.3s" in attempt["error"]
    assert attempt["latency_ms"] < 2000


async def test_a_host_resolving_to_a_private_address_is_refused_before_any_connection(store, tenant, receiver, dials):
    resolver = ScriptedResolver({"hooks.weft-test.example": ["10.0.0.7"]})
    h = Harness(store, tenant, make_settings(outbound_allow_hosts=""), resolver)
    try:
        await h.endpoint(receiver.url("/ok", host="hooks.weft-test.example"))
        (delivery_id,) = await h.deliver_event()
        await h.sender.attempt(tenant, delivery_id, 1)
    finally:
        await h.client.aclose()
    assert resolver.asked == ["hooks.weft-test.example"] and dials == [] and receiver.requests == []
    (attempt,) = await h.attempts(delivery_id)
    assert attempt["status_code"] is None and "blocked" in attempt["error"] and "10.0.0.7" in attempt["error"]


async def test_a_public_address_is_dialled_pinned_to_the_checked_ip(store, tenant, dials):
    # The spy refuses the dial, so nothing leaves the machine; it shows where the client would connect.
    resolver = ScriptedResolver({"hooks.weft-test.example": [[PUBLIC_IP], ["127.0.0.1"]]})
    h = Harness(store, tenant, make_settings(outbound_allow_hosts=""), resolver)
    try:
        await h.endpoint("https://hooks.weft-test.example/weft")
        (delivery_id,) = await h.deliver_event()
        await h.sender.attempt(tenant, delivery_id, 1)
    finally:
        await h.client.aclose()
    assert [(d.host, d.sni, d.headers["host"]) for d in dials] == [
        (PUBLIC_IP, "hooks.weft-test.example", "hooks.weft-test.example")]
    assert dials[0].headers["webhook-id"] == str(delivery_id)


# --- endpoints that go away or keep failing ---------------------------------------------------------------


async def test_a_deleted_endpoints_pending_delivery_is_cancelled_unsent(harness, receiver):
    endpoint = await harness.endpoint(receiver.url("/ok"))
    (delivery_id,) = await harness.deliver_event()
    async with harness.store.tenant_transaction(harness.tenant) as conn:
        await conn.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint)
    await harness.sender.attempt(harness.tenant, delivery_id, 1)
    assert receiver.requests == []
    row = await harness.delivery(delivery_id)
    assert row["status"] == "cancelled" and row["last_error"] == "endpoint deleted"


async def test_persistent_failure_disables_the_endpoint_and_emails_its_owner_once(store, tenant, receiver, smtp):
    controller, inbox = smtp
    settings = make_settings(webhook_retry_delays_s="", webhook_disable_after=2, smtp_host="127.0.0.1",
                             smtp_port=controller.port, smtp_from="weft@example.com")
    h = Harness(store, tenant, settings)
    try:
        endpoint = await h.endpoint(receiver.url("/fail"), owner_email="owner@example.com")
        first, second, third = [(await h.deliver_event())[0] for _ in range(3)]
        await h.sender.attempt(tenant, first, 1)  # no retries configured: dead at once
        (ep,) = await h.fetch("SELECT * FROM webhook_endpoints WHERE id = $1", endpoint)
        assert ep["enabled"] and ep["consecutive_failures"] == 1
        await h.sender.attempt(tenant, second, 1)
        (ep,) = await h.fetch("SELECT * FROM webhook_endpoints WHERE id = $1", endpoint)
        assert not ep["enabled"] and ep["consecutive_failures"] == 2
        assert "2 deliveries in a row failed; last: HTTP 500" == ep["disabled_reason"]
        # The order to email the owner committed with the disabling, as a timer due now.
        (notice,) = await h.fetch("SELECT status, envelope::text AS envelope FROM timers"
                                  " WHERE command_type = 'NotifyWebhookEndpointDisabled' AND tenant_id = $1", tenant)
        command = msgspec.json.decode(notice["envelope"])["command"]
        assert notice["status"] == "pending" and command["endpoint_id"] == str(endpoint)
        # What the scheduler would deliver, twice (a redelivery): one mail.
        for _ in range(2):
            await h.sender.notify_disabled(tenant, endpoint, ep["disabled_at"])
        (envelope,) = inbox.envelopes
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert envelope.rcpt_tos == ["owner@example.com"] and message["Subject"] == "Weft: webhook endpoint disabled"
        text = message.get_body(("plain",)).get_content()
        assert str(endpoint) in text and receiver.url("/fail") in text and "HTTP 500" in text
        # A delivery still pending for the disabled endpoint is dead-lettered unsent, for a later replay.
        sent = len(receiver.requests)
        await h.sender.attempt(tenant, third, 1)
        assert len(receiver.requests) == sent
        row = await h.delivery(third)
        assert row["status"] == "dead" and row["last_error"] == "endpoint disabled"
        (ep,) = await h.fetch("SELECT consecutive_failures FROM webhook_endpoints WHERE id = $1", endpoint)
        assert ep["consecutive_failures"] == 2  # not the endpoint's failure
    finally:
        await h.client.aclose()


async def test_a_delivered_attempt_resets_the_failure_count(harness, receiver):
    endpoint = await harness.endpoint(receiver.url("/flaky?fail=1"))
    async with harness.store.tenant_transaction(harness.tenant) as conn:
        await conn.execute("UPDATE webhook_endpoints SET consecutive_failures = 3 WHERE id = $1", endpoint)
    (delivery_id,) = await harness.deliver_event()
    await harness.sender.attempt(harness.tenant, delivery_id, 1)
    await harness.sender.attempt(harness.tenant, delivery_id, 2)
    (ep,) = await harness.fetch("SELECT consecutive_failures FROM webhook_endpoints WHERE id = $1", endpoint)
    assert ep["consecutive_failures"] == 0 and (await harness.delivery(delivery_id))["status"] == "delivered"
