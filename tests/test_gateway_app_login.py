"""A gateway that logs in as a plain weft_app member (no BYPASSRLS, decision 0115) serves every path that
starts before a tenant is known: API-key admission and its rate limit, the failed-auth and anonymous
buckets, v2 per-user limits, sign-in links, plan-approval links and stream tokens, and tenants stay apart."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from deploy.local.embedded import free_port
from deploy.local.stack import PROCESSES, ServiceProcess, service_env, wait_http
from libs.security.approval_tokens import issue_plan_token
from libs.security.signin_tokens import signin_url
from tests.conftest import Infra, Stack, poll

PUBLIC = "/api/v1/public"
ROWS = {"nodes": [{"id": "each", "type": "for_each", "config": {
    "items": "${inputs.csvData}", "step": {"type": "transform", "config": {"template": {"id": "${item.id}"}}}}}],
    "concurrency": "unlimited"}


@dataclass
class Gateway(Stack):
    login: str = ""
    application: str = ""


@pytest.fixture(scope="module")
def gateway(stack: Stack, infra: Infra) -> Iterator[Gateway]:
    """A gateway of this module on a login of its own (a member of weft_app and nothing else), named by
    application_name so its sessions can be told apart; the session's other services serve its commands."""
    suffix = uuid.uuid4().hex[:8]
    login, application = f"wgw_{suffix}", f"gateway_app_login_{suffix}"

    async def create() -> None:
        conn = await asyncpg.connect(infra.database_url)
        try:
            await conn.execute(f"CREATE ROLE {login} LOGIN IN ROLE weft_app")
        finally:
            await conn.close()

    asyncio.run(create())
    port = free_port()
    rest = infra.database_url.split("@", 1)[1]
    env = service_env(os.environ.copy(), name="gateway", port=port, nats_url=infra.nats_url,
                      database_url=f"postgresql://{login}@{rest}?application_name={application}")
    proc = ServiceProcess("gateway", PROCESSES["gateway"][0], env, infra.root / f"logs-app-login-{suffix}")
    proc.start()
    try:
        wait_http(port)
        yield Gateway(f"http://127.0.0.1:{port}", stack.settings, {"gateway": proc}, {"gateway": port}, login, application)
    finally:
        proc.stop()


async def test_the_gateway_connects_as_the_app_login_only(gateway: Gateway, pool) -> None:
    async with gateway.client("t-probe") as c:  # something that uses the pool
        assert (await c.get("/api/v2/workflows")).status_code == 200
    sessions = await pool.fetch("SELECT usename, r.rolsuper, r.rolbypassrls FROM pg_stat_activity a"
                                " JOIN pg_roles r ON r.rolname = a.usename WHERE a.application_name = $1",
                                gateway.application)
    assert sessions and {(s["usename"], s["rolsuper"], s["rolbypassrls"]) for s in sessions} == {
        (gateway.login, False, False)}


async def _workflow(gateway: Gateway, tenant: str) -> str:
    async with gateway.client(tenant) as c:
        r = await c.post("/api/v2/workflows", json={"name": f"wf-{uuid.uuid4().hex[:6]}", "definition": ROWS})
    assert r.status_code == 201, r.text
    return r.json()["workflow"]["id"]


async def _api_key(gateway: Gateway, tenant: str, workflow_id: str) -> str:
    async with gateway.client(tenant) as c:
        r = await c.post("/api/v2/api-keys", json={"name": "site", "workflow_ids": [workflow_id]})
    assert r.status_code == 201, r.text
    return r.json()["key"]


async def test_an_api_key_is_admitted_and_reaches_its_own_tenant_only(gateway: Gateway, tenant: str) -> None:
    other = f"o{tenant}"
    mine, theirs = await _workflow(gateway, tenant), await _workflow(gateway, other)
    key, their_key = await _api_key(gateway, tenant, mine), await _api_key(gateway, other, theirs)
    async with httpx.AsyncClient(base_url=gateway.base_url + PUBLIC, timeout=20,
                                 headers={"Authorization": f"Bearer {key}"}) as c:
        r = await c.post(f"/agents/{mine}/execute", json={"input": {"csvData": [{"id": "a"}, {"id": "b"}]}})
        assert r.status_code == 202, r.text
        assert int(r.headers["X-RateLimit-Remaining"]) < int(r.headers["X-RateLimit-Limit"])  # the key's bucket
        execution = r.json()["executionId"]
        status = await poll(lambda: c.get(f"/executions/{execution}/status"),
                            lambda r: r.json().get("status") == "completed", timeout=30, every=0.1)
        assert status.status_code == 200
        # The other tenant's workflow and execution do not exist for this key.
        r = await c.post(f"/agents/{theirs}/execute", json={"input": {"csvData": []}})
        assert r.status_code == 404, r.text
    async with httpx.AsyncClient(base_url=gateway.base_url + PUBLIC, timeout=20,
                                 headers={"Authorization": f"Bearer {their_key}"}) as c:
        r = await c.get(f"/executions/{execution}/status")
        assert r.status_code == 404, r.text
        r = await c.get(f"/executions/{execution}/results")
        assert r.status_code == 404, r.text


