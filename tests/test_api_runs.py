"""Run control on every surface against the real stack: v2 terminate, schema, input checks and `?at_version`,
the executions API (C), console run/stop (B) and assistant cancel (A)."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import poll

CHAIN = {
    "nodes": [
        {"id": "a", "type": "transform", "config": {"template": {"x": "${inputs.x}"}}},
        {"id": "b", "type": "echo", "input_from": "a"},
    ],
    "inputs": {"type": "object", "properties": {"x": {"type": "integer", "default": 7}}, "required": ["x"]},
}
# A run that stays active long enough to cancel or terminate it.
DELAYED = {"nodes": [{"id": "d", "type": "delay", "config": {"seconds": 30}},
                     {"id": "e", "type": "echo", "input_from": "d"}]}


async def _create(client: httpx.AsyncClient, definition: dict) -> str:
    r = await client.post("/api/v2/workflows", json={"name": f"wf-{uuid.uuid4().hex[:8]}", "definition": definition})
    assert r.status_code == 201, r.text
    return r.json()["workflow"]["id"]


async def _execute(client: httpx.AsyncClient, wid: str, inputs: dict | None = None) -> str:
    r = await client.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": inputs or {}})
    assert r.status_code == 201, r.text
    return r.json()["run"]["id"]


async def _v2_run(client: httpx.AsyncClient, wid: str, rid: str, until, timeout: float = 20) -> dict:
    async def fetch():
        return (await client.get(f"/api/v2/workflows/{wid}/runs/{rid}")).json()["run"]

    return await poll(fetch, until, timeout=timeout)


async def _until_step_active(client: httpx.AsyncClient, rid: str) -> dict:
    """Wait until the delay step has started (so a cancel meets a run mid-step), via the C view."""
    async def fetch():
        return (await client.get(f"/api/workflows/execute/{rid}")).json()["data"]

    return await poll(fetch, lambda d: d["nodeStates"]["d"]["state"] != "PENDING" or d["state"] not in
                      ("PENDING", "RUNNING"), timeout=15)


# ---- v2 -----------------------------------------------------------------------------------------------------


async def test_schema_is_the_definitions_inputs_and_outputs(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, {**CHAIN, "outputs": {"type": "object", "properties": {"x": {"type": "integer"}}}})
        bare = await _create(c, {"nodes": [{"id": "n", "type": "echo"}]})
        r = await c.get(f"/api/v2/workflows/{wid}/schema")
        assert r.status_code == 200
        assert r.json() == {"success": True, "schema": {
            "inputs": CHAIN["inputs"], "outputs": {"type": "object", "properties": {"x": {"type": "integer"}}}}}
        empty = {"type": "object", "properties": {}}
        assert (await c.get(f"/api/v2/workflows/{bare}/schema")).json()["schema"] == {"inputs": empty, "outputs": empty}
        assert (await c.get(f"/api/v2/workflows/{uuid.uuid4()}/schema")).status_code == 404
    async with stack.client(f"{tenant}x") as other:
        assert (await other.get(f"/api/v2/workflows/{wid}/schema")).status_code == 404


async def test_execute_fills_input_defaults_before_validating(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, CHAIN)
        rid = await _execute(c, wid, {})
        done = await _v2_run(c, wid, rid, lambda run: run["status"] in ("completed", "failed"))
        assert done["status"] == "completed", done
        assert done["inputs"] == {"x": 7} and done["outputs"] == {"x": 7}


async def test_execute_rejects_inputs_that_break_the_schema_naming_the_field(stack, tenant):
    schema = {"type": "object", "required": ["recipients"], "properties": {
        "date_range": {"type": "string", "default": "LAST_WEEK"},
        "recipients": {"type": "array", "items": {"type": "string"}}}}
    async with stack.client(tenant) as c:
        wid = await _create(c, CHAIN)
        r = await c.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": {"x": "seven"}})
        assert r.status_code == 400 and r.json()["success"] is False
        assert r.json()["field"] == "inputs.x" and "integer" in r.json()["error"]
        strict = await _create(c, {"nodes": [{"id": "n", "type": "echo"}], "inputs": schema})
        r = await c.post(f"/api/v2/workflows/{strict}/execute", json={})
        assert r.status_code == 400 and r.json()["field"] == "inputs.recipients", r.text
        assert r.json()["error"] == "inputs.recipients is required"
        r = await c.post(f"/api/v2/workflows/{strict}/execute", json={"inputs": {"recipients": ["a@b.c", 5]}})
        assert r.status_code == 400 and r.json()["field"] == "inputs.recipients[1]", r.text
        # A `$ref` the gateway cannot resolve locally is the definition's fault: 400, never a fetch or a 500.
        remote = await _create(c, {"nodes": [{"id": "n", "type": "echo"}], "inputs": {
            "type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/schema.json"}}}})
        r = await c.post(f"/api/v2/workflows/{remote}/execute", json={"inputs": {"a": 1}})
        assert r.status_code == 400 and r.json()["field"] == "definition.inputs", r.text
        # Nothing was started by the refused requests.
        assert (await c.get(f"/api/v2/workflows/{strict}/runs")).json()["count"] == 0


async def test_run_at_version_is_the_fold_of_its_first_n_events(stack, tenant, store):
    async with stack.client(tenant) as c:
        wid = await _create(c, CHAIN)
        rid = await _execute(c, wid, {"x": 3})
        done = await _v2_run(c, wid, rid, lambda run: run["status"] in ("completed", "failed"))
        last = len(await store.read_stream(tenant, f"run-{rid}"))
        assert last >= 6  # created, started, a started/completed, b started/completed, completed

        first = (await c.get(f"/api/v2/workflows/{wid}/runs/{rid}", params={"at_version": 1})).json()["run"]
        assert first["version"] == 1 and first["status"] == "running"  # canonical pending, v2's word "running"
        assert first["outputs"] is None and first["finished_at"] is None and first["inputs"] == {"x": 3}

        final = (await c.get(f"/api/v2/workflows/{wid}/runs/{rid}", params={"at_version": last})).json()["run"]
        assert final == {**done, "version": last}  # the fold agrees with the read model
        assert final["status"] == "completed" and final["outputs"] == {"x": 3}

        for past_the_end in (last + 50, 10**15):
            beyond = (await c.get(f"/api/v2/workflows/{wid}/runs/{rid}", params={"at_version": past_the_end})).json()
            assert beyond["run"]["version"] == last and beyond["run"]["status"] == "completed", beyond

        for bad in ("0", "-1", "abc", "1.5"):
            r = await c.get(f"/api/v2/workflows/{wid}/runs/{rid}", params={"at_version": bad})
            assert r.status_code == 400 and r.json()["field"] == "at_version", (bad, r.text)
        other_wf = await _create(c, CHAIN)
        for path in (f"/api/v2/workflows/{other_wf}/runs/{rid}", f"/api/v2/workflows/{wid}/runs/{uuid.uuid4()}"):
            assert (await c.get(path, params={"at_version": 1})).status_code == 404
    async with stack.client(f"{tenant}x") as other:
        assert (await other.get(f"/api/v2/workflows/{wid}/runs/{rid}", params={"at_version": 1})).status_code == 404


async def test_terminating_a_finished_or_unknown_run_is_refused(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, CHAIN)
        rid = await _execute(c, wid)
        await _v2_run(c, wid, rid, lambda run: run["status"] == "completed")
        r = await c.delete(f"/api/v2/workflows/{wid}/runs/{rid}")
        assert r.status_code == 400 and r.json()["success"] is False and "completed" in r.json()["error"]
        assert (await c.delete(f"/api/v2/workflows/{wid}/runs/{uuid.uuid4()}")).status_code == 404
    async with stack.client(f"{tenant}x") as other:
        assert (await other.delete(f"/api/v2/workflows/{wid}/runs/{rid}")).status_code == 404


async def test_terminate_stops_a_running_run_now(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, DELAYED)
        rid = await _execute(c, wid)
        await _until_step_active(c, rid)
        r = await c.delete(f"/api/v2/workflows/{wid}/runs/{rid}")
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True, "message": "Workflow run terminated successfully"}
        run = await _v2_run(c, wid, rid, lambda run: run["status"] != "running", timeout=10)
        assert run["status"] == "terminated" and run["error"] == "Terminated by user"
        assert (await c.delete(f"/api/v2/workflows/{wid}/runs/{rid}")).status_code == 400


# ---- executions (C) -----------------------------------------------------------------------------------------


async def test_execution_round_trip_with_node_states_logs_and_output(stack, tenant):
    async with stack.client(tenant, user="carol") as c:
        wid = await _create(c, CHAIN)
        r = await c.post(f"/api/workflows/execute/{wid}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and body["message"] == "Workflow execution initiated successfully"
        assert body["data"]["workflowId"] == wid
        eid = body["data"]["executionId"]

        # GET /api/workflows/execute/<id> is the executions API, not the console's GET /api/workflows/<id>.
        async def fetch():
            resp = await c.get(f"/api/workflows/execute/{eid}")
            assert resp.status_code == 200, resp.text
            return resp.json()

        done = await poll(fetch, lambda b: b["data"]["state"] in ("COMPLETED", "FAILED"))
        data = done["success"] is True and done["data"]
        assert data["state"] == "COMPLETED", data
        assert (data["id"], data["workflowId"], data["startedBy"]) == (eid, wid, "carol")
        assert data["output"] == {"x": 7} and data["error"] is None and data["variables"] == {}
        assert data["startedAt"].endswith("Z") and data["completedAt"].endswith("Z")
        assert set(data["nodeStates"]) == {"a", "b"}
        a = data["nodeStates"]["a"]
        assert a["state"] == "COMPLETED" and a["output"] == {"x": 7} and a["error"] is None
        assert a["startedAt"] <= a["completedAt"]
        assert [(log["nodeId"], log["message"], log["level"]) for log in data["logs"]] == [
            ("a", "Step started (attempt 1)", "info"), ("a", "Step completed", "info"),
            ("b", "Step started (attempt 1)", "info"), ("b", "Step completed", "info")]
        # The console's route next door still answers for workflow ids.
        console = (await c.get(f"/api/workflows/{wid}")).json()
        assert console["id"] == wid and "workflowSteps" in console


async def test_executions_are_private_to_their_starter_and_invisible_to_other_tenants(stack, tenant):
    async with stack.client(tenant, user="alice") as alice:
        wid = await _create(alice, CHAIN)
        started = await alice.post(f"/api/workflows/execute/{wid}", json={"inputs": {"x": 1}})
        eid = started.json()["data"]["executionId"]
    async with stack.client(tenant, user="bob") as bob:
        for r in (await bob.get(f"/api/workflows/execute/{eid}"), await bob.delete(f"/api/workflows/execute/{eid}")):
            assert r.status_code == 403 and r.json()["success"] is False and r.json()["error"], r.text
    async with stack.client(f"{tenant}x", user="alice") as stranger:
        for r in (await stranger.get(f"/api/workflows/execute/{eid}"),
                  await stranger.delete(f"/api/workflows/execute/{eid}"),
                  await stranger.post(f"/api/workflows/execute/{wid}")):
            assert r.status_code == 404 and r.json() == {"success": False, "error": r.json()["error"]}, r.text
    async with stack.client(tenant, user="alice") as alice:
        assert (await alice.get(f"/api/workflows/execute/{uuid.uuid4()}")).status_code == 404
        assert (await alice.get("/api/workflows/execute/not-a-uuid")).status_code == 404
        r = await alice.post(f"/api/workflows/execute/{wid}", json={"inputs": {"x": "one"}})
        assert r.status_code == 400 and r.json()["success"] is False and r.json()["field"] == "inputs.x"


async def test_cancel_execution(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, DELAYED)
        eid = (await c.post(f"/api/workflows/execute/{wid}")).json()["data"]["executionId"]
        await _until_step_active(c, eid)
        r = await c.delete(f"/api/workflows/execute/{eid}")
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True, "message": f"Execution {eid} canceled"}
        # Cancel lets the running step finish, so allow for the whole delay.
        data = await poll(lambda: c.get(f"/api/workflows/execute/{eid}"),
                          lambda resp: resp.json()["data"]["state"] not in ("PENDING", "RUNNING"), timeout=45)
        data = data.json()["data"]
        assert data["state"] == "CANCELED" and data["completedAt"] is not None
        assert data["nodeStates"]["e"]["state"] == "PENDING"  # nothing new started after the cancel
        # Whatever the surface that cancelled it, the console shows a cancelled run as failed, "Stopped by user".
        console_run = (await c.get(f"/api/workflows/{wid}")).json()["workflowRuns"][0]
        assert (console_run["status"], console_run["error"]) == ("failed", "Stopped by user")
        r = await c.delete(f"/api/workflows/execute/{eid}")
        assert r.status_code == 400 and r.json()["success"] is False


async def test_cancelling_a_finished_execution_is_400(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, CHAIN)
        eid = (await c.post(f"/api/workflows/execute/{wid}")).json()["data"]["executionId"]
        await poll(lambda: c.get(f"/api/workflows/execute/{eid}"),
                   lambda resp: resp.json()["data"]["state"] == "COMPLETED")
        r = await c.delete(f"/api/workflows/execute/{eid}")
        assert r.status_code == 400 and r.json()["success"] is False and "COMPLETED" in r.json()["error"]


# ---- console (B) --------------------------------------------------------------------------------------------


async def test_console_run_answers_with_the_run_number(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, CHAIN)
        r = await c.post(f"/api/workflows/{wid}/run")
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["runId"] == 1 and body["message"] == "Workflow run started"
        rid = str(uuid.UUID(body["conversationId"]))
        await _v2_run(c, wid, rid, lambda run: run["status"] == "completed")
        runs = (await c.get(f"/api/workflows/{wid}")).json()["workflowRuns"]
        assert [(run["runNumber"], run["id"], run["status"]) for run in runs] == [(1, rid, "completed")]
        r = await c.post(f"/api/workflows/{wid}/runs/1/stop")
        assert r.status_code == 400 and set(r.json()) == {"error", "message"}
        for missing in ("2", str(uuid.uuid4()), "nope"):
            r = await c.post(f"/api/workflows/{wid}/runs/{missing}/stop")
            assert r.status_code == 404 and set(r.json()) == {"error", "message"}, r.text


async def test_console_run_needs_an_active_workflow(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, CHAIN)
        assert (await c.patch(f"/api/v2/workflows/{wid}", json={"status": "archived"})).status_code == 200
        r = await c.post(f"/api/workflows/{wid}/run")
        assert r.status_code == 422 and set(r.json()) >= {"error", "message"} and "archived" in r.json()["message"]
        r = await c.post(f"/api/workflows/execute/{wid}")  # the executions API says so in its own shape and status
        assert r.status_code == 400 and r.json()["success"] is False and "archived" in r.json()["error"]
        assert (await c.post(f"/api/workflows/{uuid.uuid4()}/run")).status_code == 404


async def test_console_one_run_at_a_time_and_stop_shows_failed_stopped_by_user(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, DELAYED)
        first = await c.post(f"/api/workflows/{wid}/run")
        assert first.status_code == 201, first.text
        rid = first.json()["conversationId"]
        r = await c.post(f"/api/workflows/{wid}/run")
        assert r.status_code == 409 and set(r.json()) >= {"error", "message"}, r.text
        r = await c.post(f"/api/workflows/{wid}/runs/{first.json()['runId']}/stop")
        assert r.status_code == 200, r.text
        assert r.json() == {"message": "Run stopped", "runId": 1, "status": "failed", "error": "Stopped by user"}
        await _v2_run(c, wid, rid, lambda run: run["status"] == "terminated", timeout=10)
        runs = (await c.get(f"/api/workflows/{wid}")).json()["workflowRuns"]
        assert (runs[0]["status"], runs[0]["error"]) == ("failed", "Stopped by user")
        latest = next(w for w in (await c.get("/api/workflows")).json() if w["id"] == wid)["latestRun"]
        assert (latest["status"], latest["error"]) == ("failed", "Stopped by user")
        # With the first run over, the next may start; stop it by its uuid this time.
        second = await c.post(f"/api/workflows/{wid}/run")
        assert second.status_code == 201 and second.json()["runId"] == 2, second.text
        r = await c.post(f"/api/workflows/{wid}/runs/{second.json()['conversationId']}/stop")
        assert r.status_code == 200 and r.json()["runId"] == 2, r.text


# ---- assistant (A) ------------------------------------------------------------------------------------------


async def test_assistant_cancel_with_nothing_running_or_no_such_workflow(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, CHAIN)
        r = await c.post("/api/workflow/cancel", json={"workflowId": wid})
        assert r.status_code == 200, r.text
        assert r.json()["success"] is True and r.json()["message"] == "No active run to cancel"
        assert isinstance(r.json()["responseTime"], int)
        for missing in (str(uuid.uuid4()), "nope"):
            r = await c.post("/api/workflow/cancel", json={"workflowId": missing})
            assert r.status_code == 404 and set(r.json()) >= {"error", "message"}, r.text
        r = await c.post("/api/workflow/cancel", json={})
        assert r.status_code == 400 and r.json()["field"] == "workflowId"
    async with stack.client(tenant, user="mallory") as other:
        r = await other.post("/api/workflow/cancel", json={"workflowId": wid})
        assert r.status_code == 403 and set(r.json()) >= {"error", "message"}
    async with stack.client(f"{tenant}x") as stranger:
        assert (await stranger.post("/api/workflow/cancel", json={"workflowId": wid})).status_code == 404


async def test_assistant_cancel_stops_the_active_run(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, DELAYED)
        rid = await _execute(c, wid)
        await _until_step_active(c, rid)
        r = await c.post("/api/workflow/cancel", json={"workflowId": wid})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and body["message"] == "Workflow cancelled successfully"
        assert isinstance(body["responseTime"], int) and body["responseTime"] >= 0
        run = await _v2_run(c, wid, rid, lambda run: run["status"] != "running", timeout=45)
        assert run["status"] == "terminated"
