"""Planning surfaces against real processes: v2 parse, console drafts and plan versions, assistant execute."""

from __future__ import annotations

import json
import os

import pytest

from deploy.local.stack import ServiceProcess, service_env, wait_http
from deploy.local.embedded import free_port
from tests.conftest import poll
from tests.fakes.openai_server import FakeOpenAI, Reply, Status

OUTBOUND_GOAL = "Every Monday at 9am summarise the sales numbers and email them to team@example.com"
SAFE_COMMAND = "Record that the nightly build passed"


async def _events(pool, tenant: str, stream_id: str) -> list[tuple[str, dict]]:
    rows = await pool.fetch("SELECT type, data::text AS data FROM events WHERE tenant_id = $1 AND stream_id = $2"
                            " ORDER BY version", tenant, stream_id)
    return [(r["type"], json.loads(r["data"])) for r in rows]


async def test_v2_parse_offline_planner(stack, tenant, pool):
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows/parse", json={
            "instruction": OUTBOUND_GOAL, "context": {"availableTools": ["agent", "email.send", "salesforce.query"]}})
    assert r.status_code == 200, r.text
    body = r.json()
    wf = body["workflow"]
    assert body["success"] is True and isinstance(body["parseTimeMs"], int)
    assert wf["type"] == "generated" and wf["valid"] is True and wf["source"] == "offline-planner"
    assert wf["confidence"] <= 0.4 and "offline planner" in wf["message"]
    assert [(s["type"], s["action"]) for s in wf["steps"]] == [("agent", "agent"), ("integration", "email.send")]
    assert wf["steps"][1]["input_from"] == "step_1" and wf["schedule"] == "0 9 * * 1"
    assert wf["outboundSteps"] == ["step_2"] and wf["estimatedCostUsd"] > 0
    rows = await pool.fetch("SELECT stream_id, data::text AS data FROM events WHERE tenant_id = $1"
                            " AND type = 'PlanGenerated'", tenant)
    assert len(rows) == 1 and rows[0]["stream_id"].startswith("plan-")
    event = json.loads(rows[0]["data"])
    assert event["plan_hash"] == wf["planHash"] and event["model"] == "offline-planner"
    assert event["prompt_version"] and event["goal"] == OUTBOUND_GOAL


async def test_v2_parse_respects_the_allow_list_and_fails_cleanly(stack, tenant, pool):
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows/parse", json={"instruction": OUTBOUND_GOAL,
                                                          "context": {"availableTools": ["agent"]}})
        assert [s["action"] for s in r.json()["workflow"]["steps"]] == ["agent"]
        # The list names integrations; built-in steps are always there (decision 0102): no tools, no email.
        r = await c.post("/api/v2/workflows/parse", json={"instruction": OUTBOUND_GOAL,
                                                          "context": {"availableTools": []}})
        assert r.status_code == 200 and [s["action"] for s in r.json()["workflow"]["steps"]] == ["agent"], r.text
        for bad in ({"instruction": "hey"}, {"instruction": "     x    "}, {}, {"instruction": 5}):
            r = await c.post("/api/v2/workflows/parse", json=bad)
            assert r.status_code == 400 and r.json()["field"] == "instruction", (bad, r.text)
    failed = await pool.fetch("SELECT data::text AS data FROM events WHERE tenant_id = $1 AND type = 'PlanFailed'",
                              tenant)
    assert failed == []  # refused bodies never reach the planner


async def test_console_goal_becomes_a_draft_awaiting_plan_approval(stack, tenant, pool):
    async with stack.client(tenant) as c:
        r = await c.post("/api/workflows", json={"goal": OUTBOUND_GOAL, "schedule": "0 9 * * 1"})
        assert r.status_code == 201, r.text
        draft = r.json()
        assert draft["status"] == "draft" and draft["title"] and draft["message"]
        assert [s["stepIndex"] for s in draft["steps"]] == [0, 1] and draft["steps"][1]["outbound"] is True
        assert draft["schedule"] == "0 9 * * 1" and draft["planVersion"] == 1
        wid = draft["workflowId"]
        types = [t for t, _ in await _events(pool, tenant, f"workflow-{wid}")]
        assert types == ["WorkflowCreated", "PlanGenerated", "PlanApprovalRequested"]
        requested = (await _events(pool, tenant, f"workflow-{wid}"))[2][1]
        assert requested["plan_hash"] == draft["planHash"] and requested["outbound_steps"] == ["step_2"]
        # A draft is activated only by approving its plan, never by a status edit or an execute.
        assert (await c.patch(f"/api/v2/workflows/{wid}", json={"status": "active"})).status_code == 409
        assert (await c.post(f"/api/v2/workflows/{wid}/execute", json={})).status_code == 409
        r = await c.post("/api/workflows", json={"goal": OUTBOUND_GOAL, "schedule": "every monday"})
        assert r.status_code == 400 and r.json()["field"] == "schedule" and r.json()["error"] == "Bad Request"
        r = await c.post("/api/workflows", json={"goal": "hi"})
        assert r.status_code == 400 and set(r.json()) >= {"error", "message"}


