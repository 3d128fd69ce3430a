"""Webhooks end to end (spec D): runs in the real gateway, executor, relay and scheduler processes, and a
notifier process of this module's own, deliver signed webhooks to a loopback receiver that honours
webhook-id; retries are fired by the real scheduler from durable timers; the owner of a disabled endpoint
gets an email through a real SMTP server (aiosmtpd). Plus the tenant's admin API at /api/v2/webhooks.

The module's notifier reaches loopback receivers (WEFT_OUTBOUND_ALLOW_HOSTS=127.0.0.1:*) and retries after
0.3, 0.6, 0.9 s instead of spec D's 1, 5, 15 s, to keep the suite short (tests/unit/test_webhook_policy.py
checks the default schedule). The session stack's notifier is stopped meanwhile and started again after.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from standardwebhooks import Webhook

from tests.conftest import Infra, Stack, poll, start_processes
from tests.fakes.smtp_server import Inbox, smtp_server
from tests.fakes.webhook_receiver import WebhookReceiver

DELAYS = (0.3, 0.6, 0.9)
NOTIFIER_ENV = {
    "WEFT_OUTBOUND_ALLOW_HOSTS": "127.0.0.1:*",
    "WEFT_WEBHOOK_RETRY_DELAYS_S": ",".join(map(str, DELAYS)),
    "WEFT_WEBHOOK_TIMEOUT_S": "2",
    "WEFT_WEBHOOK_LEASE_S": "3",
    "WEFT_WEBHOOK_DISABLE_AFTER": "2",
    "WEFT_NAK_DELAY_S": "0.2",
    "WEFT_SMTP_FROM": "weft@example.com",
}
SECRET = "your-webhook-secret-key"
ECHO = [{"id": "shape", "type": "transform", "config": {"template": {"successCount": 3, "failedCount": 0}}},
        {"id": "done", "type": "echo", "input_from": "shape"}]


class OwnNotifier:
    """This module's notifier process (kill, restart with other settings); the stack's is stopped meanwhile,
    so only this one consumes the notifier's durables."""

    def __init__(self, infra: Infra, env: dict[str, str], log_dir: Path) -> None:
        self.infra, self.env, self.log_dir = infra, env, log_dir
        self.proc: Any = None

    def start(self, extra: dict[str, str] | None = None) -> None:
        procs, _ = start_processes(self.infra, ["notifier"], self.log_dir, self.env | (extra or {}))
        self.proc = procs["notifier"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def kill(self) -> None:
        self.proc.kill()


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as (controller, box):
        yield box, controller.port


@contextmanager
def replaced_notifier(stack: Stack, infra: Infra, env: dict[str, str], logs: Path) -> Iterator[OwnNotifier]:
    """The stack's notifier stopped and an own one (not started) in its place; the stack's is back after."""
    from deploy.local.stack import wait_http

    stack.procs["notifier"].stop()
    own = OwnNotifier(infra, env, logs)
    try:
        yield own
    finally:
        own.stop()
        stack.procs["notifier"].start()
        wait_http(stack.ports["notifier"])


@pytest.fixture(scope="module")
def own_notifier(stack: Stack, infra: Infra, inbox) -> Iterator[OwnNotifier]:
    _, smtp_port = inbox
    env = NOTIFIER_ENV | {"WEFT_SMTP_HOST": "127.0.0.1", "WEFT_SMTP_PORT": str(smtp_port)}
    with replaced_notifier(stack, infra, env, infra.root / "webhook-logs") as own:
        own.start()
        yield own


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


# --- helpers ----------------------------------------------------------------------------------------------


_ALLOWING: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def allowing_gateway(infra: Infra, stack: Stack) -> Iterator[str]:
    """A gateway whose allow-list admits the loopback receiver: endpoint URLs are checked at creation
    (docs/decisions/0054), and the session's gateway refuses loopback, as a deployment's does."""
    procs, ports = start_processes(infra, ["gateway"], infra.root / f"logs-webhooks-gw-{uuid.uuid4().hex[:6]}",
                                   {"WEFT_OUTBOUND_ALLOW_HOSTS": "127.0.0.1:*"})
    _ALLOWING["url"] = f"http://127.0.0.1:{ports['gateway']}"
    try:
        yield _ALLOWING["url"]
    finally:
        procs["gateway"].stop()


async def create_webhook(c: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=_ALLOWING["url"], headers=c.headers, timeout=20) as allowing:
        r = await allowing.post("/api/v2/webhooks", json={"url": url, "secret": SECRET, **fields})
    assert r.status_code == 201, r.text
    return r.json()["webhook"]


async def start_run(c: httpx.AsyncClient, nodes: list[dict[str, Any]] = ECHO, inputs: dict | None = None) -> str:
    r = await c.post("/api/v2/workflows", json={"name": f"wh-{uuid.uuid4().hex[:8]}",
                                                "definition": {"nodes": nodes, "concurrency": "unlimited"}})
    assert r.status_code == 201, r.text
    wid = r.json()["workflow"]["id"]
    r = await c.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": inputs or {}})
    assert r.status_code == 201, r.text
    return r.json()["run"]["id"]


async def deliveries(pool: asyncpg.Pool, run_id: str) -> list[asyncpg.Record]:
    """Straight from Postgres (polling through the API would spend the v2 rate limit)."""
    return await pool.fetch("SELECT id, event, status, attempts FROM webhook_deliveries WHERE execution_id = $1"
                            " ORDER BY created_at", uuid.UUID(run_id))


async def settled(pool: asyncpg.Pool, run_id: str, count: int, timeout: float = 20.0) -> list[asyncpg.Record]:
    return await poll(lambda: deliveries(pool, run_id),
                      lambda rows: len(rows) == count and all(r["status"] in ("delivered", "dead") for r in rows),
                      timeout=timeout, every=0.1)


def spec_d_valid(body: bytes, signature: str) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature.encode(), expected.encode())


