"""Contract C (spec/C-execution-api.md) to the letter, from the document's own examples, against the real stack:
status codes within C's list, execution variables and `${user.name}`, agent responses kept in variables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Infra, Stack, poll, swapped
from tests.fakes.http_receiver import HttpReceiver

GREETING = {"nodes": [{"id": "greet", "type": "transform", "config": {"template": {"text": "Hello, ${user.name}!"}}}]}


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def loopback_executor(stack: Stack, infra: Infra) -> Iterator[Stack]:
    """The stack with its executor replaced by one that may reach loopback endpoints (the fake agent)."""
    yield from swapped(stack, infra, "executor", {"WEFT_OUTBOUND_ALLOW_HOSTS": "127.0.0.1:*"},
                       infra.root / "contract-c-logs")


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


async def test_agent_definitions_crud_keeps_the_secret_encrypted_and_never_returns_it(stack, tenant, pool):
    body = {"name": "researcher", "endpoint": "https://agents.example.com/research", "secret": "s3cret-token",
            "timeout_s": 12.5, "prompt_template": "You are a sales analyst. ${prompt}"}
    async with stack.client(tenant) as c, stack.client(f"{tenant}x") as other:
        r = await c.post("/api/v2/agents", json=body)
        assert r.status_code == 201, r.text
        agent = r.json()["agent"]
        assert "s3cret" not in r.text and agent["has_secret"] is True and agent["timeout_s"] == 12.5
        aid = agent["id"]
        assert (await c.post("/api/v2/agents", json=body)).status_code == 409  # names are unique per tenant
        for bad, field in (({**body, "name": "x", "endpoint": "ftp://a"}, "endpoint"),
                           ({**body, "name": "y", "timeout_s": 0}, "timeout_s"),
                           ({**body, "name": "z", "extra": 1}, None)):
            r = await c.post("/api/v2/agents", json=bad)
            assert r.status_code == 400 and r.json()["success"] is False, r.text
            assert field is None or field in r.text
        listed = (await c.get("/api/v2/agents")).json()
        assert listed["count"] == 1 and listed["agents"][0]["id"] == aid and "s3cret" not in str(listed)
        assert (await other.get(f"/api/v2/agents/{aid}")).status_code == 404  # another tenant's: not found
        assert (await other.get("/api/v2/agents")).json()["count"] == 0
        r = await c.patch(f"/api/v2/agents/{aid}", json={"secret": None, "timeout_s": 5})
        assert r.status_code == 200 and r.json()["agent"]["has_secret"] is False and r.json()["agent"]["timeout_s"] == 5
        r = await c.patch(f"/api/v2/agents/{aid}", json={"secret": "rotated"})
        assert r.json()["agent"]["has_secret"] is True and "rotated" not in r.text
        row = await pool.fetchrow("SELECT secret_key_id, secret_ciphertext FROM agents WHERE id = $1", uuid.UUID(aid))
        assert row["secret_key_id"] == "dev" and b"rotated" not in row["secret_ciphertext"]
        assert (await c.delete(f"/api/v2/agents/{aid}")).status_code == 200
        assert (await c.get(f"/api/v2/agents/{aid}")).status_code == 404


async def test_the_agent_step_calls_the_defined_agent_with_its_secret_and_template(loopback_executor, tenant,
                                                                                   receiver):
    async with loopback_executor.client(tenant) as c:
        r = await c.post("/api/v2/agents", json={
            "name": "analyst", "endpoint": receiver.url("/agent"), "secret": "tok-123", "timeout_s": 5,
            "prompt_template": "As an analyst: ${prompt}"})
        aid = r.json()["agent"]["id"]
        wid = await _create(c, {"nodes": [{"id": "ask", "type": "agent",
                                           "config": {"agent_id": aid, "prompt": "Hello, ${user.name}!"}}]})
        before = len(receiver.requests)
        r = await c.post(f"/api/workflows/execute/{wid}", json={"variables": {"user": {"name": "Ada"}}})
        data = await _finished(c, r.json()["data"]["executionId"])
    assert data["state"] == "COMPLETED", data
    (request,) = [q for q in receiver.requests[before:] if q.path == "/agent"]
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.json()["prompt"] == "As an analyst: Hello, Ada!"
    assert data["variables"]["analyst"] == {"answer": "agent saw 26 chars", "prompt": "As an analyst: Hello, Ada!"}


def test_weft_agents_cli_defines_shows_and_deletes_an_agent_without_echoing_the_secret(stack, tenant):
    import json
    import os
    import subprocess
    import sys

    base = [sys.executable, "-m", "cli.main", "agents"]
    conn = ["--url", stack.base_url, "--token", stack.token(tenant)]
    env = {**os.environ, "AGENT_SECRET": "cli-s3cret"}

    def weft(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *argv, *conn], capture_output=True, text=True, env=env, timeout=60)

    made = weft("create", "--name", "cli-agent", "--endpoint", "https://agents.example.com/a",
                "--secret-env", "AGENT_SECRET", "--timeout", "7", "--json")
    assert made.returncode == 0, made.stderr
    agent = json.loads(made.stdout)
    assert agent["has_secret"] is True and agent["timeout_s"] == 7 and "cli-s3cret" not in made.stdout
    again = weft("create", "--name", "cli-agent", "--endpoint", "https://agents.example.com/a")
    assert again.returncode == 4 and "already exists" in again.stderr  # 409: exit code 4
    shown = weft("show", agent["id"])
    assert shown.returncode == 0 and "cli-agent" in shown.stdout and "with a secret" in shown.stdout
    assert weft("update", agent["id"], "--remove-secret").returncode == 0
    assert "no secret" in weft("show", agent["id"]).stdout
    assert weft("delete", agent["id"]).returncode == 0
    assert weft("show", agent["id"]).returncode == 3  # not found
