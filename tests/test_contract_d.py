"""Contract D (spec/D-public-api.md) to the letter against the real stack: 404 for a workflow the key cannot
execute, the rate-limit headers on every response (401, 404, 405 included), a cancelled paused execution's
approvalStatus, and per-row results described alike by /results and the completion webhook."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import msgspec

from libs.domain.run_view import fold_run
from libs.events.schemas.registry import event_of
from services.notifier.webhook_payload import payload
from tests.conftest import poll
from tests.test_public_api import CUSTOMERS, _key, _public, _until_done, _workflow

HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
NOT_FOUND = {"message": "Workflow not found", "error": "Not Found", "statusCode": 404}
GATE = {"nodes": [{"id": "gate", "type": "approval", "config": {
    "title": "Review Generated WhatsApp Messages", "rows": "${inputs.csvData}", "approvers": ["a@example.com"]}},
    {"id": "after", "type": "echo", "input_from": "gate"}]}


def _limited(r: httpx.Response) -> bool:
    return all(name in r.headers for name in HEADERS) and int(r.headers["X-RateLimit-Limit"]) > 0


async def test_execute_with_an_unknown_unlisted_or_another_tenants_workflow_is_404(stack, store, tenant):
    mine, unlisted = await _workflow(stack, tenant), await _workflow(stack, tenant)
    theirs = await _workflow(stack, f"{tenant}x")
    key, _ = await _key(store, tenant, [mine], burst=100)
    async with _public(stack, key) as c:
        for wid in (str(uuid.uuid4()), unlisted, theirs):
            r = await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": CUSTOMERS}})
            assert (r.status_code, r.json()) == (404, NOT_FOUND), (wid, r.text)
            assert _limited(r)
        assert (await c.post(f"/agents/{mine}/execute", json={"input": {"csvData": CUSTOMERS}})).status_code == 202


async def test_rate_limit_headers_on_every_public_response(stack, store, tenant):
    wid = await _workflow(stack, tenant)
    key, _ = await _key(store, tenant, [wid], burst=100)
    async with _public(stack, None) as anonymous:
        r = await anonymous.get(f"/executions/{uuid.uuid4()}/status")
        assert r.status_code == 401 and r.json()["statusCode"] == 401 and _limited(r), r.headers
        r = await anonymous.get("/no/such/route")  # no key: the key check answers first
        assert r.status_code == 401 and _limited(r)
    async with _public(stack, key) as c:
        r = await c.get(f"/executions/{uuid.uuid4()}/status")
        assert r.status_code == 404 and _limited(r)
        r = await c.get("/no/such/route")
        assert (r.status_code, r.json()["statusCode"]) == (404, 404) and _limited(r), r.text
        r = await c.delete(f"/executions/{uuid.uuid4()}/status")
        assert (r.status_code, r.json()["statusCode"]) == (405, 405) and _limited(r), r.text
        remaining = int(r.headers["X-RateLimit-Remaining"])
        r = await c.get("/no/such/route")
        assert int(r.headers["X-RateLimit-Remaining"]) < remaining  # a routing error draws on the bucket too


async def test_a_cancelled_paused_execution_is_no_longer_pending_approval(stack, store, tenant):
    wid = await _workflow(stack, tenant, GATE)
    key, _ = await _key(store, tenant, [wid], burst=100)
    async with _public(stack, key) as c:
        eid = (await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": CUSTOMERS}})).json()["executionId"]
        status = await poll(lambda: c.get(f"/executions/{eid}/status"),
                            lambda r: r.json()["status"] == "pending_approval")
        assert status.json()["approvalStatus"] == "pending"
        async with stack.client(tenant) as admin:
            assert (await admin.delete(f"/api/v2/workflows/{wid}/runs/{eid}")).status_code == 200
        done = await _until_done(c, eid)
        assert done["status"] == "cancelled" and done["approvalStatus"] == "cancelled", done


async def test_results_and_the_completion_webhook_describe_rows_alike(stack, store, tenant):
    wid = await _workflow(stack, tenant)
    key, _ = await _key(store, tenant, [wid], burst=100)
    async with _public(stack, key) as c:
        eid = (await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": CUSTOMERS}})).json()["executionId"]
        assert (await _until_done(c, eid))["status"] == "completed"
        results = (await c.get(f"/executions/{eid}/results")).json()["output"]
    assert (results["successCount"], results["failedCount"]) == (2, 1) and results["results"][0] == {
        "index": 0, "status": "sent", "customerId": "CUST001", "greeting": "Hello John"}
    # The notifier's body for the run's RunCompleted, built from the run's events as the notifier does.
    recorded = await store.read_stream(tenant, f"run-{eid}")
    upto = recorded[:next(i for i, e in enumerate(recorded) if e.type == "RunCompleted") + 1]
    body = msgspec.json.decode(payload("execution.completed", event_of(upto[-1]), fold_run(upto)))
    assert body["data"]["output"] == results
    assert body["executionId"] == eid and datetime.fromisoformat(body["timestamp"]) <= datetime.now(UTC)


async def test_require_comment_holds_on_approve_as_on_reject(stack, store, tenant):
    gate = {"nodes": [{"id": "gate", "type": "approval", "config": {
        "title": "Review", "rows": "${inputs.csvData}", "approvers": ["a@example.com"], "require_comment": True}}]}
    wid = await _workflow(stack, tenant, gate)
    key, _ = await _key(store, tenant, [wid], burst=100)
    async with _public(stack, key) as c:
        eid = (await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": CUSTOMERS}})).json()["executionId"]
        await poll(lambda: c.get(f"/executions/{eid}/status"), lambda r: r.json()["status"] == "pending_approval")
        meta = (await c.get(f"/executions/{eid}/pending-approval")).json()["approvalData"]["metadata"]
        assert meta["requireComment"] is True
        for verb in ("approve", "reject"):
            r = await c.post(f"/executions/{eid}/{verb}", json={})
            assert (r.status_code, r.json()["message"]) == (400, f"A comment is required to {verb} this step")
        r = await c.post(f"/executions/{eid}/approve", json={"comment": "Content approved, looks good"})
        assert r.status_code == 200 and r.json()["status"] == "approved", r.text
