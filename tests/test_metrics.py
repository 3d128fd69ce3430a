"""Every service answers /metrics on its own port; a run shows up where it happened (the gateway's request by
route template, the executor's command, run and steps, the relay's lag), and no tenant id is a label value."""

from __future__ import annotations

import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import poll

CHAIN = {"nodes": [{"id": "a", "type": "transform", "config": {"template": {"x": 1}}},
                   {"id": "b", "type": "echo", "input_from": "a"}]}


async def scrape(port: int) -> tuple[str, dict[tuple[str, frozenset], float]]:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(r.text) for s in family.samples}
    return r.text, samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_a_run_is_counted_where_it_happened(stack, tenant):
    _, executor_before = await scrape(stack.ports["executor"])
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows", json={"name": f"wf-{uuid.uuid4().hex[:8]}", "definition": CHAIN})
        wid = r.json()["workflow"]["id"]
        r = await c.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": {}})
        assert r.status_code == 201, r.text
        rid = r.json()["run"]["id"]
        await poll(lambda: c.get(f"/api/v2/workflows/{wid}/runs/{rid}"),
                   lambda resp: resp.json()["run"]["status"] == "completed")
        await c.get(f"/api/v2/workflows/{uuid.uuid4()}/no-such-thing")
        odd = await c.request("PROPFIND", "/api/v2/workflows")  # a method of the client's choosing: no label value
        assert odd.status_code == 405

    text, gateway = await scrape(stack.ports["gateway"])
    assert value(gateway, "weft_http_requests_total", route="/api/v2/workflows/{workflow_id}/execute",
                 method="POST", status="201") >= 1
    assert value(gateway, "weft_http_request_duration_seconds_count",
                 route="/api/v2/workflows/{workflow_id}/execute", method="POST") >= 1
    assert value(gateway, "weft_http_requests_total", route="unmatched", method="GET", status="404") >= 1
    assert wid not in text and rid not in text  # route templates, never raw paths
    assert "PROPFIND" not in text
    assert sum(v for (name, labels), v in gateway.items()
               if name == "weft_http_requests_total" and ("method", "other") in labels) >= 1
    assert tenant not in text

    text, executor = await scrape(stack.ports["executor"])
    assert tenant not in text
    for name, labels in [("weft_commands_handled_total", {"command": "StartRun", "outcome": "ok"}),
                         ("weft_command_duration_seconds_count", {"command": "StartRun"}),
                         ("weft_runs_started_total", {}),
                         ("weft_runs_finished_total", {"status": "completed"}),
                         ("weft_step_duration_seconds_count", {"step_type": "transform", "result": "ok"})]:
        assert value(executor, name, **labels) >= value(executor_before, name, **labels) + 1, (name, labels)
    assert ("weft_approvals_waiting", frozenset()) in executor
    assert ("weft_consumer_pending", frozenset({("consumer", "executor-commands")})) in executor

    _, relay = await scrape(stack.ports["relay"])
    assert value(relay, "weft_relay_lag_events") >= 0 and ("weft_relay_lag_events", frozenset()) in relay
    assert ("weft_command_backlog", frozenset()) in relay
    assert ("weft_relay_held_back_seconds", frozenset()) in relay  # seconds; tests/test_relay.py makes it climb

    _, scheduler = await scrape(stack.ports["scheduler"])
    assert ("weft_timers_due", frozenset()) in scheduler and ("weft_timers_late", frozenset()) in scheduler
    _, notifier = await scrape(stack.ports["notifier"])
    assert ("weft_webhook_dead_letters", frozenset()) in notifier
    _, planner = await scrape(stack.ports["planner"])
    assert value(planner, "weft_commands_handled_total", command="CreateWorkflow", outcome="ok") >= 1


async def test_rate_limit_rejections_are_counted_by_surface(stack, store, tenant):
    from libs.security import apikeys

    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows", json={"name": f"wf-{uuid.uuid4().hex[:8]}", "definition": CHAIN})
        wid = uuid.UUID(r.json()["workflow"]["id"])
    async with store.tenant_transaction(tenant) as conn:
        key, _ = await apikeys.create_key(conn, tenant_id=tenant, name="m", created_by="test", workflow_ids=[wid],
                                          burst=1, per_minute=1)
    _, before = await scrape(stack.ports["gateway"])
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}) as c:
        statuses = [(await c.get(f"/api/v1/public/executions/{uuid.uuid4()}/status")).status_code for _ in range(3)]
    assert statuses.count(429) >= 1, statuses
    _, after = await scrape(stack.ports["gateway"])
    added = (value(after, "weft_rate_limit_rejections_total", surface="public")
             - value(before, "weft_rate_limit_rejections_total", surface="public"))
    assert added == statuses.count(429)