async def test_editing_a_draft_makes_a_new_plan_version_with_a_diff(stack, tenant, pool):
    async with stack.client(tenant) as c:
        draft = (await c.post("/api/workflows", json={"goal": OUTBOUND_GOAL})).json()
        wid = draft["workflowId"]
        steps = [
            {"id": "step_1", "action": "agent", "config": {"prompt": "Summarise this week's sales"}},
            {"id": "step_3", "action": "slack.post_message", "input_from": "step_1",
             "config": {"channel": "#sales", "message": "${input}"}},
        ]
        r = await c.post(f"/api/workflows/{wid}/steps", json={"steps": steps})
        assert r.status_code == 200, r.text
        v2 = r.json()
        assert v2["planVersion"] == 2 and v2["planHash"] != draft["planHash"] and v2["status"] == "draft"
        again = (await c.post(f"/api/workflows/{wid}/steps", json={"steps": steps})).json()
        assert again["planVersion"] == 2  # the same plan is not a new version
        diff = (await c.get(f"/api/workflows/{wid}/plans/diff")).json()
        assert (diff["from"], diff["to"]) == (1, 2)
        assert [s["id"] for s in diff["added"]] == ["step_3"] and [s["id"] for s in diff["removed"]] == ["step_2"]
        assert [(ch["id"], ch["fields"]) for ch in diff["changed"]] == [("step_1", ["config", "description"])]
        versions = (await c.get(f"/api/workflows/{wid}/plans")).json()["versions"]
        assert [(v["version"], v["source"]) for v in versions] == [(1, "offline-planner"), (2, "edited")]
        assert (await c.get(f"/api/workflows/{wid}/plans/diff", params={"from": 7})).status_code == 404
        for bad in ([{"id": "x", "action": "shell.exec", "config": {}}],
                    [{"id": "a", "action": "agent", "input_from": "b", "config": {"prompt": "p"}},
                     {"id": "b", "action": "agent", "input_from": "a", "config": {"prompt": "p"}}]):
            r = await c.post(f"/api/workflows/{wid}/steps", json={"steps": bad})
            assert r.status_code == 422 and r.json()["error"] == "Unprocessable Entity", r.text
    approvals = [d for t, d in await _events(pool, tenant, f"workflow-{wid}") if t == "PlanApprovalRequested"]
    assert [(a["plan_version"], a["plan_hash"]) for a in approvals] == [(1, draft["planHash"]), (2, v2["planHash"])]


async def test_assistant_runs_a_safe_plan_at_once_and_holds_an_outbound_one(stack, tenant):
    async with stack.client(tenant) as c:
        r = await c.post("/api/workflow/execute", json={"command": SAFE_COMMAND})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and body["message"] == "Workflow created and planned successfully"
        assert body["steps"] == [{"id": "step_1", "agentName": "DataAgent", "action": "transform",
                                  "description": "Record the request", "status": "pending", "order": 0}]
        wid, run_id = body["workflowId"], body["runId"]
        run = await poll(lambda: c.get(f"/api/v2/workflows/{wid}/runs/{run_id}"),
                         lambda resp: resp.json()["run"]["status"] == "completed")
        assert run.json()["run"]["outputs"] == {"goal": SAFE_COMMAND}

        held = (await c.post("/api/workflow/execute", json={"command": OUTBOUND_GOAL})).json()
        assert held["status"] == "awaiting_plan_approval" and "runId" not in held
        assert [s["agentName"] for s in held["steps"]] == ["LLMAgent", "EmailAgent"]
        assert (await c.get(f"/api/v2/workflows/{held['workflowId']}/runs")).json()["count"] == 0
        r = await c.post("/api/workflow/execute", json={"command": "too short"})
        assert r.status_code == 400 and r.json() == {"error": "Bad Request", "field": "command",
                                                     "message": "command must be at least 10 characters"}


async def test_console_lists_with_step_counts_latest_runs_and_run_history(stack, tenant):
    async with stack.client(tenant) as c:
        body = (await c.post("/api/workflow/execute", json={"command": SAFE_COMMAND})).json()
        wid, run_id = body["workflowId"], body["runId"]
        for _ in range(3):
            # One active run per workflow: wait for each before starting the next.
            await poll(lambda rid=run_id: c.get(f"/api/v2/workflows/{wid}/runs/{rid}"),
                       lambda resp: resp.json()["run"]["status"] == "completed")
            if _ < 2:
                r = await c.post(f"/api/v2/workflows/{wid}/execute", json={})
                assert r.status_code == 201, r.text
                run_id = r.json()["run"]["id"]
        draft = (await c.post("/api/workflows", json={"goal": OUTBOUND_GOAL})).json()
        listing = (await c.get("/api/workflows")).json()
        by_id = {w["id"]: w for w in listing}
        assert by_id[wid]["stepCount"] == 1 and by_id[wid]["latestRun"]["runNumber"] == 3
        assert by_id[draft["workflowId"]]["latestRun"] is None and by_id[draft["workflowId"]]["stepCount"] == 2
        one = (await c.get(f"/api/workflows/{wid}")).json()
        assert [r["runNumber"] for r in one["workflowRuns"]] == [3, 2, 1]
        assert [s["stepIndex"] for s in one["workflowSteps"]] == [0]
    async with stack.client(f"{tenant}z") as other:
        r = await other.get(f"/api/workflows/{wid}")
        assert r.status_code == 404 and r.json()["error"] == "Not Found"
        assert (await other.get("/api/workflows")).json() == []


