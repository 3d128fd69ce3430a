"""The public API (spec D) against real gateway, executor and relay processes: keys, execute, status,
results, errors in D's shape, isolation, the monthly quota, and the per-key rate limit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import msgspec

from libs.security import apikeys
from tests.conftest import poll

PUBLIC = "/api/v1/public"
ROWS = {
    "nodes": [{"id": "each", "type": "for_each", "config": {
        "items": "${inputs.csvData}",
        "step": {"type": "transform", "config": {"template": {
            "customerId": "${item.customerId}", "status": "sent", "greeting": "Hello ${item.name}"}}}}}],
    "concurrency": "unlimited",
}
SLOW = {"nodes": [{"id": "wait", "type": "delay", "config": {"seconds": 3}}]}  # one active run at a time


async def _workflow(stack, tenant: str, definition=ROWS) -> str:
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows", json={"name": f"wf-{uuid.uuid4().hex[:8]}", "definition": definition})
    assert r.status_code == 201, r.text
    return r.json()["workflow"]["id"]


async def _key(store, tenant: str, workflow_ids: list[str], **settings) -> tuple[str, uuid.UUID]:
    async with store.tenant_transaction(tenant) as conn:
        key, row = await apikeys.create_key(conn, tenant_id=tenant, name="site", created_by="test",
                                            workflow_ids=[uuid.UUID(w) for w in workflow_ids], **settings)
    return key, row["id"]


def _public(stack, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=stack.base_url + PUBLIC, headers=headers, timeout=20)


async def _until_done(c: httpx.AsyncClient, execution_id: str) -> dict:
    async def status():
        return (await c.get(f"/executions/{execution_id}/status")).json()

    return await poll(status, lambda s: s["status"] in ("completed", "failed", "cancelled"), timeout=20, every=0.1)


CUSTOMERS = [{"customerId": "CUST001", "name": "John"}, {"customerId": "CUST002"},
             {"customerId": "CUST003", "name": "Ada"}]


async def test_execute_status_and_results_as_the_contract_shows(stack, store, pool, tenant):
    wid = await _workflow(stack, tenant)
    key, key_id = await _key(store, tenant, [wid], burst=100)
    async with _public(stack, key) as c:
        r = await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": CUSTOMERS}, "description": "campaign"})
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert set(accepted) == {"executionId", "status", "startedAt", "message"}
        assert accepted["status"] == "pending" and accepted["message"] == "Execution started successfully"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", accepted["startedAt"])
        for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
            assert name in r.headers
        status = await _until_done(c, accepted["executionId"])
        assert status == {"id": accepted["executionId"], "status": "completed", "startedAt": accepted["startedAt"],
                          "completedAt": status["completedAt"], "error": None, "approvalStatus": None}
        r = await c.get(f"/executions/{accepted['executionId']}/results")
    assert r.status_code == 200
    results = r.json()
    assert set(results) == {"id", "status", "output", "error", "startedAt", "completedAt"}
    output = results["output"]
    assert (results["status"], output["successCount"], output["failedCount"]) == ("completed", 2, 1)
    assert output["results"][0] == {"index": 0, "status": "sent", "customerId": "CUST001", "greeting": "Hello John"}
    assert output["results"][1]["status"] == "failed" and "item.name" in output["results"][1]["error"]
    # The run carries the key as its actor (webhooks route on it) and the description.
    created = await pool.fetchrow("SELECT data::text AS data, metadata::text AS metadata FROM events"
                                  " WHERE stream_id = $1 AND version = 1", f"run-{accepted['executionId']}")
    assert json.loads(created["metadata"])["actor"] == f"api_key:{key_id}"
    assert json.loads(created["data"])["description"] == "campaign"


async def test_csv_data_is_cut_to_100_rows_and_the_response_says_so(stack, store, tenant):
    wid = await _workflow(stack, tenant)
    key, _ = await _key(store, tenant, [wid], burst=100)
    rows = [{"customerId": f"C{i}", "name": f"N{i}"} for i in range(150)]
    async with _public(stack, key) as c:
        r = await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": rows}})
        assert r.status_code == 202, r.text
        assert r.json()["warnings"] == ["input.csvData had 150 rows; only the first 100 are used"]
        await _until_done(c, r.json()["executionId"])
        out = (await c.get(f"/executions/{r.json()['executionId']}/results")).json()["output"]
        assert (out["successCount"], len(out["results"]), out["results"][-1]["customerId"]) == (100, 100, "C99")
        r = await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": rows[:100]}})
        assert r.status_code == 202 and "warnings" not in r.json()
        r = await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": "a,b\n1,2"}})
        assert r.status_code == 400 and r.json() == {
            "message": "input.csvData must be an array of rows", "error": "Bad Request", "statusCode": 400}


def _d(status: int, message: str, error: str) -> dict:
    return {"message": message, "error": error, "statusCode": status}


async def test_auth_errors_are_401_and_403_with_the_contracts_messages(stack, store, tenant):
    wid = await _workflow(stack, tenant)
    key, key_id = await _key(store, tenant, [wid], burst=100)
    path = f"/executions/{uuid.uuid4()}/status"
    for bad in (None, "weft_" + "0" * 64, "not-a-key", key[:-1]):
        async with _public(stack, bad) as c:
            r = await c.get(path)
        assert (r.status_code, r.json()) == (401, _d(401, "Invalid API key", "Unauthorized")), bad
    async with _public(stack, key) as c:
        r = await c.get(path)
        assert (r.status_code, r.json()) == (404, _d(404, "Execution not found", "Not Found"))
        async with store.tenant_transaction(tenant) as conn:
            await apikeys.update_key(conn, tenant, key_id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
        r = await c.get(path)
        assert (r.status_code, r.json()) == (403, _d(403, "API key has expired", "Forbidden"))
        assert "X-RateLimit-Remaining" in r.headers
        async with store.tenant_transaction(tenant) as conn:
            await apikeys.update_key(conn, tenant, key_id, expires_at=None, active=False)
        r = await c.get(path)
        assert (r.status_code, r.json()) == (403, _d(403, "API key is inactive", "Forbidden"))


async def test_workflow_errors_and_bad_requests_in_ds_shape(stack, store, tenant):
    wid, other = await _workflow(stack, tenant), await _workflow(stack, tenant)
    key, _ = await _key(store, tenant, [wid], burst=100)
    async with _public(stack, key) as c:
        r = await c.post(f"/agents/{other}/execute", json={})  # the tenant's, but not listed by the key (0100)
        assert (r.status_code, r.json()) == (404, _d(404, "Workflow not found", "Not Found")), r.text
        r = await c.post(f"/agents/{uuid.uuid4()}/execute", json={})
        assert (r.status_code, r.json()) == (404, _d(404, "Workflow not found", "Not Found")), r.text
        r = await c.post("/agents/not-a-uuid/execute", json={})
        assert (r.status_code, r.json()) == (404, _d(404, "Workflow not found", "Not Found"))
        r = await c.post(f"/agents/{wid}/execute", content=b"{not json")
        assert r.status_code == 400 and r.json()["statusCode"] == 400 and r.json()["error"] == "Bad Request"
        r = await c.post(f"/agents/{wid}/execute", json={"inputs": {}})
        assert r.status_code == 400 and "inputs" in r.json()["message"]
        r = await c.post(f"/agents/{wid}/execute", json={"input": [], "description": 5})
        assert r.status_code == 400 and set(r.json()) == {"message", "error", "statusCode"}
        r = await c.get("/executions/not-a-uuid/results")
        assert (r.status_code, r.json()) == (404, _d(404, "Execution not found", "Not Found"))
        r = await c.get("/no/such/path")
        assert (r.status_code, r.json()) == (404, _d(404, f"Cannot GET {PUBLIC}/no/such/path", "Not Found"))
        r = await c.delete(f"/executions/{uuid.uuid4()}/status")
        assert r.status_code == 405 and r.json()["error"] == "Method Not Allowed" and r.json()["statusCode"] == 405
        r = await c.post(f"/agents/{wid}/execute", content=b" " * 2_000_000,
                         headers={"Content-Type": "application/json"})
        assert (r.status_code, r.json()) == (413, _d(413, "Request body is too large", "Request Entity Too Large"))
        for junk in (b"null", b"[]", b'"x"', b'{"input": null}', b"\xff\xfe", b'{"a":' * 300):
            r = await c.post(f"/agents/{wid}/execute", content=junk, headers={"Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, (junk[:20], r.status_code, r.text)
    async with stack.client(tenant) as admin:
        r = await admin.patch(f"/api/v2/workflows/{wid}", json={"status": "archived"})
        assert r.status_code == 200, r.text
    async with _public(stack, key) as c:
        r = await c.post(f"/agents/{wid}/execute", json={})
    assert (r.status_code, r.json()) == (403, _d(403, "Workflow is inactive", "Forbidden"))


async def test_a_key_sees_only_its_own_executions(stack, store, tenant):
    wid = await _workflow(stack, tenant)
    key, _ = await _key(store, tenant, [wid], burst=100)
    sibling, _ = await _key(store, tenant, [wid], burst=100)  # same tenant, another key
    other_tenant = f"{tenant}x"
    other_wid = await _workflow(stack, other_tenant)
    stranger, _ = await _key(store, other_tenant, [other_wid], burst=100)
    async with _public(stack, key) as c:
        execution = (await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": []}})).json()["executionId"]
        await _until_done(c, execution)
    for other in (sibling, stranger):
        async with _public(stack, other) as c:
            for path in ("status", "results", "pending-approval"):
                r = await c.get(f"/executions/{execution}/{path}")
                assert (r.status_code, r.json()) == (404, _d(404, "Execution not found", "Not Found")), path
            r = await c.post(f"/executions/{execution}/approve", json={})
            assert r.status_code == 404
    # A run started on another surface is not the key's either.
    async with stack.client(tenant) as user:
        run = (await user.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": {"csvData": []}})).json()["run"]
    async with _public(stack, key) as c:
        assert (await c.get(f"/executions/{run['id']}/status")).status_code == 404


async def _usage(store, tenant: str, key_id: uuid.UUID) -> int:
    async with store.tenant_transaction(tenant) as conn:
        return await conn.fetchval("SELECT coalesce(sum(used), 0) FROM api_key_usage WHERE key_id = $1", key_id)


async def test_monthly_limit_holds_under_concurrency_and_can_be_raised_live(stack, store, tenant):
    wid = await _workflow(stack, tenant)
    key, key_id = await _key(store, tenant, [wid], burst=100, monthly_limit=3)
    async with _public(stack, key) as c:
        for _ in range(2):
            assert (await c.post(f"/agents/{wid}/execute", json={})).status_code == 202
        # At limit - 1, several concurrent executes: exactly one passes.
        rs = await asyncio.gather(*(c.post(f"/agents/{wid}/execute", json={}) for _ in range(4)))
        assert sorted(r.status_code for r in rs) == [202, 403, 403, 403], [r.text for r in rs]
        refused = next(r for r in rs if r.status_code == 403)
        assert refused.json() == _d(403, "API key usage limit exceeded", "Forbidden")
        assert await _usage(store, tenant, key_id) == 3
        async with stack.client(tenant) as admin:  # the quota is a per-key setting, changed without a restart
            r = await admin.patch(f"/api/v2/api-keys/{key_id}", json={"monthly_limit": 4})
            assert r.status_code == 200 and r.json()["api_key"]["usage"]["executions"] == 3
        assert (await c.post(f"/agents/{wid}/execute", json={})).status_code == 202
        assert (await c.post(f"/agents/{wid}/execute", json={})).status_code == 403


async def test_refused_and_replayed_executes_cost_nothing(stack, store, tenant):
    wid = await _workflow(stack, tenant, SLOW)
    key, key_id = await _key(store, tenant, [wid], burst=100, monthly_limit=10)
    async with _public(stack, key) as c:
        first = await c.post(f"/agents/{wid}/execute", json={}, headers={"Idempotency-Key": "order-1"})
        assert first.status_code == 202, first.text
        again = await c.post(f"/agents/{wid}/execute", json={}, headers={"Idempotency-Key": "order-1"})
        assert (again.status_code, again.json()) == (202, first.json())  # the stored response, replayed
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["executionId"] == first.json()["executionId"]
        busy = await c.post(f"/agents/{wid}/execute", json={})  # one active run per workflow: 409, in D's shape
        assert busy.status_code == 409 and set(busy.json()) == {"message", "error", "statusCode"}, busy.text
    assert await _usage(store, tenant, key_id) == 1


async def test_an_accepted_execute_the_executor_has_not_recorded_yet_is_pending(stack, store, tenant):
    """With the executor down the gateway answers 202 with the run's id after its command timeout; the key
    sees it as pending until the executor records it, and it counts against the quota once."""
    wid = await _workflow(stack, tenant)
    key, key_id = await _key(store, tenant, [wid], burst=100)
    executor = stack.procs["executor"]
    executor.stop()
    try:
        async with _public(stack, key) as c:
            r = await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": CUSTOMERS[:1]}})
            assert r.status_code == 202 and set(r.json()) == {"executionId", "status", "startedAt", "message"}
            execution = r.json()["executionId"]
            s = await c.get(f"/executions/{execution}/status")
            assert (s.status_code, s.json()["status"], s.json()["id"]) == (200, "pending", execution)
            assert await _usage(store, tenant, key_id) == 1
    finally:
        executor.start()
        from deploy.local.stack import wait_http

        wait_http(stack.ports["executor"])
    async with _public(stack, key) as c:
        assert (await _until_done(c, execution))["status"] == "completed"
    assert await _usage(store, tenant, key_id) == 1


async def test_rate_limit_headers_429_and_live_limit_changes(stack, store, tenant):
    wid = await _workflow(stack, tenant)
    key, key_id = await _key(store, tenant, [wid])  # the contract's defaults: burst 10, 1 per second
    path = f"/executions/{uuid.uuid4()}/status"
    async with _public(stack, key) as c:
        rs = []
        while len(rs) < 30 and (not rs or rs[-1].status_code != 429):
            rs.append(await c.get(path))
        # The burst of 10, then 429 (one more may pass if a second went by: the refill is 1 per second).
        assert [r.status_code for r in rs[:10]] == [404] * 10 and rs[-1].status_code == 429 and len(rs) <= 12
        assert [int(r.headers["X-RateLimit-Remaining"]) for r in rs[:10]] == list(range(9, -1, -1))
        assert all(r.headers["X-RateLimit-Limit"] == "10" for r in rs)
        limited = rs[-1]
        assert limited.json() == {"statusCode": 429, "message": "Rate limit exceeded", "error": "Too Many Requests",
                                  "retryAfter": 1}
        assert limited.headers["Retry-After"] == "1" and limited.headers["X-RateLimit-Remaining"] == "0"
        reset = int(limited.headers["X-RateLimit-Reset"])
        assert time.time() * 1000 + 8_000 < reset < time.time() * 1000 + 11_000  # ~10 s until full again
        async with stack.client(tenant) as admin:
            r = await admin.patch(f"/api/v2/api-keys/{key_id}", json={"rate_limit": {"burst": 30, "per_minute": 60000}})
            assert r.status_code == 200 and r.json()["api_key"]["rate_limit"] == {"burst": 30, "per_minute": 60000}
        await asyncio.sleep(0.05)  # 1000 per second now: ~30 tokens within 30 ms
        rs = [await c.get(path) for _ in range(20)]
        assert all(r.status_code == 404 and r.headers["X-RateLimit-Limit"] == "30" for r in rs)


async def test_admin_api_lists_rotates_deactivates_and_deletes_without_showing_keys(stack, tenant):
    wid = await _workflow(stack, tenant)
    async with stack.client(tenant) as admin:
        r = await admin.post("/api/v2/api-keys", json={"name": "site", "workflow_ids": [wid]})
        assert r.status_code == 201, r.text
        key, key_id = r.json()["key"], r.json()["api_key"]["id"]
        assert re.fullmatch(r"weft_[0-9a-f]{64}", key)
        assert r.json()["api_key"]["monthly_limit"] == 1000 and r.json()["api_key"]["rate_limit"] == {
            "burst": 10, "per_minute": 60}
        listed = await admin.get("/api/v2/api-keys")
        assert listed.json()["count"] == 1 and key[5:] not in listed.text and key[5:] not in (
            await admin.get(f"/api/v2/api-keys/{key_id}")).text
        assert listed.json()["api_keys"][0]["key_prefix"] == key[:11] + "..."
        async with _public(stack, key) as c:
            execution = (await c.post(f"/agents/{wid}/execute", json={})).json()["executionId"]
        r = await admin.post(f"/api/v2/api-keys/{key_id}/rotate")
        assert r.status_code == 200 and r.json()["api_key"]["id"] == key_id
        new_key = r.json()["key"]
        async with _public(stack, key) as c:
            assert (await c.get(f"/executions/{execution}/status")).status_code == 401
        async with _public(stack, new_key) as c:  # same key id: its executions stay visible
            assert (await c.get(f"/executions/{execution}/status")).status_code == 200
        r = await admin.post(f"/api/v2/api-keys/{key_id}/deactivate")
        assert r.status_code == 200 and r.json()["api_key"]["status"] == "inactive"
        async with _public(stack, new_key) as c:
            assert (await c.get(f"/executions/{execution}/status")).json()["message"] == "API key is inactive"
        for bad, field in (({"name": "x", "workflow_ids": []}, "workflow_ids"),
                           ({"name": "x", "workflow_ids": ["nope"]}, "workflow_ids"),
                           ({"name": "x", "workflow_ids": [str(uuid.uuid4())]}, "workflow_ids"),
                           ({"name": "", "workflow_ids": [wid]}, "name"),
                           ({"name": "x", "workflow_ids": [wid], "monthly_limit": -1}, "monthly_limit"),
                           ({"name": "x", "workflow_ids": [wid], "rate_limit": {"burst": 0}}, "rate_limit.burst"),
                           ({"name": "x", "workflow_ids": [wid], "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
                           ({"name": "x", "workflow_ids": [wid], "extra": 1}, "extra")):
            r = await admin.post("/api/v2/api-keys", json=bad)
            assert r.status_code == 400 and r.json()["field"] == field, (bad, r.text)
    async with stack.client(f"{tenant}x") as stranger:
        assert (await stranger.get(f"/api/v2/api-keys/{key_id}")).status_code == 404
        assert (await stranger.delete(f"/api/v2/api-keys/{key_id}")).status_code == 404
    async with stack.client(tenant) as admin:
        assert (await admin.delete(f"/api/v2/api-keys/{key_id}")).status_code == 200
        assert (await admin.get(f"/api/v2/api-keys/{key_id}")).status_code == 404
    async with _public(stack, new_key) as c:
        assert (await c.get(f"/executions/{execution}/status")).status_code == 401


def _weft(infra, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")} | {"WEFT_DATABASE_URL": infra.database_url}
    return subprocess.run([sys.executable, "-m", "cli", "api-key", *args], env=env, capture_output=True,
                          text=True, timeout=60)


async def test_cli_prints_the_key_once_and_stores_only_its_hash(stack, pool, infra, tenant):
    wid = await _workflow(stack, tenant)
    made = await asyncio.to_thread(_weft, infra, "create", "--tenant", tenant, "--name", "site", "--workflow", wid,
                                   "--monthly-limit", "5", "--json")
    assert made.returncode == 0, made.stderr
    created = msgspec.json.decode(made.stdout)
    key, key_id = created["key"], created["id"]
    assert re.fullmatch(r"weft_[0-9a-f]{64}", key) and created["monthly_limit"] == 5
    stored = await pool.fetchrow("SELECT * FROM api_keys WHERE id = $1", uuid.UUID(key_id))
    assert bytes(stored["key_hash"]) == hashlib.sha256(key.encode()).digest()
    assert not any(key[5:] in str(value) for value in dict(stored).values())
    listed = await asyncio.to_thread(_weft, infra, "list", "--tenant", tenant)
    assert key_id in listed.stdout and key[5:] not in listed.stdout
    async with _public(stack, key) as c:
        assert (await c.post(f"/agents/{wid}/execute", json={})).status_code == 202
    rotated = await asyncio.to_thread(_weft, infra, "rotate", "--tenant", tenant, key_id, "--json")
    new_key = msgspec.json.decode(rotated.stdout)["key"]
    assert new_key != key
    off = await asyncio.to_thread(_weft, infra, "deactivate", "--tenant", tenant, key_id)
    assert off.returncode == 0 and "active:        no" in off.stdout
    async with _public(stack, new_key) as c:
        assert (await c.get(f"/executions/{uuid.uuid4()}/status")).status_code == 403
    bad = await asyncio.to_thread(_weft, infra, "create", "--tenant", tenant, "--name", "x", "--workflow", "nope")
    assert bad.returncode == 2 and "not a workflow id" in bad.stderr
    gone = await asyncio.to_thread(_weft, infra, "delete", "--tenant", tenant, key_id)
    assert gone.returncode == 0
    assert await pool.fetchval("SELECT count(*) FROM api_keys WHERE id = $1", uuid.UUID(key_id)) == 0


async def test_cli_create_with_a_webhook_registers_it_for_the_key(stack, pool, infra, tenant):
    wid = await _workflow(stack, tenant)
    made = await asyncio.to_thread(
        _weft, infra, "create", "--tenant", tenant, "--name", "site", "--workflow", wid, "--json",
        "--webhook-url", "https://hooks.example.com/weft", "--webhook-events", "execution.completed,execution.failed",
        "--webhook-secret", "s3cret-s3cret")
    assert made.returncode == 0, made.stderr
    created = msgspec.json.decode(made.stdout)
    endpoint = await pool.fetchrow("SELECT * FROM webhook_endpoints WHERE id = $1", uuid.UUID(created["webhook_id"]))
    assert str(endpoint["api_key_id"]) == created["id"] and endpoint["url"] == "https://hooks.example.com/weft"
    assert list(endpoint["events"]) == ["execution.completed", "execution.failed"]
    bad = await asyncio.to_thread(_weft, infra, "create", "--tenant", tenant, "--name", "x", "--workflow", wid,
                                  "--webhook-url", "ftp://nope")
    assert bad.returncode == 2
    assert await pool.fetchval("SELECT count(*) FROM api_keys WHERE tenant_id = $1", tenant) == 1  # rolled back


APPROVAL = {"nodes": [
    {"id": "draft", "type": "transform", "config": {"template": {"rows": "${inputs.csvData}"}}},
    {"id": "review", "type": "approval", "input_from": "draft",
     "config": {"title": "Review the messages", "description": None}},
    {"id": "send", "type": "echo", "input_from": "review"}]}


async def test_a_paused_run_is_pending_approval_until_the_key_approves_it(stack, store, tenant):
    """Status words and approvalStatus across an approval step, decided through the approval routes."""
    wid = await _workflow(stack, tenant, APPROVAL)
    key, _ = await _key(store, tenant, [wid], burst=100)
    async with _public(stack, key) as c:
        r = await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": CUSTOMERS}})
        execution = r.json()["executionId"]
        paused = await poll(lambda: c.get(f"/executions/{execution}/status"),
                            lambda r: r.json()["status"] not in ("pending", "running"), timeout=20, every=0.1)
        assert (paused.json()["status"], paused.json()["approvalStatus"]) == ("pending_approval", "pending")
        r = await c.get(f"/executions/{execution}/pending-approval")
        assert r.status_code == 200 and r.json()["status"] == "pending_approval", r.text
        r = await c.post(f"/executions/{execution}/approve", json={"comment": "fine"})
        assert r.status_code == 200 and r.json()["status"] == "approved", r.text
        done = await _until_done(c, execution)
        assert (done["status"], done["approvalStatus"]) == ("completed", "approved")
        execution = (await c.post(f"/agents/{wid}/execute", json={"input": {"csvData": []}})).json()["executionId"]
        await poll(lambda: c.get(f"/executions/{execution}/status"),
                   lambda r: r.json()["status"] == "pending_approval", timeout=20, every=0.1)
        r = await c.post(f"/executions/{execution}/reject", json={"comment": "no"})
        assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
        done = await _until_done(c, execution)
    assert (done["status"], done["approvalStatus"]) == ("failed", "rejected")


def test_the_approval_routes_are_part_of_the_public_router():
    from services.gateway.public import router

    paths = {r.path for r in router.routes}
    assert {f"{PUBLIC}/executions/{{execution_id:str}}/{p}" for p in ("pending-approval", "approve", "reject")} <= paths
