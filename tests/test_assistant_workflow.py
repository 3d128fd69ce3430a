"""Contract A's /api/workflow endpoints against real processes: ownership of the stream, stream tokens for a
browser EventSource, an approved plan starting its run, and A's error shape for routing errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx

from libs.security.approval_tokens import issue_plan_token
from libs.security.stream_tokens import issue_stream_token
from libs.security.auth import Principal
from tests.conftest import poll

SAFE_COMMAND = "Record that the nightly build passed"
OUTBOUND_COMMAND = "Summarise the sales numbers and email them to team@example.com"


async def _safe_workflow(c: httpx.AsyncClient) -> dict:
    r = await c.post("/api/workflow/execute", json={"command": SAFE_COMMAND})
    assert r.status_code == 200, r.text
    body = r.json()
    await poll(lambda: c.get(f"/api/v2/workflows/{body['workflowId']}/runs/{body['runId']}"),
               lambda resp: resp.json()["run"]["status"] == "completed")
    return body


async def _first_events(client: httpx.AsyncClient, url: str, n: int, **kwargs) -> tuple[int, list[str]]:
    """Status and the first n `event:` names of an SSE response."""
    names: list[str] = []
    async with client.stream("GET", url, **kwargs) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, [r.text]
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
                if len(names) >= n:
                    break
    return 200, names


async def test_stream_is_for_the_workflows_owner_only(stack, tenant):
    async with stack.client(tenant, "alice") as alice, stack.client(tenant, "bob") as bob, \
            stack.client(f"o{tenant}", "alice") as other_tenant:
        wid = (await _safe_workflow(alice))["workflowId"]
        status, names = await _first_events(alice, f"/api/workflow/stream?workflowId={wid}", 2)
        assert status == 200 and names[0] == "connected", names
        r = await bob.get(f"/api/workflow/stream?workflowId={wid}")
        assert r.status_code == 403 and r.json() == {"error": "Forbidden",
                                                     "message": "This workflow belongs to another user"}
        r = await other_tenant.get(f"/api/workflow/stream?workflowId={wid}")
        assert r.status_code == 404 and r.json()["error"] == "Not Found"
        r = await bob.post("/api/workflow/stream-token", json={"workflowId": wid})
        assert r.status_code == 403 and r.json()["error"] == "Forbidden"
        r = await other_tenant.post("/api/workflow/stream-token", json={"workflowId": wid})
        assert r.status_code == 404


async def test_a_browser_event_source_uses_a_short_lived_stream_token(stack, tenant):
    async with stack.client(tenant, "alice") as alice, httpx.AsyncClient(base_url=stack.base_url, timeout=20) as browser:
        wid = (await _safe_workflow(alice))["workflowId"]
        other = (await _safe_workflow(alice))["workflowId"]
        r = await alice.post("/api/workflow/stream-token", json={"workflowId": wid})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"streamToken", "expiresIn", "streamUrl"} and 0 < body["expiresIn"] <= 300
        status, names = await _first_events(browser, body["streamUrl"], 2)  # no Authorization header
        assert status == 200 and names[:2] == ["connected", "run_event"], names
        # Bound to its workflow, never a bearer token, and short-lived.
        r = await browser.get(f"/api/workflow/stream?workflowId={other}&streamToken={body['streamToken']}")
        assert r.status_code == 401 and "another workflow" in r.json()["message"]
        r = await browser.get("/api/v2/workflows", headers={"Authorization": f"Bearer {body['streamToken']}"})
        assert r.status_code == 401
        expired = issue_stream_token(stack.settings, Principal(tenant, "alice"), uuid.UUID(wid),
                                     now=datetime.now(UTC).timestamp() - 600)
        r = await browser.get(f"/api/workflow/stream?workflowId={wid}&streamToken={expired}")
        assert r.status_code == 401 and r.json() == {"error": "Unauthorized", "field": "streamToken",
                                                     "message": "Stream token has expired; ask for a new one"}
        r = await browser.get(f"/api/workflow/stream?workflowId={wid}")
        assert r.status_code == 401 and set(r.json()) == {"error", "message"}
        r = await browser.post("/api/workflow/stream-token", json={"workflowId": wid})
        assert r.status_code == 401
        r = await alice.post("/api/workflow/stream-token", json={"workflowId": "nope"})
        assert r.status_code == 404 and r.json()["error"] == "Not Found"
        r = await alice.post("/api/workflow/stream-token", json={})
        assert r.status_code == 400 and r.json()["error"] == "Bad Request"


async def test_an_approved_assistant_plan_starts_its_run(stack, tenant, pool):
    async with stack.client(tenant, "alice") as alice:
        r = await alice.post("/api/workflow/execute", json={"command": OUTBOUND_COMMAND})
        assert r.status_code == 200, r.text
        held = r.json()
        assert held["status"] == "awaiting_plan_approval"
        wid = held["workflowId"]
        row = await pool.fetchrow("SELECT plan_version, plan_hash FROM workflows WHERE id = $1", uuid.UUID(wid))
        token = issue_plan_token(stack.settings, token_id=uuid.uuid4(), tenant_id=tenant, workflow_id=uuid.UUID(wid),
                                 plan_version=row["plan_version"], plan_hash=row["plan_hash"],
                                 approver="ann@example.com", now=datetime.now(UTC))
        r = await alice.get(f"/api/workflows/{wid}/approve", params={"token": token},
                            headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"})  # not a link scanner
        assert r.status_code == 303, r.text
        runs = await poll(lambda: alice.get(f"/api/v2/workflows/{wid}/runs"), lambda resp: resp.json()["count"] == 1,
                          timeout=30)
        run_id = runs.json()["runs"][0]["id"]
        run = (await alice.get(f"/api/v2/workflows/{wid}/runs/{run_id}")).json()["run"]
        row = await pool.fetchrow("SELECT created_by, inputs::text AS inputs FROM runs WHERE id = $1", uuid.UUID(run_id))
        assert (row["created_by"], row["inputs"], run["inputs"]) == ("alice", "{}", {})
        # Its first step is an agent (no LLM in the test stack); that the run exists is the point.
        await poll(lambda: alice.get(f"/api/v2/workflows/{wid}/runs"), lambda resp: resp.json()["count"] == 1)


async def test_routing_errors_under_a_paths_use_a_error_shape(stack, tenant):
    async with stack.client(tenant) as c:
        r = await c.get("/api/workflow/nope")
        assert r.status_code == 404 and r.json() == {"error": "Not Found", "message": "Cannot GET /api/workflow/nope"}
        r = await c.get("/api/workflow/execute")
        assert r.status_code == 405 and set(r.json()) == {"error", "message"} and r.json()["error"] == "Method Not Allowed"
        r = await c.delete("/api/workflow/cancel")
        assert r.status_code == 405 and r.json()["error"] == "Method Not Allowed"
        r = await c.get("/api/history/x/y/z")
        assert r.status_code == 404 and r.json()["error"] == "Not Found"
        r = await c.get("/api/workflowsx")  # not A's: the app's default (v2) shape
        assert r.status_code == 404 and "success" in r.json()


async def test_execute_and_cancel_contract_shapes_and_refusals(stack, tenant):
    async with stack.client(tenant) as c, httpx.AsyncClient(base_url=stack.base_url) as anon:
        r = await c.post("/api/workflow/execute", json={"command": SAFE_COMMAND})
        body = r.json()
        assert r.status_code == 200 and set(body) == {"success", "workflowId", "steps", "status", "message", "runId"}
        assert set(body["steps"][0]) == {"id", "agentName", "action", "description", "status", "order"}
        for bad, field in (({}, "command"), ({"command": 7}, "command"), ({"command": "short"}, "command"),
                           ({"command": SAFE_COMMAND, "extra": 1}, "extra")):
            r = await c.post("/api/workflow/execute", json=bad)
            assert r.status_code == 400 and r.json()["error"] == "Bad Request" and r.json()["field"] == field, r.text
        r = await c.post("/api/workflow/execute", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and set(r.json()) >= {"error", "message"}
        for path, payload in (("/api/workflow/execute", {"command": SAFE_COMMAND}),
                              ("/api/workflow/cancel", {"workflowId": body["workflowId"]})):
            r = await anon.post(path, json=payload)
            assert r.status_code == 401 and set(r.json()) == {"error", "message"}, r.text