# --- end to end ---------------------------------------------------------------------------------------------


async def test_a_run_sends_started_and_completed_signed_as_spec_d_says(stack, own_notifier, receiver, pool, tenant):
    async with stack.client(tenant) as c:
        webhook = await create_webhook(c, receiver.url("/ok"), events=["execution.started", "execution.completed"])
        run_id = await start_run(c)
        rows = await settled(pool, run_id, 2)
        assert sorted(r["event"] for r in rows) == ["execution.completed", "execution.started"]
        assert all(r["status"] == "delivered" and r["attempts"] == 1 for r in rows)
        requests = receiver.requests_for(run_id)
        assert len(requests) == 2
        verifier = Webhook(webhook["standard_webhooks_secret"])
        bodies = {}
        for request in requests:
            assert spec_d_valid(request.body, request.headers["x-webhook-signature"])
            body = verifier.verify(request.body, request.headers)
            assert request.headers["x-webhook-event"] == body["event"]
            assert request.headers["user-agent"] == "Workflow-Automation-Platform/1.0"
            bodies[body["event"]] = body
        completed = bodies["execution.completed"]
        assert completed["executionId"] == run_id and completed["data"]["status"] == "completed"
        assert completed["data"]["output"] == {"successCount": 3, "failedCount": 0}  # as spec D shows it
        assert bodies["execution.started"]["data"]["status"] == "running"
        # The delivery log through the admin API: every attempt with status and latency.
        r = await c.get("/api/v2/webhooks/deliveries", params={"execution_id": run_id})
        assert r.status_code == 200 and r.json()["count"] == 2
        for delivery in r.json()["deliveries"]:
            assert delivery["webhook_id"] == webhook["id"] and delivery["status"] == "delivered"
            (attempt,) = delivery["attempts"]
            assert attempt["status_code"] == 200 and attempt["latency_ms"] > 0 and attempt["error"] is None
            assert delivery["id"] in {r.headers["webhook-id"] for r in requests}


