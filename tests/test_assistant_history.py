"""Contract A's history, quick actions and feedback against real processes, with A's shapes and the
401/400/403/404 cases (another user's and another tenant's ids)."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import poll

BUILD = "Record that the nightly build passed"
RELEASE = "Record that the release notes were published"
ITEM_KEYS = {"id", "user_id", "workflow_id", "command", "status", "executed_at", "created_at"}


async def _run(c: httpx.AsyncClient, command: str, **extra) -> str:
    r = await c.post("/api/workflow/execute", json={"command": command, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    await poll(lambda: c.get(f"/api/v2/workflows/{body['workflowId']}/runs/{body['runId']}"),
               lambda resp: resp.json()["run"]["status"] == "completed")
    return body["workflowId"]


async def test_history_lists_filters_searches_and_paginates_per_user(stack, tenant):
    async with stack.client(tenant, "alice") as alice, stack.client(tenant, "bob") as bob, \
            httpx.AsyncClient(base_url=stack.base_url) as anon:
        first = await _run(alice, BUILD)
        second = await _run(alice, RELEASE)
        await _run(bob, BUILD)
        r = await alice.get("/api/history")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["pagination"] == {"limit": 20, "offset": 0, "total": 2, "hasMore": False}
        assert [h["workflow_id"] for h in body["history"]] == [second, first]  # newest first
        assert all(set(h) == ITEM_KEYS and h["status"] == "completed" and h["user_id"] == "alice"
                   for h in body["history"])
        page = (await alice.get("/api/history", params={"limit": 1, "offset": 1})).json()
        assert [h["workflow_id"] for h in page["history"]] == [first]
        assert page["pagination"] == {"limit": 1, "offset": 1, "total": 2, "hasMore": False}
        assert (await alice.get("/api/history", params={"limit": 1})).json()["pagination"]["hasMore"] is True
        assert (await alice.get("/api/history", params={"status": "success"})).json()["pagination"]["total"] == 2
        assert (await alice.get("/api/history", params={"status": "failed"})).json()["history"] == []
        # Full-text: "publish" finds "published", "build" finds only the first command.
        found = (await alice.get("/api/history", params={"search": "publish"})).json()["history"]
        assert [h["workflow_id"] for h in found] == [second]
        found = (await alice.get("/api/history", params={"search": "nightly build"})).json()["history"]
        assert [h["workflow_id"] for h in found] == [first]
        created = body["history"][1]["created_at"]
        since = (await alice.get("/api/history", params={"startDate": created})).json()["pagination"]["total"]
        assert since == 2
        assert (await alice.get("/api/history", params={"endDate": "2000-01-01T00:00:00Z"})).json()["history"] == []
        for params, field in (({"status": "done"}, "status"), ({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
                              ({"offset": -1}, "offset"), ({"startDate": "yesterday"}, "startDate"),
                              ({"startDate": "2030-01-02T00:00:00Z", "endDate": "2030-01-01T00:00:00Z"}, "startDate")):
            r = await alice.get("/api/history", params=params)
            assert r.status_code == 400 and r.json()["error"] == "Bad Request", (params, r.text)
            assert field in r.text, (params, r.text)
        assert (await bob.get("/api/history")).json()["pagination"]["total"] == 1
        r = await anon.get("/api/history")
        assert r.status_code == 401 and set(r.json()) == {"error", "message"}


async def test_history_detail_rerun_and_feedback(stack, tenant):
    async with stack.client(tenant, "alice") as alice, stack.client(tenant, "bob") as bob, \
            stack.client(f"o{tenant}", "alice") as stranger, httpx.AsyncClient(base_url=stack.base_url) as anon:
        wid = await _run(alice, BUILD)
        r = await alice.get(f"/api/history/{wid}")
        assert r.status_code == 200, r.text
        w = r.json()["workflow"]
        assert set(w) >= {"id", "user_id", "command", "status", "steps", "results", "start_time", "end_time",
                          "created_at", "feedback"}
        assert (w["id"], w["command"], w["status"], w["user_id"]) == (wid, BUILD, "completed", "alice")
        assert [(s["id"], s["status"]) for s in w["steps"]] == [("step_1", "completed")]
        assert w["results"] == [{"id": "step_1", "stepId": "step_1", "output": {"goal": BUILD}}]
        assert w["start_time"] <= w["end_time"] and w["feedback"] == []
        for client, status in ((bob, 403), (stranger, 404)):
            r = await client.get(f"/api/history/{wid}")
            assert r.status_code == status and set(r.json()) >= {"error", "message"}, r.text
        assert (await alice.get(f"/api/history/{uuid.uuid4()}")).status_code == 404
        assert (await alice.get("/api/history/not-an-id")).json() == {"error": "Not Found",
                                                                      "message": "History entry not found"}
        assert (await anon.get(f"/api/history/{wid}")).status_code == 401

        # Feedback: bound to a result of a workflow the caller owns, shown in the detail.
        good = {"workflowId": wid, "resultId": "step_1", "rating": "positive", "comment": "Great summary!"}
        r = await alice.post("/api/feedback", json=good)
        assert r.status_code == 200 and r.json() == {"success": True, "message": "Feedback recorded successfully"}
        assert (await alice.post("/api/feedback", json={"workflowId": wid, "rating": "negative"})).status_code == 200
        fb = (await alice.get(f"/api/history/{wid}")).json()["workflow"]["feedback"]
        assert [(f["resultId"], f["rating"], f["comment"]) for f in fb] == [("step_1", "positive", "Great summary!"),
                                                                            (None, "negative", None)]
        for body, status, field in (({**good, "rating": "meh"}, 400, "rating"), ({**good, "resultId": "x"}, 404, "resultId"),
                                    ({"workflowId": wid}, 400, "rating"), ({**good, "extra": 1}, 400, "extra"),
                                    ({**good, "workflowId": "nope"}, 404, "workflowId")):
            r = await alice.post("/api/feedback", json=body)
            assert r.status_code == status and r.json()["field"] == field, (body, r.text)
        assert (await bob.post("/api/feedback", json=good)).status_code == 403
        assert (await stranger.post("/api/feedback", json=good)).status_code == 404
        assert (await anon.post("/api/feedback", json=good)).status_code == 401

        # Rerun: the same command, planned again as a new workflow that runs.
        r = await alice.post("/api/history/rerun", json={"workflowId": wid})
        assert r.status_code == 200, r.text
        again = r.json()
        assert again["success"] is True and again["workflowId"] != wid and again["steps"][0]["action"] == "transform"
        assert again["message"] == "Workflow rerun initiated successfully"
        await poll(lambda: alice.get(f"/api/history/{again['workflowId']}"),
                   lambda resp: resp.json()["workflow"]["status"] == "completed")
        assert (await alice.get("/api/history")).json()["pagination"]["total"] == 2
        assert (await bob.post("/api/history/rerun", json={"workflowId": wid})).status_code == 403
        assert (await stranger.post("/api/history/rerun", json={"workflowId": wid})).status_code == 404
        assert (await alice.post("/api/history/rerun", json={})).status_code == 400
        assert (await alice.post("/api/history/rerun", json={"workflowId": "x"})).status_code == 404
        assert (await anon.post("/api/history/rerun", json={"workflowId": wid})).status_code == 401


async def test_quick_actions_favorites_and_usage(stack, tenant):
    async with stack.client(tenant, "alice") as alice, stack.client(tenant, "bob") as bob, \
            stack.client(f"o{tenant}", "carol") as stranger, httpx.AsyncClient(base_url=stack.base_url) as anon:
        r = await alice.get("/api/quick-actions")
        assert r.status_code == 200, r.text
        send = next(a for a in r.json()["actions"] if a["id"] == "send-email")
        assert send == {"id": "send-email", "title": "Send Email", "description": "Compose and send an email",
                        "template": "Send an email to {recipient} about {topic}", "icon": "mail", "category": "email",
                        "isFavorite": False, "usageCount": 0}
        # usageCount counts the caller's commands started from the action.
        await _run(alice, BUILD, actionId="create-doc")
        await _run(alice, RELEASE, actionId="create-doc")
        await _run(bob, BUILD, actionId="create-doc")
        counts = {a["id"]: a["usageCount"] for a in (await alice.get("/api/quick-actions")).json()["actions"]}
        assert counts["create-doc"] == 2 and counts["send-email"] == 0
        r = await alice.post("/api/workflow/execute", json={"command": BUILD, "actionId": "no-such-action"})
        assert r.status_code == 404 and r.json()["field"] == "actionId"

        # Tenant-defined actions: visible in the tenant only.
        for i in range(20):
            r = await alice.post("/api/quick-actions", json={"id": f"mine-{i}", "title": f"Mine {i}",
                                                             "template": "Record that {thing} happened",
                                                             "icon": "star", "category": "custom"})
            assert r.status_code == 201, r.text
        assert (await alice.post("/api/quick-actions", json={"id": "mine-0", "title": "x", "template": "Record it again",
                                                             "icon": "s", "category": "c"})).status_code == 409
        assert (await alice.post("/api/quick-actions", json={"id": "send-email", "title": "x", "icon": "s",
                                                             "template": "Record it again", "category": "c"})).status_code == 409
        assert (await alice.post("/api/quick-actions", json={"id": "Bad Id", "title": "x", "icon": "s",
                                                             "template": "Record it again", "category": "c"})).status_code == 400
        ids = [a["id"] for a in (await bob.get("/api/quick-actions")).json()["actions"]]
        assert "mine-19" in ids
        assert "mine-0" not in [a["id"] for a in (await stranger.get("/api/quick-actions")).json()["actions"]]

        # Favorites: at most 20, the oldest dropped when a 21st is added.
        added = []
        for action_id in ["send-email", *(f"mine-{i}" for i in range(20))]:
            r = await alice.post("/api/quick-actions/favorite", json={"actionId": action_id, "isFavorite": True})
            assert r.status_code == 200, r.text
            added.append(action_id)
        favorites = r.json()
        assert favorites["success"] is True and favorites["favoriteActions"] == added[1:]
        listed = {a["id"]: a["isFavorite"] for a in (await alice.get("/api/quick-actions")).json()["actions"]}
        assert listed["send-email"] is False and listed["mine-0"] is True
        r = await alice.post("/api/quick-actions/favorite", json={"actionId": "mine-0", "isFavorite": False})
        assert r.json()["favoriteActions"] == added[2:]
        assert (await bob.get("/api/quick-actions")).json()["actions"][4]["isFavorite"] is False
        r = await alice.post("/api/quick-actions/favorite", json={"actionId": "mine-0", "isFavorite": "yes"})
        assert r.status_code == 400 and r.json()["error"] == "Bad Request"
        r = await stranger.post("/api/quick-actions/favorite", json={"actionId": "mine-1", "isFavorite": True})
        assert r.status_code == 404 and r.json()["field"] == "actionId"
        assert (await anon.get("/api/quick-actions")).status_code == 401
        assert (await anon.post("/api/quick-actions/favorite", json={"actionId": "x", "isFavorite": True})).status_code == 401
