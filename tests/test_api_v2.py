"""The v2 contract (spec E) against real gateway, planner, executor and relay processes."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest

from tests.conftest import poll

CHAIN = {
    "nodes": [
        {"id": "step_1", "type": "transform", "config": {"template": {"greeting": "Hello ${inputs.name}", "n": "${inputs.n}"}}},
        {"id": "step_2", "type": "echo", "input_from": "step_1"},
    ],
    "inputs": {},
    "outputs": {},
}


def _name() -> str:
    return f"wf-{uuid.uuid4().hex[:8]}"


async def _create(client: httpx.AsyncClient, name: str | None = None, definition=CHAIN, **extra) -> dict:
    r = await client.post("/api/v2/workflows", json={"name": name or _name(), "definition": definition, **extra})
    assert r.status_code == 201, r.text
    return r.json()["workflow"]


async def _run_until_done(client: httpx.AsyncClient, wid: str, inputs: dict) -> dict:
    r = await client.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": inputs})
    assert r.status_code == 201, r.text
    run = r.json()["run"]

    async def fetch():
        return (await client.get(f"/api/v2/workflows/{wid}/runs/{run['id']}")).json()["run"]

    return await poll(fetch, lambda run: run["status"] in ("completed", "failed"), timeout=20)


async def test_health_is_public(stack):
    async with httpx.AsyncClient(base_url=stack.base_url) as c:
        body = (await c.get("/api/v2/workflows/health")).json()
    assert body["status"] == "ok" and body["service"] == "workflows-api-v2" and body["version"] == "2.0.0"
    assert body["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
    ],
)
async def test_requests_without_a_valid_token_get_401(stack, header):
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers) as c:
        r = await c.get("/api/v2/workflows")
    assert r.status_code == 401 and r.json()["success"] is False


@pytest.mark.parametrize(
    "claims_change",
    [
        {"exp": int(time.time()) - 10},
        {"aud": "someone-else"},
        {"iss": "evil-issuer"},
        {"customer_id": "bad.tenant"},
    ],
)
async def test_tokens_with_bad_claims_get_401(stack, claims_change):
    s = stack.settings
    claims = {"iss": s.jwt_issuer, "aud": s.jwt_audience, "sub": "u", "customer_id": "acme",
              "exp": int(time.time()) + 60} | claims_change
    token = jwt.encode(claims, s.jwt_secret, algorithm="HS256")
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}) as c:
        r = await c.get("/api/v2/workflows")
    assert r.status_code == 401


async def test_token_signed_with_another_key_gets_401(stack):
    token = jwt.encode({"iss": stack.settings.jwt_issuer, "aud": stack.settings.jwt_audience, "sub": "u",
                        "customer_id": "acme", "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256")
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert (await c.get("/api/v2/workflows")).status_code == 401


async def test_workflow_crud_round_trip(stack, tenant):
    async with stack.client(tenant) as c:
        name = _name()
        created = await _create(c, name, description="greets people", version="1.2.0")
        assert created["name"] == name and created["customer_id"] == tenant and created["status"] == "active"
        assert created["definition"] == CHAIN and created["version"] == "1.2.0" and created["created_by"] == "alice"
        # Read-your-writes: the 201 means it is committed and readable at once.
        got = (await c.get(f"/api/v2/workflows/{created['id']}")).json()
        assert got == {"success": True, "workflow": created}

        r = await c.patch(f"/api/v2/workflows/{created['id']}", json={"name": name + "-v2", "status": "archived"})
        assert r.status_code == 200, r.text
        patched = r.json()["workflow"]
        assert patched["name"] == name + "-v2" and patched["status"] == "archived"
        assert patched["description"] == "greets people" and patched["updated_at"] >= created["updated_at"]

        listing = (await c.get("/api/v2/workflows", params={"status": "archived"})).json()
        assert [w["id"] for w in listing["workflows"]] == [created["id"]] and listing["count"] == 1
        assert "definition" not in listing["workflows"][0]
        assert (await c.get("/api/v2/workflows", params={"status": "active"})).json()["count"] == 0

        r = await c.delete(f"/api/v2/workflows/{created['id']}")
        assert r.status_code == 200 and r.json() == {"success": True, "message": "Workflow deleted successfully"}
        assert (await c.get(f"/api/v2/workflows/{created['id']}")).status_code == 404
        assert (await c.delete(f"/api/v2/workflows/{created['id']}")).status_code == 404


async def test_list_is_newest_first_with_limit_offset_and_count(stack, tenant):
    async with stack.client(tenant) as c:
        ids = [(await _create(c))["id"] for _ in range(3)]
        body = (await c.get("/api/v2/workflows", params={"limit": 2})).json()
        assert [w["id"] for w in body["workflows"]] == ids[::-1][:2] and body["count"] == 3
        body = (await c.get("/api/v2/workflows", params={"limit": 2, "offset": 2})).json()
        assert [w["id"] for w in body["workflows"]] == [ids[0]]


async def test_duplicate_name_within_a_tenant_is_409_but_other_tenants_may_reuse_it(stack, tenant):
    name = _name()
    async with stack.client(tenant) as c:
        first = await _create(c, name)
        r = await c.post("/api/v2/workflows", json={"name": name, "definition": CHAIN})
        assert r.status_code == 409 and r.json()["success"] is False and name in r.json()["error"]
        other = await _create(c)
        r = await c.patch(f"/api/v2/workflows/{other['id']}", json={"name": name})
        assert r.status_code == 409
        assert (await c.get("/api/v2/workflows")).json()["count"] == 2
        # Deleting frees the name.
        await c.delete(f"/api/v2/workflows/{first['id']}")
        await _create(c, name)
    async with stack.client(f"{tenant}b") as c:
        await _create(c, name)


async def test_another_tenants_ids_are_404(stack, tenant):
    async with stack.client(tenant) as owner:
        wf = await _create(owner)
        run = await _run_until_done(owner, wf["id"], {"name": "A", "n": 1})
    async with stack.client(f"{tenant}x", user="mallory") as other:
        wid, rid = wf["id"], run["id"]
        assert (await other.get(f"/api/v2/workflows/{wid}")).status_code == 404
        assert (await other.patch(f"/api/v2/workflows/{wid}", json={"name": "stolen"})).status_code == 404
        assert (await other.delete(f"/api/v2/workflows/{wid}")).status_code == 404
        assert (await other.post(f"/api/v2/workflows/{wid}/execute", json={})).status_code == 404
        assert (await other.get(f"/api/v2/workflows/{wid}/runs")).status_code == 404
        assert (await other.get(f"/api/v2/workflows/{wid}/runs/{rid}")).status_code == 404
        assert (await other.get("/api/v2/workflows")).json()["count"] == 0
    async with stack.client(tenant) as owner:
        assert (await owner.get(f"/api/v2/workflows/{wid}")).json()["workflow"]["name"] == wf["name"]


async def test_run_goes_pending_running_completed_with_outputs(stack, tenant, pool):
    async with stack.client(tenant) as c:
        wf = await _create(c)
        r = await c.post(f"/api/v2/workflows/{wf['id']}/execute", json={"inputs": {"name": "Ada", "n": 3}})
        assert r.status_code == 201, r.text
        run = r.json()["run"]
        assert run["status"] == "running" and run["inputs"] == {"name": "Ada", "n": 3}
        assert run["outputs"] is None and run["finished_at"] is None and run["workflow_id"] == wf["id"]
        done = await poll(lambda: c.get(f"/api/v2/workflows/{wf['id']}/runs/{run['id']}"),
                          lambda resp: resp.json()["run"]["status"] == "completed")
        final = done.json()["run"]
        assert final["outputs"] == {"greeting": "Hello Ada", "n": 3} and final["error"] is None
        assert final["finished_at"] >= final["started_at"]
        # The 201 shows the run as it was created (rendered from the request's own StartRun): the same run.
        assert {k: final[k] for k in ("id", "workflow_id", "inputs", "started_at")} == \
            {k: run[k] for k in ("id", "workflow_id", "inputs", "started_at")}
    # The history says how it got there: pending -> running -> steps in order -> completed.
    rows = await pool.fetch("SELECT type FROM events WHERE stream_id = $1 ORDER BY version", f"run-{run['id']}")
    assert [r["type"] for r in rows] == [
        "RunCreated", "RunStarted", "StepStarted", "StepCompleted", "StepStarted", "StepCompleted", "RunCompleted",
    ]


async def test_a_missing_template_path_fails_the_run_naming_the_path(stack, tenant):
    async with stack.client(tenant) as c:
        wf = await _create(c)
        run = await _run_until_done(c, wf["id"], {"name": "no n here"})
    assert run["status"] == "failed" and "inputs.n" in run["error"] and "step_1" in run["error"]


async def test_runs_list_filters_and_paginates(stack, tenant):
    async with stack.client(tenant) as c:
        wf = await _create(c)
        ok = [await _run_until_done(c, wf["id"], {"name": "x", "n": i}) for i in range(2)]
        bad = await _run_until_done(c, wf["id"], {})
        body = (await c.get(f"/api/v2/workflows/{wf['id']}/runs")).json()
        assert body["count"] == 3 and [r["id"] for r in body["runs"]] == [bad["id"], ok[1]["id"], ok[0]["id"]]
        completed = (await c.get(f"/api/v2/workflows/{wf['id']}/runs", params={"status": "completed"})).json()
        assert {r["id"] for r in completed["runs"]} == {r["id"] for r in ok} and completed["count"] == 2
        failed = (await c.get(f"/api/v2/workflows/{wf['id']}/runs", params={"status": "failed"})).json()
        assert [r["id"] for r in failed["runs"]] == [bad["id"]]
        page = (await c.get(f"/api/v2/workflows/{wf['id']}/runs", params={"limit": 1, "offset": 1})).json()
        assert [r["id"] for r in page["runs"]] == [ok[1]["id"]] and page["count"] == 3
        # Every page, full or not, and past the end, names the same total (a last page is not counted again).
        for params, ids in (({"limit": 2, "offset": 2}, [ok[0]["id"]]), ({"limit": 2, "offset": 5}, []),
                            ({"limit": 2, "offset": 1, "status": "completed"}, [ok[0]["id"]])):
            page = (await c.get(f"/api/v2/workflows/{wf['id']}/runs", params=params)).json()
            assert [r["id"] for r in page["runs"]] == ids
            assert page["count"] == (2 if "status" in params else 3), params
        # Runs of another workflow are not found under this one.
        other = await _create(c)
        assert (await c.get(f"/api/v2/workflows/{other['id']}/runs/{ok[0]['id']}")).status_code == 404
        # DELETE cascades to the run history.
        await c.delete(f"/api/v2/workflows/{wf['id']}")
        assert (await c.get(f"/api/v2/workflows/{wf['id']}/runs/{ok[0]['id']}")).status_code == 404


async def test_archived_workflow_cannot_be_executed(stack, tenant):
    async with stack.client(tenant) as c:
        wf = await _create(c)
        await c.patch(f"/api/v2/workflows/{wf['id']}", json={"status": "archived"})
        r = await c.post(f"/api/v2/workflows/{wf['id']}/execute", json={})
    assert r.status_code == 409 and "archived" in r.json()["error"]


async def test_idempotency_key_creates_once_and_replays_the_response(stack, tenant):
    async with stack.client(tenant) as c:
        body = {"name": _name(), "definition": CHAIN}
        headers = {"Idempotency-Key": "create-1"}
        first = await c.post("/api/v2/workflows", json=body, headers=headers)
        second = await c.post("/api/v2/workflows", json=body, headers=headers)
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json() and second.headers.get("idempotent-replayed") == "true"
        assert (await c.get("/api/v2/workflows")).json()["count"] == 1
        changed = await c.post("/api/v2/workflows", json={**body, "name": _name()}, headers=headers)
        assert changed.status_code == 422 and changed.json()["field"] == "Idempotency-Key"

        wid = first.json()["workflow"]["id"]
        runs = [await c.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": {"name": "a", "n": 1}},
                             headers={"Idempotency-Key": "run-1"}) for _ in range(3)]
        assert {r.status_code for r in runs} == {201} and len({r.json()["run"]["id"] for r in runs}) == 1
        assert (await c.get(f"/api/v2/workflows/{wid}/runs")).json()["count"] == 1


async def test_a_refused_command_is_replayed_too(stack, tenant):
    async with stack.client(tenant) as c:
        name = _name()
        await _create(c, name)
        for _ in range(2):
            r = await c.post("/api/v2/workflows", json={"name": name, "definition": CHAIN},
                             headers={"Idempotency-Key": "dup"})
            assert r.status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"definition": CHAIN}, "name"),
        ({"name": 42, "definition": CHAIN}, "name"),
        ({"name": "", "definition": CHAIN}, "name"),
        ({"name": "x"}, "definition"),
        ({"name": "x", "definition": []}, "definition"),
        ({"name": "x", "definition": {"steps": []}}, "definition.nodes"),
        ({"name": "x", "definition": {"nodes": [{"id": "a"}]}}, "definition.nodes[0].type"),
        ({"name": "x", "definition": {"nodes": [{"id": "a", "type": "echo"}, {"id": "a", "type": "echo"}]}},
         "definition.nodes[1].id"),
        ({"name": "x", "definition": {"nodes": [{"id": "a", "type": "echo", "input_from": "zz"}]}},
         "definition.nodes[0]"),
        ({"name": "x", "definition": {"nodes": [{"id": "a", "type": "echo", "input_from": "b"},
                                                {"id": "b", "type": "echo", "input_from": "a"}]}},
         "definition.nodes"),
        ({"name": "x", "definition": CHAIN, "colour": "red"}, "colour"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(stack, tenant, body, field):
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False and r.json()["field"] == field


async def test_malformed_json_and_oversize_bodies(stack, tenant):
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows", content=b'{"name": ', headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = await c.post("/api/v2/workflows", content=b"", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        big = json.dumps({"name": "big", "definition": {"nodes": [], "pad": "x" * 2_000_000}})
        r = await c.post("/api/v2/workflows", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["success"] is False


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v2/workflows?limit=abc", 400),
        ("GET", "/api/v2/workflows?limit=0", 400),
        ("GET", "/api/v2/workflows?offset=-1", 400),
        ("GET", "/api/v2/workflows?status=deleted", 400),
        ("GET", "/api/v2/workflows/not-a-uuid", 404),
        ("GET", f"/api/v2/workflows/{uuid.uuid4()}", 404),
        ("GET", f"/api/v2/workflows/{uuid.uuid4()}/runs", 404),
        ("POST", f"/api/v2/workflows/{uuid.uuid4()}/execute", 404),
        ("PUT", "/api/v2/workflows", 405),
        ("GET", "/api/v2/nothing-here", 404),
    ],
)
async def test_bad_requests_get_4xx_in_the_v2_shape(stack, tenant, method, path, status):
    async with stack.client(tenant) as c:
        r = await c.request(method, path)
    assert r.status_code == status, r.text
    assert r.json()["success"] is False and r.json()["error"]


async def test_execute_body_errors(stack, tenant):
    async with stack.client(tenant) as c:
        wf = await _create(c)
        r = await c.post(f"/api/v2/workflows/{wf['id']}/execute", json={"inputs": [1, 2]})
        assert r.status_code == 400 and r.json()["field"] == "inputs"
        r = await c.post(f"/api/v2/workflows/{wf['id']}/runs", json={})
        assert r.status_code == 405


async def test_nothing_a_client_sends_yields_a_500(stack, tenant):
    junk = [b"null", b"[]", b"123", b'"str"', b"{}", b'{"name": null}', b'{"name": "n", "definition": null}',
            b'{"name": "n", "definition": {"nodes": [null]}}', b'{"name": "n", "definition": {"nodes": "x"}}',
            b'{"name": "n", "definition": {"nodes": [{"id": "a", "type": "echo", "config": 5}]}}',
            b'{"name": "n", "definition": {"nodes": [{"id": "a", "type": "echo", "depends_on": "a"}]}}',
            b'{"name": "n", "definition": {"nodes": [{"id": "a", "type": "echo", "depends_on": ["a"]}]}}',
            "{\"name\": \"\u00e9\\u0000\", \"definition\": {\"nodes\": []}}".encode(), b"\xff\xfe", b'{"a":' * 500]
    async with stack.client(tenant) as c:
        wf = await _create(c)
        for payload in junk:
            for path in ("/api/v2/workflows", f"/api/v2/workflows/{wf['id']}", f"/api/v2/workflows/{wf['id']}/execute"):
                method = "PATCH" if path.endswith(wf["id"]) else "POST"
                r = await c.request(method, path, content=payload, headers={"Content-Type": "application/json"})
                assert r.status_code < 500, (method, path, payload[:60], r.status_code, r.text)


async def test_202_with_a_lookup_when_the_owning_service_does_not_answer(stack, tenant):
    planner = stack.procs["planner"]
    planner.stop()
    try:
        async with stack.client(tenant) as c:
            r = await c.post("/api/v2/workflows", json={"name": _name(), "definition": CHAIN})
            assert r.status_code == 202, r.text
            location = r.json()["location"]
            assert r.headers["location"] == location
            assert (await c.get(location)).json()["command"]["state"] == "pending"
            planner.start()
            done = await poll(lambda: c.get(location), lambda resp: resp.json()["command"]["state"] == "committed",
                              timeout=30)
            workflow_id = done.json()["command"]["resource"].split("-", 1)[1]
            assert (await c.get(f"/api/v2/workflows/{workflow_id}")).status_code == 200
    finally:
        if not planner.alive():
            planner.start()
        from deploy.local.stack import wait_http

        wait_http(stack.ports["planner"])


async def test_command_logs_carry_tenant_and_correlation_ids(stack, tenant, infra):
    correlation = f"corr-{uuid.uuid4().hex}"
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows", json={"name": _name(), "definition": CHAIN},
                         headers={"X-Correlation-Id": correlation})
        assert r.status_code == 201

    def handled_lines():
        log = (infra.root / "logs" / "planner.log").read_text()
        return [json.loads(line) for line in log.splitlines() if correlation in line and line.startswith("{")]

    lines = await poll(lambda: __import__("asyncio").sleep(0, handled_lines()), lambda ls: bool(ls), timeout=5)
    line = next(entry for entry in lines if entry["event"] == "command_handled")
    assert line["tenant_id"] == tenant and line["correlation_id"] == correlation and line["causation_id"]
    assert line["service"] == "planner" and line["level"] == "info"
