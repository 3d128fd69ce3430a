"""v2 approvals (services/gateway/core/approvals.py): the tenant's waiting steps, and decisions that count as
the signed-in user towards the step's N-of-M policy; every refusal in the v2 error shape."""

from __future__ import annotations

import uuid

import httpx

from libs.security.auth import issue_token
from tests.conftest import poll

API = "/api/v2/workflows"


def _as(stack, tenant: str, email: str | None) -> httpx.AsyncClient:
    token = issue_token(stack.settings, tenant, (email or "alice").split("@")[0], email=email)
    return httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=20)


async def _paused_run(c: httpx.AsyncClient, config: dict) -> tuple[str, str]:
    definition = {"nodes": [{"id": "gate", "type": "approval", "config": config},
                            {"id": "after", "type": "echo", "input_from": "gate"}]}
    r = await c.post(API, json={"name": f"wf-{uuid.uuid4().hex[:8]}", "definition": definition})
    wid = r.json()["workflow"]["id"]
    rid = (await c.post(f"{API}/{wid}/execute", json={})).json()["run"]["id"]
    await poll(lambda: c.get(f"{API}/approvals", params={"workflow_id": wid}), lambda r: r.json()["count"] == 1)
    return wid, rid


async def test_n_of_m_decisions_as_the_signed_in_user(stack, tenant):
    async with _as(stack, tenant, "ann@example.com") as ann, _as(stack, tenant, "bob@example.com") as bob, \
            _as(stack, tenant, None) as alice:
        wid, rid = await _paused_run(ann, {"title": "Pay?", "approvers": ["ann@example.com", "bob@example.com"],
                                           "required_approvals": 2, "rows": [{"amount": 5}]})
        listed = (await ann.get(f"{API}/approvals")).json()
        assert listed["count"] == 1 and listed["approvals"][0] | {"paused_at": None, "started_at": None} == {
            "run_id": rid, "workflow_id": wid, "workflow_name": listed["approvals"][0]["workflow_name"],
            "step_id": "gate", "title": "Pay?", "description": "", "total_rows": 1, "require_comment": False,
            "started_at": None, "paused_at": None}
        r = await alice.post(f"{API}/{wid}/runs/{rid}/approve", json={})
        assert r.status_code == 403 and r.json() == {"success": False, "error": "alice is not an approver of step gate"}
        r = await ann.post(f"{API}/{wid}/runs/{rid}/approve", json={"comment": "fine"},
                           headers={"Idempotency-Key": "a1"})
        assert r.status_code == 200 and r.json()["decision"] == {
            "run_id": rid, "step_id": "gate", "decision": "approve", "decided_by": "ann@example.com",
            "step_status": "awaiting_approval"}
        again = await ann.post(f"{API}/{wid}/runs/{rid}/approve", json={"comment": "fine"},
                               headers={"Idempotency-Key": "a1"})
        assert again.json() == r.json() and again.headers["idempotent-replayed"] == "true"
        r = await ann.post(f"{API}/{wid}/runs/{rid}/approve", json={})
        assert r.status_code == 409 and "already decided" in r.json()["error"]
        r = await bob.post(f"{API}/{wid}/runs/{rid}/approve")
        assert r.status_code == 200 and r.json()["decision"]["step_status"] == "completed"
        run = await poll(lambda: ann.get(f"{API}/{wid}/runs/{rid}"), lambda r: r.json()["run"]["status"] != "running")
        assert run.json()["run"]["status"] == "completed"
        r = await ann.post(f"{API}/{wid}/runs/{rid}/reject", json={})
        assert r.status_code == 409 and r.json()["error"] == "Run is not awaiting approval (it is completed)"
        assert (await ann.get(f"{API}/approvals")).json() == {"success": True, "approvals": [], "count": 0}


async def test_refusals_in_the_v2_shape(stack, tenant):
    async with _as(stack, tenant, "approver@localhost") as c, _as(stack, f"{tenant}x", "approver@localhost") as other:
        wid, rid = await _paused_run(c, {"require_comment": True})
        r = await c.post(f"{API}/{wid}/runs/{rid}/reject", json={})
        assert r.status_code == 400 and r.json()["error"] == "A comment is required to reject this step"
        r = await c.post(f"{API}/{wid}/runs/{rid}/approve", json={"comment": "  "})  # requireComment: approve too
        assert r.status_code == 400 and r.json()["error"] == "A comment is required to approve this step"
        r = await c.post(f"{API}/{wid}/runs/{rid}/approve", json={"step_id": "after"})
        assert r.status_code == 409 and r.json() == {"success": False, "error": "Step after is not awaiting approval",
                                                     "field": "step_id"}
        r = await c.post(f"{API}/{wid}/runs/{rid}/approve", json={"comment": "x" * 2001})
        assert r.status_code == 400 and r.json()["field"] == "comment"
        r = await c.post(f"{API}/{wid}/runs/{rid}/approve", json={"verdict": "yes"})
        assert r.status_code == 400 and r.json()["success"] is False
        r = await c.post(f"{API}/{wid}/runs/{uuid.uuid4()}/approve")
        assert r.status_code == 404 and r.json() == {"success": False, "error": "Run not found"}
        r = await c.post(f"{API}/{wid}/runs/not-a-uuid/approve")
        assert r.status_code == 404 and r.json()["success"] is False
        assert (await other.get(f"{API}/approvals")).json()["count"] == 0  # another tenant sees none of them
        r = await other.post(f"{API}/{wid}/runs/{rid}/approve")
        assert r.status_code == 404
        r = await c.get(f"{API}/approvals", params={"limit": 0})
        assert r.status_code == 400 and r.json()["success"] is False
        r = await c.post(f"{API}/{wid}/runs/{rid}/reject", json={"comment": "not today"})
        assert r.status_code == 200 and r.json()["decision"]["step_status"] == "failed"


async def test_parallel_approval_steps_are_listed_and_paged_one_by_one(stack, tenant):
    async with _as(stack, tenant, "approver@localhost") as c:
        definition = {"nodes": [{"id": "legal", "type": "approval", "config": {"title": "Legal"}},
                                {"id": "money", "type": "approval", "config": {"title": "Money"}}]}
        r = await c.post(API, json={"name": "two gates", "definition": definition})
        wid = r.json()["workflow"]["id"]
        rid = (await c.post(f"{API}/{wid}/execute", json={})).json()["run"]["id"]
        await poll(lambda: c.get(f"{API}/approvals"), lambda r: r.json()["count"] == 2)
        pages = [(await c.get(f"{API}/approvals", params={"limit": 1, "offset": n})).json() for n in (0, 1, 2)]
        assert [p["count"] for p in pages] == [2, 2, 2]
        assert sorted(a["step_id"] for p in pages for a in p["approvals"]) == ["legal", "money"]
        assert pages[2]["approvals"] == []
        r = await c.post(f"{API}/{wid}/runs/{rid}/approve", json={"step_id": "money"})
        assert r.status_code == 200 and r.json()["decision"]["step_id"] == "money"
        left = (await c.get(f"{API}/approvals", params={"workflow_id": wid})).json()
        assert [a["step_id"] for a in left["approvals"]] == ["legal"] and left["count"] == 1