async def test_refused_callers_draw_on_their_buckets(gateway: Gateway, tenant: str) -> None:
    """Buckets of no tenant (failed authentications, callers without a key) and a v2 user's bucket are
    written through weft_take_rate_token: each answer carries its bucket's headers, none is a 500."""
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as c:
        r = await c.get(f"{PUBLIC}/executions/{uuid.uuid4()}/status")  # no key: the address's anonymous bucket
        assert r.status_code == 401 and "X-RateLimit-Remaining" in r.headers, (r.status_code, r.headers)
        r = await c.get(f"{PUBLIC}/executions/{uuid.uuid4()}/status",
                        headers={"Authorization": "Bearer weft_" + "0" * 64})  # unknown key: failed-auth bucket
        assert r.status_code == 401 and "X-RateLimit-Remaining" in r.headers, (r.status_code, r.headers)
        r = await c.get("/api/v2/workflows", headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401 and "X-RateLimit-Remaining" in r.headers, (r.status_code, r.headers)
    async with gateway.client(tenant) as c:
        r = await c.get("/api/v2/workflows")
        assert r.status_code == 200 and "X-RateLimit-Remaining" in r.headers


async def test_a_sign_in_link_signs_in_once(gateway: Gateway, tenant: str) -> None:
    link = signin_url(gateway.settings, gateway.base_url, tenant, "ann", email="ann@example.com")

    async def use(browser: httpx.AsyncClient) -> httpx.Response:
        page = await browser.get(link)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        token = re.search(r'name="link_token" value="([^"]+)"', page.text).group(1)
        return await browser.post(f"{gateway.base_url}/dashboard/signin", follow_redirects=False,
                                  data={"csrf_token": csrf, "link_token": token, "next": "/dashboard/workflows"})

    async with httpx.AsyncClient(timeout=20) as browser, httpx.AsyncClient(timeout=20) as another:
        r = await use(browser)
        assert r.status_code == 303, r.text
        r = await browser.get(f"{gateway.base_url}/dashboard/workflows")
        assert r.status_code == 200 and "Sign in" not in r.text  # signed in
        r = await use(another)  # the same link again, from another browser: spent
        assert r.status_code == 400 and "already used" in r.text, r.text


async def test_a_plan_approval_link_activates_its_workflow_once_and_names_one_tenant(gateway: Gateway,
                                                                                     tenant: str) -> None:
    async with gateway.client(tenant) as c:
        r = await c.post("/api/workflows", json={"goal": "Summarise sales and email team@example.com"})
        assert r.status_code == 201, r.text
        draft = r.json()

    def link(tenant_id: str) -> str:
        token = issue_plan_token(gateway.settings, token_id=uuid.uuid4(), tenant_id=tenant_id,
                                 workflow_id=uuid.UUID(draft["workflowId"]), plan_version=1,
                                 plan_hash=draft["planHash"], approver="ann@example.com", now=datetime.now(UTC))
        return f"/api/workflows/{draft['workflowId']}/approve?token={token}"

    browser_headers = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120 Safari/537.36"}
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20, headers=browser_headers) as browser:
        r = await browser.get(link(f"o{tenant}"))  # a token of another tenant finds no such workflow
        assert r.status_code in (400, 404), r.text
        good = link(tenant)
        r = await browser.get(good, follow_redirects=False)
        assert r.status_code == 303, r.text
        r = await browser.get(good, follow_redirects=False)
        assert r.status_code == 400, r.text  # single use
    async with gateway.client(tenant) as c:
        r = await c.get(f"/api/workflows/{draft['workflowId']}")
        assert r.status_code == 200 and r.json()["status"] == "active", r.text


async def test_a_stream_token_opens_its_workflows_stream(gateway: Gateway, tenant: str) -> None:
    wid = await _workflow(gateway, tenant)
    async with gateway.client(tenant) as alice:
        r = await alice.post("/api/workflow/stream-token", json={"workflowId": wid})
        assert r.status_code == 200, r.text
        url = r.json()["streamUrl"]
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as browser:
        async with browser.stream("GET", url) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    assert line.split(":", 1)[1].strip() == "connected"
                    break