async def test_a_failed_run_sends_execution_failed_with_the_error(stack, own_notifier, receiver, pool, tenant):
    nodes = [{"id": "broken", "type": "transform", "config": {"template": {"x": "${inputs.missing}"}}}]
    async with stack.client(tenant) as c:
        await create_webhook(c, receiver.url("/ok"), events=["execution.failed"])
        run_id = await start_run(c, nodes)
        (row,) = await settled(pool, run_id, 1)
    (request,) = receiver.requests_for(run_id)
    body = msgspec.json.decode(request.body)
    assert row["event"] == body["event"] == "execution.failed" and body["data"]["status"] == "failed"
    assert "missing" in body["data"]["error"]


async def test_retries_are_fired_by_the_scheduler_on_the_schedule(stack, own_notifier, receiver, pool, tenant):
    async with stack.client(tenant) as c:
        await create_webhook(c, receiver.url("/flaky?fail=2"), events=["execution.completed"])
        run_id = await start_run(c)
        (row,) = await settled(pool, run_id, 1)
        assert row["status"] == "delivered" and row["attempts"] == 3
        r = await c.get(f"/api/v2/webhooks/deliveries/{row['id']}")
    delivery = r.json()["delivery"]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert delivery["payload"]["event"] == "execution.completed"
    requests = receiver.requests_for(run_id)
    assert len(requests) == 3 and {q.headers["webhook-id"] for q in requests} == {str(row["id"])}
    starts = await pool.fetch("SELECT started_at FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt", row["id"])
    gaps = [(b["started_at"] - a["started_at"]).total_seconds() for a, b in zip(starts, starts[1:])]
    # Each wait is the configured delay +-20 % jitter, plus the scheduler's and the consumer's latency.
    for gap, delay in zip(gaps, DELAYS, strict=False):
        assert delay * 0.8 <= gap <= delay * 1.2 + 5.0, gaps  # never early; late only by load


async def test_a_dead_lettered_delivery_is_replayed_with_the_same_webhook_id(stack, own_notifier, receiver, pool, tenant):
    async with stack.client(tenant) as c:
        webhook = await create_webhook(c, receiver.url("/fail"), events=["execution.completed"])
        run_id = await start_run(c)
        (row,) = await settled(pool, run_id, 1)
        assert row["status"] == "dead" and row["attempts"] == 4
        r = await c.get("/api/v2/webhooks/deliveries", params={"webhook_id": webhook["id"], "status": "dead"})
        (dead,) = r.json()["deliveries"]
        assert dead["dead_letter"]["reason"] == "HTTP 500" and len(dead["attempts"]) == 4
        # The receiver is fixed; the endpoint's new URL is its working route.
        await pool.execute("UPDATE webhook_endpoints SET url = $2 WHERE id = $1", uuid.UUID(webhook["id"]),
                           receiver.url("/ok"))
        r = await c.post(f"/api/v2/webhooks/deliveries/{dead['id']}/replay")
        assert r.status_code == 202 and r.json()["delivery"]["status"] == "pending"
        (row,) = await settled(pool, run_id, 1)
        assert row["status"] == "delivered" and row["attempts"] == 5
        again = await c.post(f"/api/v2/webhooks/deliveries/{dead['id']}/replay")
        assert again.status_code == 409 and again.json() == {
            "success": False, "error": "Only a dead-lettered delivery can be replayed; this one is delivered",
            "field": "status"}
        detail = (await c.get(f"/api/v2/webhooks/deliveries/{dead['id']}")).json()["delivery"]
    assert detail["dead_letter"]["replays"] == 1 and detail["dead_letter"]["replayed_at"]
    requests = receiver.requests_for(run_id)
    assert len(requests) == 5 and {q.headers["webhook-id"] for q in requests} == {dead["id"]}
    assert receiver.applied[dead["id"]] == requests[-1].body == requests[0].body


