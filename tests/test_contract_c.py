"""Contract C (spec/C-execution-api.md) to the letter, from the document's own examples, against the real stack:
status codes within C's list, execution variables and `${user.name}`, agent responses kept in variables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Infra, Stack, poll, start_processes
from tests.fakes.http_receiver import HttpReceiver

GREETING = {"nodes": [{"id": "greet", "type": "transform", "config": {"template": {"text": "Hello, ${user.name}!"}}}]}


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def loopback_executor(stack: Stack, infra: Infra) -> Iterator[Stack]:
    """The stack with its executor replaced by one that may reach loopback endpoints (the fake agent)."""
    from deploy.local.stack import wait_http

    stack.procs["executor"].stop()
    procs, _ = start_processes(infra, ["executor"], infra.root / "contract-c-logs",
                               {"WEFT_OUTBOUND_ALLOW_HOSTS": "127.0.0.1"})
    try:
        yield stack
    finally:
        procs["executor"].stop()
        stack.procs["executor"].start()
        wait_http(stack.ports["executor"])


async def _create(c, definition: dict) -> str:
    r = await c.post("/api/v2/workflows", json={"name": f"wf-{uuid.uuid4().hex[:8]}", "definition": definition})
    assert r.status_code == 201, r.text
    return r.json()["workflow"]["id"]


async def _finished(c, eid: str) -> dict:
    async def fetch():
        r = await c.get(f"/api/workflows/execute/{eid}")
        assert r.status_code == 200, r.text
        return r.json()["data"]

    return await poll(fetch, lambda d: d["state"] in ("COMPLETED", "FAILED", "CANCELED"), timeout=20)


async def test_executing_a_draft_is_a_bad_request_in_cs_shape(stack, tenant):
    async with stack.client(tenant) as c:
        r = await c.post("/api/workflows", json={"goal": "Summarise the sales numbers and email them to a@example.com"})
        assert r.status_code == 201 and r.json()["status"] == "draft", r.text
        r = await c.post(f"/api/workflows/execute/{r.json()['workflowId']}")
        # C's status list has no 409: a workflow that may not run is a 400, {"success": false, "error": ...}.
        assert r.status_code == 400, r.text
        assert r.json()["success"] is False and "draft" in r.json()["error"]


async def test_variables_are_accepted_interpolated_and_shown(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, GREETING)
        r = await c.post(f"/api/workflows/execute/{wid}", json={"variables": {"user": {"name": "Ada"}}})
        assert r.status_code == 200, r.text
        data = await _finished(c, r.json()["data"]["executionId"])
        assert data["state"] == "COMPLETED", data
        assert data["nodeStates"]["greet"]["output"] == {"text": "Hello, Ada!"}
        assert data["variables"] == {"user": {"name": "Ada"}}
        # Without the variable the path is a clear step error, not an empty string (DESIGN 5).
        r = await c.post(f"/api/workflows/execute/{wid}", json={"variables": {}})
        data = await _finished(c, r.json()["data"]["executionId"])
        assert data["state"] == "FAILED" and "user.name" in data["nodeStates"]["greet"]["error"], data


async def test_variables_must_be_an_object_and_storable(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _create(c, GREETING)
        r = await c.post(f"/api/workflows/execute/{wid}", json={"variables": ["not", "an", "object"]})
        assert r.status_code == 400 and r.json()["success"] is False, r.text
        r = await c.post(f"/api/workflows/execute/{wid}", json={"variables": {"user": {"name": "A\u0000"}}})
        assert r.status_code == 400 and r.json()["field"] == "variables.user.name", r.text


async def test_an_agent_steps_response_is_stored_in_the_variables(loopback_executor, tenant, receiver, store):
    from services.executor.integrations import register_agent

    agent_id = await register_agent(store, tenant, "greeter", receiver.url("/agent"))
    definition = {"nodes": [
        {"id": "ask", "type": "agent", "config": {"agent_id": str(agent_id), "prompt": "Hello, ${user.name}!"}},
        {"id": "after", "type": "transform", "config": {"template": {"said": "${greeter.prompt}"}},
         "depends_on": ["ask"]}]}
    async with loopback_executor.client(tenant) as c:
        wid = await _create(c, definition)
        r = await c.post(f"/api/workflows/execute/{wid}", json={"variables": {"user": {"name": "Ada"}}})
        data = await _finished(c, r.json()["data"]["executionId"])
    assert data["state"] == "COMPLETED", data
    answer = {"answer": "agent saw 11 chars", "prompt": "Hello, Ada!"}
    assert data["variables"] == {"user": {"name": "Ada"}, "greeter": answer}
    assert data["nodeStates"]["after"]["output"] == {"said": "Hello, Ada!"}
