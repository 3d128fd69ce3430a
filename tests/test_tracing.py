"""One trace follows an execute across processes: the gateway's request span, the executor's command span
(through the command's NATS headers), its step spans and outbound call, and the notifier's reaction to
RunCompleted (through the event's metadata and the relay's headers) down to the webhook delivery's POST.

A stack of its own (its own database and nats-server), exporting to an in-process OTLP/HTTP collector, so
the session stack's untraced processes take none of its messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from deploy.local.embedded import EmbeddedNats, free_port
from libs.security.auth import issue_token
from tests.conftest import Infra, migrated_database, poll, start_processes
from tests.fakes.http_receiver import HttpReceiver
from tests.fakes.otlp_collector import OtlpCollector, ReceivedSpan
from tests.fakes.webhook_receiver import WebhookReceiver

NAMES = ["gateway", "planner", "executor", "relay", "notifier"]


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as c:
        yield c


@pytest.fixture(scope="module")
async def traced_stack(infra: Infra, collector: OtlpCollector):
    nats = EmbeddedNats(infra.root / "trace-nats", free_port())
    nats.start()
    own = replace(infra, database_url=await migrated_database(infra, "weft_trace"), nats_url=nats.url)
    env = {"WEFT_OTEL_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "WEFT_OUTBOUND_ALLOW_HOSTS": "127.0.0.1:*"}
    procs, ports = start_processes(own, NAMES, infra.root / "trace-logs", env)
    try:
        yield ports
    finally:
        for proc in procs.values():
            proc.stop()
        nats.stop()


def children(spans: list[ReceivedSpan], parent: ReceivedSpan, name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id and s.name == name]


def one(spans: list[ReceivedSpan], parent: ReceivedSpan, name: str, service: str) -> ReceivedSpan:
    found = children(spans, parent, name)
    assert [s.service for s in found] == [service], (name, parent.name, sorted({(s.name, s.service) for s in spans}))
    assert found[0].trace_id == parent.trace_id
    return found[0]


async def test_one_trace_from_the_gateway_through_the_executor_to_the_webhook(traced_stack, settings, collector, tenant):
    token = issue_token(settings, tenant, "alice")
    with HttpReceiver() as step_rx, WebhookReceiver() as hook_rx:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{traced_stack['gateway']}", timeout=20,
                                     headers={"Authorization": f"Bearer {token}"}) as c:
            r = await c.post("/api/v2/webhooks", json={"url": hook_rx.url("/ok"), "secret": "s" * 24,
                                                       "events": ["execution.completed"]})
            assert r.status_code == 201, r.text
            nodes = [{"id": "shape", "type": "transform", "config": {"template": {"n": 1}}},
                     {"id": "call", "type": "integration", "action": "http.request", "input_from": "shape",
                      "config": {"method": "POST", "url": step_rx.url("/effect"), "body": {"n": 1}}}]
            r = await c.post("/api/v2/workflows", json={"name": f"tr-{uuid.uuid4().hex[:8]}",
                                                        "definition": {"nodes": nodes}})
            assert r.status_code == 201, r.text
            r = await c.post(f"/api/v2/workflows/{r.json()['workflow']['id']}/execute", json={"inputs": {}})
            assert r.status_code == 201, r.text

        async def delivered() -> int:
            return len(hook_rx.applied)

        await poll(delivered, lambda n: n == 1, timeout=20)

    expected = {("weft-gateway", "POST /api/v2/workflows/{workflow_id}/execute"),
                ("weft-executor", "command StartRun"), ("weft-executor", "step transform"),
                ("weft-executor", "step http.request"), ("weft-executor", "POST outbound"),
                ("weft-notifier", "event RunCompleted"), ("weft-notifier", "webhook delivery"),
                ("weft-notifier", "POST outbound")}

    def webhook_posted(spans: list[ReceivedSpan]) -> bool:
        # A span is exported when it ends (a parent after its children), each process in batches of its own.
        return expected <= {(s.service, s.name) for s in spans}

    async def spans_so_far() -> list[ReceivedSpan]:
        return collector.snapshot()

    spans = await poll(spans_so_far, webhook_posted, timeout=15)
    [request] = [s for s in spans if s.name == "POST /api/v2/workflows/{workflow_id}/execute"]
    assert request.service == "weft-gateway" and request.parent_span_id == ""
    trace = [s for s in spans if s.trace_id == request.trace_id]
    command = one(trace, request, "command StartRun", "weft-executor")
    one(trace, command, "step transform", "weft-executor")
    step = one(trace, command, "step http.request", "weft-executor")
    one(trace, step, "POST outbound", "weft-executor")
    event = one(trace, command, "event RunCompleted", "weft-notifier")
    delivery = one(trace, event, "webhook delivery", "weft-notifier")
    one(trace, delivery, "POST outbound", "weft-notifier")

    # This stack's notifier made exactly this one delivery: its metrics say so.
    async with httpx.AsyncClient(timeout=10) as client:
        exposition = (await client.get(f"http://127.0.0.1:{traced_stack['notifier']}/metrics")).text
    assert 'weft_webhook_attempts_total{outcome="delivered"} 1.0' in exposition
    assert "weft_webhook_dead_letters 0.0" in exposition