async def test_an_endpoint_failing_persistently_is_disabled_and_its_owner_emailed(stack, own_notifier, receiver, pool,
                                                                                  tenant, inbox):
    box, _ = inbox
    async with stack.client(tenant) as c:
        webhook = await create_webhook(c, receiver.url("/fail"), owner_email=f"owner-{tenant}@example.com",
                                       events=["execution.started", "execution.completed"])
        run_id = await start_run(c)
        await settled(pool, run_id, 2)  # two dead letters in a row: WEFT_WEBHOOK_DISABLE_AFTER=2

        async def mails():
            return [e for e in box.envelopes if e.rcpt_tos == [f"owner-{tenant}@example.com"]]

        (mail,) = await poll(mails, lambda found: len(found) == 1, timeout=15)
        message = message_from_bytes(mail.content, policy=policy.default)
        assert message["Subject"] == "Weft: webhook endpoint disabled"
        assert webhook["id"] in message.get_body(("plain",)).get_content()
        shown = (await c.get(f"/api/v2/webhooks/{webhook['id']}")).json()["webhook"]
        assert not shown["enabled"] and shown["consecutive_failures"] == 2 and shown["disabled_at"]
        # Disabled: a new run sends it nothing (a healthy endpoint gets the same event, in the same
        # transaction), and a replay is refused until it is enabled again.
        healthy = await create_webhook(c, receiver.url("/ok"), events=["execution.started"])
        quiet = await start_run(c)
        (row,) = await settled(pool, quiet, 1)
        assert row["event"] == "execution.started" and row["status"] == "delivered"
        assert (await pool.fetchval("SELECT endpoint_id FROM webhook_deliveries WHERE id = $1", row["id"])
                == uuid.UUID(healthy["id"]))
        dead_id = (await deliveries(pool, run_id))[0]["id"]
        refused = await c.post(f"/api/v2/webhooks/deliveries/{dead_id}/replay")
        assert refused.status_code == 409 and "disabled" in refused.json()["error"]
        r = await c.patch(f"/api/v2/webhooks/{webhook['id']}", json={"enabled": True})
        assert r.json()["webhook"]["enabled"] and r.json()["webhook"]["consecutive_failures"] == 0
        assert (await c.post(f"/api/v2/webhooks/deliveries/{dead_id}/replay")).status_code == 202
    assert len(await mails()) == 1


# --- the admin API ------------------------------------------------------------------------------------------


async def test_webhook_admin_round_trip(stack, tenant):
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/webhooks", json={"url": "https://hooks.example.com/weft"})
        assert r.status_code == 201, r.text
        created = r.json()["webhook"]
        # Defaults: every spec D event, a generated secret shown once (plus its Standard Webhooks form).
        assert created["events"] == ["execution.started", "execution.completed", "execution.failed",
                                     "execution.pending_approval"]
        assert created["secret"].startswith("whsec_") and created["standard_webhooks_secret"] == created["secret"]
        assert created["enabled"] and created["api_key_id"] is None and created["consecutive_failures"] == 0
        listed = (await c.get("/api/v2/webhooks")).json()
        assert listed["success"] and listed["count"] == 1 and "secret" not in listed["webhooks"][0]
        shown = (await c.get(f"/api/v2/webhooks/{created['id']}")).json()["webhook"]
        assert shown == {k: v for k, v in created.items() if k not in ("secret", "standard_webhooks_secret")}
        off = (await c.patch(f"/api/v2/webhooks/{created['id']}", json={"enabled": False})).json()["webhook"]
        assert not off["enabled"] and off["disabled_reason"] == "disabled by alice"
        r = await c.delete(f"/api/v2/webhooks/{created['id']}")
        assert r.status_code == 200 and r.json() == {"success": True, "message": "Webhook deleted successfully"}
        assert (await c.get(f"/api/v2/webhooks/{created['id']}")).status_code == 404
        assert (await c.get("/api/v2/webhooks")).json()["count"] == 0