async def test_console_idempotency_key_plans_once(stack, tenant, pool):
    async with stack.client(tenant) as c:
        first = await c.post("/api/workflows", json={"goal": OUTBOUND_GOAL}, headers={"Idempotency-Key": "g1"})
        second = await c.post("/api/workflows", json={"goal": OUTBOUND_GOAL}, headers={"Idempotency-Key": "g1"})
        assert first.status_code == second.status_code == 201 and first.json() == second.json()
        assert len((await c.get("/api/workflows")).json()) == 1
    assert await pool.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1 AND type = 'PlanGenerated'",
                               tenant) == 1


@pytest.fixture
def llm_planner(stack, infra):
    """Swap the stack's offline planner for one that talks to a fake OpenAI-compatible server."""
    fake = FakeOpenAI().start()
    offline = stack.procs["planner"]
    offline.stop()
    port = free_port()
    env = service_env(os.environ.copy() | {"WEFT_LLM_BASE_URL": fake.base_url, "WEFT_LLM_API_KEY": "test",
                                           "WEFT_LLM_MODEL": "fake-model", "WEFT_LLM_TIMEOUT_S": "2"},
                      name="planner", port=port, database_url=infra.database_url, nats_url=infra.nats_url)
    proc = ServiceProcess("planner-llm", "services.planner", env, infra.root / "logs")
    proc.start()
    wait_http(port)
    try:
        yield fake
    finally:
        proc.stop()
        fake.stop()
        offline.start()
        wait_http(stack.ports["planner"])


GOOD_PLAN = {
    "name": "Weekly sales summary", "description": "Summarise sales and mail them", "confidence": 0.87,
    "schedule": "0 9 * * 1",
    "steps": [
        {"id": "s1", "action": "agent", "description": "Summarise", "input_from": None, "depends_on": [],
         "config": {"prompt": "Summarise ${inputs.sales}"}},
        {"id": "s2", "action": "email.send", "description": "Mail it", "input_from": "s1", "depends_on": [],
         "config": {"to": "team@example.com", "subject": "Sales", "body": "${input}"}},
    ],
}


async def test_llm_plans_are_recorded_cached_and_failures_are_clean(stack, tenant, pool, llm_planner):
    fake = llm_planner
    fake.script(Reply(json.dumps(GOOD_PLAN), prompt_tokens=321, completion_tokens=123, model="fake-model-1"))
    body = {"instruction": OUTBOUND_GOAL, "context": {"availableTools": ["agent", "email.send"]}}
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows/parse", json=body)
        assert r.status_code == 200, r.text
        wf = r.json()["workflow"]
        assert wf["source"] == "ai-generated" and wf["confidence"] == 0.87 and wf["name"] == "Weekly sales summary"
        assert wf["planner"]["model"] == "fake-model-1" and wf["planner"]["cached"] is False
        # The same request again: served from the cache, the model is not asked.
        again = (await c.post("/api/v2/workflows/parse", json=body)).json()["workflow"]
        assert len(fake.requests) == 1 and again["planner"]["cached"] is True and again["planHash"] == wf["planHash"]

        fake.script(Reply("{not json"), Reply("still not json"))
        r = await c.post("/api/v2/workflows/parse", json={**body, "instruction": OUTBOUND_GOAL + " please"})
        assert r.status_code == 422 and "JSON" in r.json()["error"]
        fake.script(Status(429), Status(429))
        r = await c.post("/api/v2/workflows/parse", json={**body, "instruction": OUTBOUND_GOAL + " now"})
        assert r.status_code == 503 and r.headers.get("retry-after")
    rows = await pool.fetch("SELECT type, data::text AS data FROM events WHERE tenant_id = $1 AND stream_id LIKE 'plan-%'"
                            " ORDER BY global_position", tenant)
    recorded = [(r["type"], json.loads(r["data"])) for r in rows]
    assert [t for t, _ in recorded] == ["PlanGenerated", "PlanGenerated", "PlanFailed", "PlanFailed"]
    first, cached = recorded[0][1], recorded[1][1]
    assert (first["model"], first["prompt_tokens"], first["completion_tokens"]) == ("fake-model-1", 321, 123)
    assert first["latency_ms"] > 0 and first["prompt_version"] and not first["cached"]
    assert cached["cached"] is True and cached["prompt_tokens"] == 0
    assert recorded[2][1]["defects"] and recorded[3][1]["reason"].startswith("The planning model is unavailable")
    # Rebuilding read models or reading history never asks the model again.
    assert len(fake.requests) == 1 + 2 + 2
