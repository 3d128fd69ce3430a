"""Text Postgres cannot store (a NUL character) is refused at the boundary of every surface with a 400 naming the
field, in that surface's shape, at once: never a 500 after the command's retries, never a 202 that later fails."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from libs.security import apikeys

NUL = "\u0000"
CHAIN = {"nodes": [{"id": "a", "type": "transform", "config": {"template": {"x": "${inputs.x}"}}}]}


async def _workflow(c: httpx.AsyncClient) -> str:
    r = await c.post("/api/v2/workflows", json={"name": f"wf-{uuid.uuid4().hex[:8]}", "definition": CHAIN})
    assert r.status_code == 201, r.text
    return r.json()["workflow"]["id"]


def _v2(r: httpx.Response, field: str) -> None:
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False and r.json()["field"] == field and "NUL" in r.json()["error"]


def _plain(r: httpx.Response, field: str) -> None:
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "Bad Request" and r.json()["field"] == field and "NUL" in r.json()["message"]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v2/workflows", {"name": f"a{NUL}b", "definition": {"nodes": []}}, "name"),
    ("/api/v2/workflows", {"name": "ok", "definition": {"nodes": [{"id": "s", "type": "echo",
                                                                   "description": f"d{NUL}"}]}},
     "definition.nodes[0].description"),
    ("/api/v2/workflows/parse", {"instruction": f"Every day email {NUL} the team"}, "instruction"),
])
async def test_v2_bodies(stack, tenant, path, body, field):
    async with stack.client(tenant) as c:
        started = time.perf_counter()
        _v2(await c.post(path, json=body), field)
        assert time.perf_counter() - started < 2.0  # refused at the boundary, not after a command's retries


async def test_execute_inputs_on_v2_and_executions(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _workflow(c)
        _v2(await c.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": {"x": f"1{NUL}"}}), "inputs.x")
        _v2(await c.post(f"/api/workflows/execute/{wid}", json={"inputs": {f"k{NUL}": 1}}), f"inputs.k{NUL}")
        runs = (await c.get(f"/api/v2/workflows/{wid}/runs")).json()
        assert runs["count"] == 0  # nothing started


async def test_console_and_assistant(stack, tenant):
    async with stack.client(tenant) as c:
        _plain(await c.post("/api/workflows", json={"goal": f"Summarise {NUL} sales weekly"}), "goal")
        _plain(await c.post("/api/workflow/execute", json={"command": f"Record that {NUL} the build passed"}),
               "command")


async def test_query_strings_and_approval_notes(stack, tenant):
    async with stack.client(tenant) as c:
        _v2(await c.get("/api/v2/workflows?status=act%00ive"), "status")
        r = await c.get("/api/workflows/resume?token=x&action=reject&note=no%00pe", follow_redirects=False)
        assert r.status_code == 400 and "NUL" in r.text


async def test_public_execute(stack, store, tenant):
    async with stack.client(tenant) as c:
        wid = await _workflow(c)
    async with store.tenant_transaction(tenant) as conn:
        key, _ = await apikeys.create_key(conn, tenant_id=tenant, name="site", created_by="test",
                                          workflow_ids=[uuid.UUID(wid)])
    async with httpx.AsyncClient(base_url=stack.base_url + "/api/v1/public",
                                 headers={"Authorization": f"Bearer {key}"}, timeout=20) as public:
        r = await public.post(f"/agents/{wid}/execute", json={"input": {"x": f"a{NUL}"}})
        assert r.status_code == 400 and r.json()["statusCode"] == 400 and "input.x" in r.json()["message"]
        async with store.tenant_transaction(tenant) as conn:  # no quota spent on a refused request
            assert await conn.fetchval("SELECT count(*) FROM runs WHERE workflow_id = $1", uuid.UUID(wid)) == 0