@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://hooks.example.com/x"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "https://h.example.com", "events": ["execution.finished"]}, "events"),
    ({"url": "https://h.example.com", "events": []}, "events"),
    ({"url": "https://h.example.com", "secret": "short"}, "secret"),
    ({"url": "https://h.example.com", "owner_email": "nobody"}, "owner_email"),
    ({"url": "https://h.example.com", "api_key_id": str(uuid.uuid4())}, "api_key_id"),
    ({"url": "https://h.example.com", "api_key_id": "nope"}, "api_key_id"),
    ({"url": 5}, "url"),
    ({"events": ["execution.failed"]}, "url"),
    ({"url": "https://h.example.com", "colour": "red"}, "colour"),
])
async def test_bad_webhook_fields_get_400_naming_the_field(stack, tenant, body, field):
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/webhooks", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False and r.json()["field"] == field


async def test_bad_queries_and_unknown_ids(stack, tenant):
    async with stack.client(tenant) as c:
        for path in ("/api/v2/webhooks/nope", f"/api/v2/webhooks/{uuid.uuid4()}",
                     f"/api/v2/webhooks/deliveries/{uuid.uuid4()}"):
            r = await c.get(path)
            assert r.status_code == 404 and r.json()["success"] is False, path
        assert (await c.post(f"/api/v2/webhooks/deliveries/{uuid.uuid4()}/replay")).status_code == 404
        r = await c.get("/api/v2/webhooks/deliveries", params={"status": "lost"})
        assert r.status_code == 400 and r.json()["field"] == "status"
        r = await c.get("/api/v2/webhooks/deliveries", params={"webhook_id": "x"})
        assert r.status_code == 400 and r.json()["field"] == "webhook_id"
        r = await c.get("/api/v2/webhooks/deliveries", params={"limit": "0"})
        assert r.status_code == 400 and r.json()["field"] == "limit"
        r = await c.patch(f"/api/v2/webhooks/{uuid.uuid4()}", json={"enabled": "yes"})
        assert r.status_code == 400 and r.json()["field"] == "enabled"
        r = await c.post("/api/v2/webhooks", content=b"{not json")
        assert r.status_code == 400
    async with httpx.AsyncClient(base_url=stack.base_url) as anonymous:
        assert (await anonymous.get("/api/v2/webhooks")).status_code == 401


async def test_another_tenants_webhooks_and_deliveries_are_not_found(stack, own_notifier, receiver, pool, tenant):
    other = f"t{uuid.uuid4().hex[:12]}"
    async with stack.client(tenant) as c:
        webhook = await create_webhook(c, receiver.url("/ok"), events=["execution.started"])
        run_id = await start_run(c)
        (row,) = await settled(pool, run_id, 1)
    async with stack.client(other) as c:
        assert (await c.get("/api/v2/webhooks")).json()["count"] == 0
        assert (await c.get(f"/api/v2/webhooks/{webhook['id']}")).status_code == 404
        assert (await c.patch(f"/api/v2/webhooks/{webhook['id']}", json={"enabled": False})).status_code == 404
        assert (await c.delete(f"/api/v2/webhooks/{webhook['id']}")).status_code == 404
        assert (await c.get(f"/api/v2/webhooks/deliveries/{row['id']}")).status_code == 404
        assert (await c.get("/api/v2/webhooks/deliveries")).json()["count"] == 0
    assert (await pool.fetchval("SELECT enabled FROM webhook_endpoints WHERE id = $1", uuid.UUID(webhook["id"])))


async def test_a_paused_run_sends_execution_pending_approval(stack, own_notifier, receiver, pool, tenant):
    nodes = [{"id": "review", "type": "approval", "config": {"title": "Check it"}},
             {"id": "done", "type": "echo", "depends_on": ["review"]}]
    async with stack.client(tenant) as c:
        await create_webhook(c, receiver.url("/ok"), events=["execution.pending_approval"])
        run_id = await start_run(c, nodes)
        (row,) = await settled(pool, run_id, 1)
        (request,) = receiver.requests_for(run_id)
        body = msgspec.json.decode(request.body)
        assert row["event"] == body["event"] == "execution.pending_approval"
        assert body["data"]["status"] == "pending_approval" and body["data"]["stepId"] == "review"
        assert request.headers["x-webhook-event"] == "execution.pending_approval"
        await c.delete(f"/api/v2/workflows/{body['workflowId']}/runs/{run_id}")  # terminate: nothing left waiting


async def test_a_keys_endpoint_gets_only_the_runs_started_with_that_key(stack, own_notifier, receiver, pool, tenant):
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows", json={"name": f"wh-{uuid.uuid4().hex[:8]}",
                                                    "definition": {"nodes": ECHO, "concurrency": "unlimited"}})
        wid = r.json()["workflow"]["id"]
        r = await c.post("/api/v2/api-keys", json={"name": "site", "workflow_ids": [wid]})
        assert r.status_code == 201, r.text
        key_id, key = r.json()["api_key"]["id"], r.json()["key"]
        for_key = await create_webhook(c, receiver.url("/ok"), events=["execution.completed"], api_key_id=key_id)
        tenant_wide = await create_webhook(c, receiver.url("/ok"), events=["execution.completed"])
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=20,
                                     headers={"Authorization": f"Bearer {key}"}) as public:
            r = await public.post(f"/api/v1/public/agents/{wid}/execute", json={"input": {}})
            assert r.status_code == 202, r.text
            by_key = r.json()["executionId"]
        r = await c.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": {}})
        by_user = r.json()["run"]["id"]
        keyed, plain = await settled(pool, by_key, 2), await settled(pool, by_user, 1)
    endpoint_of = "SELECT endpoint_id FROM webhook_deliveries WHERE id = $1"
    assert {str(await pool.fetchval(endpoint_of, d["id"])) for d in keyed} == {for_key["id"], tenant_wide["id"]}
    assert [str(await pool.fetchval(endpoint_of, d["id"])) for d in plain] == [tenant_wide["id"]]
    assert len(receiver.requests_for(by_key)) == 2 and len(receiver.requests_for(by_user)) == 1


async def test_the_owners_notice_is_sent_once_across_a_notifier_crash(stack, own_notifier, receiver, pool, tenant,
                                                                      inbox, tmp_path):
    """Issue 15: killed right after the SMTP server accepted the notice, the notifier restarts and the
    redelivered command sends nothing more (the claim committed before the send)."""
    box, _ = inbox
    owner = f"crash-{tenant}@example.com"

    async def mails() -> list:
        return [e for e in box.envelopes if e.rcpt_tos == [owner]]

    own_notifier.stop()
    own_notifier.start({"WEFT_FAULT_POINT": "webhook_after_owner_mail", "WEFT_FAULT_ONCE_FILE": str(tmp_path / "once")})
    try:
        async with stack.client(tenant) as c:
            await create_webhook(c, receiver.url("/fail"), owner_email=owner,
                                 events=["execution.started", "execution.completed"])
            await start_run(c)
        await poll(lambda: asyncio.to_thread(own_notifier.proc.alive), lambda alive: not alive, timeout=60)
        assert len(await mails()) == 1
    finally:
        own_notifier.start()  # the once-file keeps the restarted process alive
    # The notice command was never acked: JetStream redelivers it after the ack wait (30 s by default).
    await asyncio.sleep(float(os.environ.get("WEFT_ACK_WAIT_S", "30")) + 6)
    assert len(await mails()) == 1
    row = await pool.fetchrow("SELECT kind, message_id FROM sent_emails WHERE recipient = $1", owner)
    assert row["kind"] == "webhook_disabled" and row["message_id"]
