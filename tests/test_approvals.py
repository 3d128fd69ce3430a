"""Approvals end to end: real gateway, planner, executor, scheduler (timers), notifier and relay processes on a
database and nats-server of their own, the notifier sending to a real SMTP server on loopback (aiosmtpd).
Links are taken from the emails that arrived and followed over HTTP like a person's browser would."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import msgspec
import pytest
from aiosmtpd.controller import Controller

from deploy.local.stack import PROCESSES, ServiceProcess, service_env, wait_http
from libs.security import apikeys
from libs.security.approval_tokens import issue_plan_token, issue_step_token, verify_plan_token
from libs.security.auth import issue_token
from deploy.local.embedded import EmbeddedNats, free_port
from libs.events.settings import Settings, load_settings
from tests.conftest import Infra, migrated_database, poll
from tests.fakes.smtp_server import Inbox

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36"
LINK = re.compile(r"https?://\S+")


@dataclass
class Cluster:
    base_url: str
    confirm_url: str  # a second gateway with WEFT_APPROVAL_LINKS_CONFIRM=true
    settings: Settings
    dsn: str
    inbox: Inbox
    procs: dict[str, ServiceProcess]
    ports: dict[str, int]
    env: dict[str, str]
    log_dir: Path

    def client(self, tenant: str, user: str = "alice", email: str | None = None, base: str | None = None
               ) -> httpx.AsyncClient:
        token = issue_token(self.settings, tenant, user, email=email)
        return httpx.AsyncClient(base_url=base or self.base_url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=30)

    def browser(self, base: str | None = None, agent: str = BROWSER) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base or self.base_url, headers={"User-Agent": agent}, timeout=30,
                                 follow_redirects=False)

    def start(self, name: str, extra: dict[str, str] | None = None) -> None:
        module = PROCESSES[name.split("-")[0]][0]
        env = service_env(self.env | (extra or {}), name=name, port=self.ports[name], database_url=self.dsn,
                          nats_url=self.env["WEFT_NATS_URL"])
        self.procs[name] = ServiceProcess(name, module, env, self.log_dir)
        self.procs[name].start()


@pytest.fixture(scope="module")
def cluster(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("approvals")
    dsn = asyncio.run(migrated_database(infra, "weft_appr"))
    nats = EmbeddedNats(root / "nats", free_port())
    nats.start()
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    names = ["gateway", "gateway-confirm", "planner", "executor", "scheduler", "notifier", "relay"]
    ports = {n: free_port() for n in names}
    env = os.environ.copy() | {
        "WEFT_NATS_URL": nats.url, "WEFT_SMTP_HOST": "127.0.0.1", "WEFT_SMTP_PORT": str(smtp.port),
        "WEFT_SMTP_FROM": "weft@example.com", "WEFT_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['gateway']}",
        "WEFT_APPROVAL_EMAIL": "approvals@example.com", "WEFT_SCHEDULER_POLL_S": "0.5",
        # Unacked events come back after this long: the crash test waits for one redelivery.
        "WEFT_ACK_WAIT_S": "4",
    }
    c = Cluster(f"http://127.0.0.1:{ports['gateway']}", f"http://127.0.0.1:{ports['gateway-confirm']}",
                load_settings(env), dsn, inbox, {}, ports, env, root / "logs")
    try:
        for n in names:
            c.start(n, {"WEFT_APPROVAL_LINKS_CONFIRM": "true"} if n == "gateway-confirm" else None)
        for n in names:
            wait_http(ports[n])
        yield c
    finally:
        for proc in c.procs.values():
            proc.stop()
        smtp.stop()
        nats.stop()


@pytest.fixture(scope="module")
async def db(cluster: Cluster) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(cluster.dsn, min_size=1, max_size=5)
    yield pool
    await pool.close()


# ---- helpers ------------------------------------------------------------------------------------------


async def mail_to(cluster: Cluster, address: str, subject: str = "", count: int = 1,
                  timeout: float = 30) -> list[EmailMessage]:
    async def arrived() -> list[EmailMessage]:
        return [m for m in list(cluster.inbox.messages) if m["To"] == address and subject in m["Subject"]]

    return await poll(arrived, lambda found: len(found) >= count, timeout=timeout)


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def links(message: EmailMessage) -> list[str]:
    return LINK.findall(text_of(message))


def path_of(url: str) -> str:
    """The link's path and query: the test gateway is the link's host, but say so explicitly."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def events(db: asyncpg.Pool, stream_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT type, data::text AS data FROM events WHERE stream_id = $1 ORDER BY version",
                          stream_id)
    return [msgspec.json.decode(r["data"]) for r in rows if kind is None or r["type"] == kind]


async def run_status(db: asyncpg.Pool, run_id: str, until: str | tuple[str, ...], timeout: float = 30) -> dict:
    wanted = (until,) if isinstance(until, str) else until

    async def read():
        return await db.fetchrow("SELECT status, error, outputs::text AS outputs FROM runs WHERE id = $1",
                                 uuid.UUID(run_id))

    row = await poll(read, lambda r: r is not None and r["status"] in wanted, timeout=timeout)
    return dict(row)


def approval_workflow(**config: Any) -> dict[str, Any]:
    return {"concurrency": "unlimited", "nodes": [
        {"id": "rows", "type": "transform", "config": {"template": {"list": "${inputs.rows}"}}},
        {"id": "review", "type": "approval", "input_from": "rows",
         "config": {"title": "Review the offers", "description": "Check every row", "rows": "${input.list}",
                    **config}},
        {"id": "done", "type": "echo", "input_from": "review"},
    ]}


ROWS = [{"customerId": "C1", "offer": "10% off"}, {"customerId": "C2", "offer": "free shipping"}]


async def start_run(cluster: Cluster, tenant: str, **config: Any) -> tuple[str, str]:
    """A v2 workflow with an approval step, executed; returns (workflow id, run id)."""
    async with cluster.client(tenant) as c:
        r = await c.post("/api/v2/workflows", json={"name": f"approve-{uuid.uuid4().hex[:6]}",
                                                    "definition": approval_workflow(**config)})
        assert r.status_code == 201, r.text
        wid = r.json()["workflow"]["id"]
        r = await c.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": {"rows": ROWS}})
        assert r.status_code == 201, r.text
        return wid, r.json()["run"]["id"]


# ---- plan approval ------------------------------------------------------------------------------------


async def create_draft(cluster: Cluster, tenant: str, email: str | None) -> dict[str, Any]:
    async with cluster.client(tenant, email=email) as c:
        r = await c.post("/api/workflows", json={"goal": "Summarise sales and email team@example.com"})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "draft"
    return r.json()


async def test_the_plan_email_shows_the_plan_and_its_link_activates_the_workflow(cluster, db, tenant):
    draft = await create_draft(cluster, tenant, "ann@example.com")
    wid = draft["workflowId"]
    (message,) = await mail_to(cluster, "ann@example.com", "Approve the plan")
    body = text_of(message)
    assert "email to team@example.com" in body and "Estimated LLM cost per run: $" in body
    assert all(step["id"] in body for step in draft["steps"]) and message.get_body(("html",)) is not None
    (link,) = links(message)
    assert link.startswith(f"{cluster.base_url}/api/workflows/{wid}/approve?token=")

    async with cluster.browser() as browser:
        assert (await browser.head(path_of(link))).status_code == 200  # HEAD: no side effect
        async with cluster.browser(agent="Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)") as bot:
            assert (await bot.get(path_of(link))).status_code == 200
        assert await events(db, f"workflow-{wid}", "PlanApproved") == []

        r = await browser.get(path_of(link))
        assert r.status_code == 303 and r.headers["location"] == f"/dashboard/workflows/{wid}"
        async with cluster.client(tenant) as c:
            assert (await c.get(f"/api/workflows/{wid}")).json()["status"] == "active"
        (approved,) = await events(db, f"workflow-{wid}", "PlanApproved")
        claims = parse_qs(urlsplit(link).query)["token"][0]
        assert approved["approved_by"] == "ann@example.com" and approved["client_ip"] == "127.0.0.1"
        assert approved["user_agent"] == BROWSER and approved["token_id"] and approved["plan_hash"] == draft["planHash"]
        assert claims  # the token travelled in the link

        again = await browser.get(path_of(link))
        assert again.status_code == 400 and "already used" in again.json()["message"]
        assert again.json()["error"] == "Bad Request"


async def test_without_an_email_claim_the_plan_goes_to_the_configured_address(cluster, tenant):
    draft = await create_draft(cluster, tenant, None)
    messages = await mail_to(cluster, "approvals@example.com", "Approve the plan")
    assert any(draft["workflowId"] in links(m)[0] for m in messages)


async def test_plan_links_say_why_they_are_refused(cluster, tenant):
    draft = await create_draft(cluster, tenant, "bea@example.com")
    wid = uuid.UUID(draft["workflowId"])
    (message,) = await mail_to(cluster, "bea@example.com", "Approve the plan")
    good = path_of(links(message)[0])
    settings = cluster.settings

    def plan(**kw: Any) -> str:
        args = dict(token_id=uuid.uuid4(), tenant_id=tenant, workflow_id=wid, plan_version=1,
                    plan_hash=draft["planHash"], approver="bea@example.com", now=datetime.now(UTC)) | kw
        return issue_plan_token(settings, **args)

    step = issue_step_token(settings, token_id=uuid.uuid4(), tenant_id=tenant, workflow_id=wid, run_id=uuid.uuid4(),
                            step_id="s", plan_hash="h", approver="bea@example.com", action="approve",
                            now=datetime.now(UTC))
    token = parse_qs(urlsplit(good).query)["token"][0]
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    cases = {
        "expired": plan(now=datetime.now(UTC) - timedelta(hours=25)),
        "not a plan-approval token": step,
        "signature does not match": tampered,
        "another workflow": plan(workflow_id=uuid.uuid4()),
    }
    async with cluster.browser() as browser:
        for words, bad in cases.items():
            r = await browser.get(f"/api/workflows/{wid}/approve", params={"token": bad})
            assert r.status_code == 400 and words in r.json()["message"], (words, r.text)
            assert r.json()["field"] == "token"
        r = await browser.get(f"/api/workflows/{wid}/approve")
        assert r.status_code == 400 and "token is required" in r.json()["message"]
        # A browser asking for HTML gets a page with the same status and reason.
        r = await browser.get(f"/api/workflows/{wid}/approve", params={"token": cases["expired"]},
                              headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert r.status_code == 400 and "text/html" in r.headers["content-type"] and "expired" in r.text

        # The plan was edited after the email: its link approves the old hash and cannot activate the new plan.
        async with cluster.client(tenant, email="bea@example.com") as c:
            steps = [{"id": s["id"], "action": s["action"], "description": "edited", "config": s["config"],
                      "input_from": s["inputFrom"], "depends_on": s["dependsOn"]} for s in draft["steps"]]
            r = await c.post(f"/api/workflows/{wid}/steps", json={"steps": steps})
            assert r.status_code == 200 and r.json()["planVersion"] == 2, r.text
        r = await browser.get(good)
        assert r.status_code == 400 and "changed since" in r.json()["message"]
        (newer,) = await mail_to(cluster, "bea@example.com", "(version 2)")
        assert (await browser.get(path_of(links(newer)[0]))).status_code == 303


async def test_junk_at_the_link_routes_is_a_400_naming_the_field_never_a_500(cluster):
    wid = uuid.uuid4()
    async with cluster.browser() as browser:
        cases = [
            await browser.post("/api/workflows/resume", json={"token": "x", "action": "approve"}),
            await browser.post("/api/workflows/resume", files={"token": ("t", b"x")}),
            await browser.post(f"/api/workflows/{wid}/approve", content=b"\xff\xfe", headers={
                "Content-Type": "application/x-www-form-urlencoded"}),
            await browser.get("/api/workflows/resume", params={"token": "a" * 20000, "action": "approve"}),
            await browser.get("/api/workflows/resume", params={"token": "x.y.z", "action": "approve"}),
            await browser.get(f"/api/workflows/{wid}/approve", params={"token": ["a", "b"]}),
        ]
        for r in cases:
            assert r.status_code == 400 and r.json()["field"] == "token", (r.request.url, r.status_code, r.text)
        token, reject = (issue_step_token(cluster.settings, token_id=uuid.uuid4(), tenant_id="acme", workflow_id=wid,
                                          run_id=uuid.uuid4(), step_id="s", plan_hash="h", approver="a@example.com",
                                          action=action, now=datetime.now(UTC)) for action in ("approve", "reject"))
        for params, field in (({"token": token, "action": "maybe"}, "action"),
                              ({"token": token, "action": "reject"}, "action"),
                              ({"token": reject, "action": "approve"}, "action"),
                              ({"token": reject, "action": "reject", "note": "n" * 2001}, "note")):
            r = await browser.get("/api/workflows/resume", params=params)
            assert r.status_code == 400 and r.json()["field"] == field, r.text
        # A valid token for a run that does not exist: the executor refuses it.
        r = await browser.get("/api/workflows/resume", params={"token": token, "action": "approve"})
        assert r.status_code == 404 and r.json()["message"] == "Execution not found"


# ---- step approval ------------------------------------------------------------------------------------


async def test_an_approval_step_pauses_shows_each_surfaces_word_and_its_email_link_resumes_it(cluster, db, tenant):
    wid, run_id = await start_run(cluster, tenant, approvers=["bob@example.com"])
    await run_status(db, run_id, "awaiting_approval")
    async with cluster.client(tenant) as c:
        console = (await c.get(f"/api/workflows/{wid}")).json()["workflowRuns"][0]
        execution = (await c.get(f"/api/workflows/execute/{run_id}")).json()["data"]
        v2 = (await c.get(f"/api/v2/workflows/{wid}/runs/{run_id}")).json()
    assert console["status"] == "awaiting_approval" and execution["state"] == "PAUSED"
    assert v2["run"]["status"] == "running"
    (message,) = await mail_to(cluster, "bob@example.com", "Review the offers")
    body = text_of(message)
    assert "C1" in body and "free shipping" in body and "Each link works once" in body
    approve, reject = links(message)
    assert "action=approve" in approve and "action=reject" in reject
    assert approve.startswith(f"{cluster.base_url}/api/workflows/resume?token=")

    async with cluster.browser() as browser:
        r = await browser.get(path_of(approve), headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 303 and r.headers["location"] == f"/dashboard/workflows/{wid}"
    row = await run_status(db, run_id, "completed")
    assert msgspec.json.decode(row["outputs"])["approved"] is True
    (decision,) = await events(db, f"run-{run_id}", "ApprovalDecisionRecorded")
    assert {k: decision[k] for k in ("step_id", "decision", "decided_by", "via", "client_ip", "user_agent")} == {
        # uvicorn takes X-Forwarded-For from trusted proxies only (FORWARDED_ALLOW_IPS, 127.0.0.1 by default).
        "step_id": "review", "decision": "approve", "decided_by": "bob@example.com", "via": "email",
        "client_ip": "203.0.113.9", "user_agent": BROWSER}
    assert decision["token_id"] and decision["at"]


async def test_a_reject_link_asks_for_the_required_comment_then_stops_the_run(cluster, db, tenant):
    wid, run_id = await start_run(cluster, tenant, approvers=["cat@example.com"], require_comment=True)
    (message,) = await mail_to(cluster, "cat@example.com", "Review the offers")
    _, reject = links(message)
    async with cluster.browser() as browser:
        page = await browser.get(path_of(reject))
        assert page.status_code == 200 and "<textarea" in page.text and 'name="note"' in page.text
        assert (await run_status(db, run_id, "awaiting_approval"))["status"] == "awaiting_approval"
        r = await browser.get(path_of(reject) + "&note=" + "Numbers%20are%20off")
        assert r.status_code == 303
    row = await run_status(db, run_id, "failed")
    assert row["error"] == "Step review failed: Rejected by cat@example.com: Numbers are off"
    (decision,) = await events(db, f"run-{run_id}", "ApprovalDecisionRecorded")
    assert decision["comment"] == "Numbers are off" and decision["decision"] == "reject"


async def test_two_of_three_approvers_must_approve(cluster, db, tenant):
    approvers = ["d1@example.com", "d2@example.com", "d3@example.com"]
    _, run_id = await start_run(cluster, tenant, approvers=approvers, required_approvals=2)
    first = (await mail_to(cluster, approvers[0], "Review the offers"))[0]
    second = (await mail_to(cluster, approvers[1], "Review the offers"))[0]
    assert "2 of 3 approvers must approve" in text_of(first)
    async with cluster.browser() as browser:
        assert (await browser.get(path_of(links(first)[0]))).status_code == 303
        await poll(lambda: events(db, f"run-{run_id}", "ApprovalDecisionRecorded"), lambda e: len(e) == 1)
        assert (await run_status(db, run_id, "awaiting_approval"))["status"] == "awaiting_approval"
        assert (await browser.get(path_of(links(second)[0]))).status_code == 303
    await run_status(db, run_id, "completed")


async def test_fifty_concurrent_uses_of_one_link_make_exactly_one_decision(cluster, db, tenant):
    _, run_id = await start_run(cluster, tenant, approvers=["eve@example.com"])
    (message,) = await mail_to(cluster, "eve@example.com", "Review the offers")
    approve = path_of(links(message)[0])
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=cluster.base_url, headers={"User-Agent": BROWSER}, timeout=60,
                                 limits=limits) as browser:
        answers = await asyncio.gather(*(browser.get(approve) for _ in range(50)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [303] + [400] * 49, statuses
    assert all("already used" in r.json()["message"] for r in answers if r.status_code == 400)
    decisions = await events(db, f"run-{run_id}", "ApprovalDecisionRecorded")
    assert len(decisions) == 1
    assert await db.fetchval("SELECT count(*) FROM approval_tokens_used WHERE id = $1",
                             uuid.UUID(decisions[0]["token_id"])) == 1
    await run_status(db, run_id, "completed")


async def test_confirmation_page_mode_decides_only_on_the_posted_form(cluster, db, tenant):
    _, run_id = await start_run(cluster, tenant, approvers=["fay@example.com"])
    (message,) = await mail_to(cluster, "fay@example.com", "Review the offers")
    approve = path_of(links(message)[0])
    async with cluster.browser(base=cluster.confirm_url) as browser:
        page = await browser.get(approve)
        assert page.status_code == 200 and '<form method="post" action="/api/workflows/resume">' in page.text
        await asyncio.sleep(0.5)  # give a (wrong) decision time to show up
        assert await events(db, f"run-{run_id}", "ApprovalDecisionRecorded") == []
        fields = dict(re.findall(r'name="(token|action)" value="([^"]+)"', page.text))
        r = await browser.post("/api/workflows/resume", data={**fields, "note": "looks right"})
        assert r.status_code == 303, r.text
    await run_status(db, run_id, "completed")
    (decision,) = await events(db, f"run-{run_id}", "ApprovalDecisionRecorded")
    assert decision["via"] == "confirm-page" and decision["comment"] == "looks right"

    # The plan link too: a page first, the decision on its POST.
    draft = await create_draft(cluster, tenant, "gus@example.com")
    (plan_mail,) = await mail_to(cluster, "gus@example.com", "Approve the plan")
    async with cluster.browser(base=cluster.confirm_url) as browser:
        page = await browser.get(path_of(links(plan_mail)[0]))
        action = f'action="/api/workflows/{draft["workflowId"]}/approve"'
        assert page.status_code == 200 and action in page.text
        assert await events(db, f"workflow-{draft['workflowId']}", "PlanApproved") == []
        token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
        r = await browser.post(f"/api/workflows/{draft['workflowId']}/approve", data={"token": token})
        assert r.status_code == 303
    (approved,) = await events(db, f"workflow-{draft['workflowId']}", "PlanApproved")
    assert approved["via"] == "confirm-page"


# ---- deadlines, reminders, escalation (durable timers fired by the scheduler) ---------------------------


async def test_deadlines_reject_approve_or_escalate_and_reminders_come_first(cluster, db, tenant):
    _, rejected = await start_run(cluster, tenant, approvers=["g1@example.com"], timeout_s=2)
    _, approved = await start_run(cluster, tenant, approvers=["g2@example.com"], timeout_s=2, on_timeout="approve")
    _, escalated = await start_run(cluster, tenant, approvers=["g3@example.com"], timeout_s=4, remind_before_s=[2],
                                   on_timeout="escalate", escalate_to="boss@example.com", escalation_timeout_s=30)
    assert (await run_status(db, rejected, "failed"))["error"] == (
        "Step review failed: Approval timed out: no decision before the deadline")
    assert msgspec.json.decode((await run_status(db, approved, "completed"))["outputs"])["approvedBy"] == [
        "system:timeout"]
    (reminder,) = await mail_to(cluster, "g3@example.com", "Reminder: Approval needed")
    assert "a decision is still needed" in text_of(reminder)
    (escalation,) = await mail_to(cluster, "boss@example.com", "Escalated: Approval needed")
    assert "escalated to you" in text_of(escalation)
    assert (await run_status(db, escalated, "awaiting_approval"))["status"] == "awaiting_approval"
    async with cluster.browser() as browser:
        assert (await browser.get(path_of(links(escalation)[0]))).status_code == 303
    await run_status(db, escalated, "completed")
    kinds = [e["decided_by"] for e in await events(db, f"run-{escalated}", "ApprovalDecisionRecorded")]
    assert kinds == ["boss@example.com"]


# ---- the public API (spec D) --------------------------------------------------------------------------


async def api_key_for(db: asyncpg.Pool, tenant: str, workflow_id: str) -> str:
    async with db.acquire() as conn, conn.transaction():
        key, _ = await apikeys.create_key(conn, tenant_id=tenant, name="site", workflow_ids=[uuid.UUID(workflow_id)],
                                          created_by="alice", burst=100, per_minute=600)
    return key


async def test_the_public_api_shows_pending_approval_data_and_approves_or_rejects(cluster, db, tenant):
    async with cluster.client(tenant) as c:
        r = await c.post("/api/v2/workflows", json={"name": "public-approval", "definition": approval_workflow(
            rows="${inputs.csvData}", display_fields=["customerId", "offer"], require_comment=True,
            allow_bulk_approval=False)})
        wid = r.json()["workflow"]["id"]
    key = await api_key_for(db, tenant, wid)
    api = httpx.AsyncClient(base_url=f"{cluster.base_url}/api/v1/public", timeout=30,
                            headers={"Authorization": f"Bearer {key}"})
    async with api:
        async def execute() -> str:
            r = await api.post(f"/agents/{wid}/execute", json={"input": {"csvData": ROWS, "rows": ROWS}})
            assert r.status_code == 202, r.text
            return r.json()["executionId"]

        first, second = await execute(), await execute()
        await run_status(db, first, "awaiting_approval")
        r = await api.get(f"/executions/{first}/pending-approval")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body == {
            "id": first, "workflowId": wid, "status": "pending_approval",
            "approvalData": {"rows": ROWS, "metadata": {"totalRows": 2, "title": "Review the offers",
                                                        "description": "Check every row", "allowBulkApproval": False,
                                                        "requireComment": True},
                             "displayFields": ["customerId", "offer"]},
            "startedAt": body["startedAt"]}
        assert (await api.get(f"/executions/{first}/status")).json()["status"] == "pending_approval"

        r = await api.post(f"/executions/{first}/approve", json={"comment": "Content approved, looks good"})
        assert r.status_code == 200 and r.json() == {"executionId": first, "status": "approved",
                                                     "message": "Execution approved and will continue"}
        await run_status(db, first, "completed")
        (decision,) = await events(db, f"run-{first}", "ApprovalDecisionRecorded")
        assert decision["via"] == "api" and decision["decided_by"].startswith("api_key:")
        assert decision["comment"] == "Content approved, looks good"

        await run_status(db, second, "awaiting_approval")
        r = await api.post(f"/executions/{second}/reject", json={})
        assert r.status_code == 400 and r.json() == {"message": "A comment is required to reject this step",
                                                     "error": "Bad Request", "statusCode": 400}
        r = await api.post(f"/executions/{second}/reject", json={"comment": 3})
        assert r.status_code == 400 and "comment" in r.json()["message"]
        r = await api.post(f"/executions/{second}/reject", json={"comment": "Content does not meet standards"})
        assert r.json() == {"executionId": second, "status": "rejected", "message": "Execution rejected and stopped"}
        assert (await run_status(db, second, "failed"))["error"].endswith("Content does not meet standards")

        r = await api.post(f"/executions/{first}/approve", json={})
        assert r.status_code == 409 and r.json()["statusCode"] == 409 and "not awaiting" in r.json()["message"]
        for path in (f"/executions/{uuid.uuid4()}/pending-approval", "/executions/nope/approve"):
            r = await (api.get(path) if path.endswith("approval") else api.post(path, json={}))
            assert r.status_code == 404 and r.json()["message"] == "Execution not found"

    # Another tenant's key (or one without the workflow) cannot see or decide it.
    other_tenant = f"t{uuid.uuid4().hex[:12]}"
    async with cluster.client(other_tenant) as c:
        r = await c.post("/api/v2/workflows", json={"name": "x", "definition": approval_workflow()})
    other_key = await api_key_for(db, other_tenant, r.json()["workflow"]["id"])
    async with httpx.AsyncClient(base_url=f"{cluster.base_url}/api/v1/public",
                                 headers={"Authorization": f"Bearer {other_key}"}) as other:
        assert (await other.get(f"/executions/{first}/pending-approval")).status_code == 404


# ---- crash safety and rebuild (these restart the notifier and rebuild read models: keep them last) -------


# Intermittent under the full suite's load (one failure in several full runs, cause not yet found):
# a second attempt, never a third. A deterministic regression still fails both.
@pytest.mark.flaky(reruns=1)
async def test_a_notifier_killed_after_sending_resends_the_same_message_and_loses_nothing(cluster, db, tenant,
                                                                                        tmp_path: Path):
    cluster.procs["notifier"].stop()
    cluster.start("notifier", {"WEFT_FAULT_POINT": "approval_email_sent",
                               "WEFT_FAULT_ONCE_FILE": str(tmp_path / "once")})
    wait_http(cluster.ports["notifier"])
    draft = await create_draft(cluster, tenant, "kim@example.com")
    # Sent, then killed before the sent-record committed: the event was not acked.
    await poll(lambda: asyncio.to_thread(lambda: cluster.procs["notifier"].alive()), lambda alive: not alive)
    (first,) = await mail_to(cluster, "kim@example.com", "Approve the plan")
    cluster.start("notifier")  # the once-file keeps the restarted process from crashing again
    wait_http(cluster.ports["notifier"])
    first, second = await mail_to(cluster, "kim@example.com", "Approve the plan", count=2, timeout=60)
    # At-least-once: the resend is the same message (same Message-ID, same token id), recorded once.
    assert first["Message-ID"] == second["Message-ID"]
    token_ids = [verify_plan_token(cluster.settings, parse_qs(urlsplit(links(m)[0]).query)["token"][0]).token_id
                 for m in (first, second)]
    assert token_ids[0] == token_ids[1]
    # The record is written right after the send (never before it), so it may trail the second file briefly.
    rows = await poll(lambda: db.fetch("SELECT recipient FROM sent_emails WHERE tenant_id = $1", tenant),
                      lambda found: len(found) >= 1, timeout=10)
    assert [r["recipient"] for r in rows] == ["kim@example.com"]
    await asyncio.sleep(2 * float(cluster.env["WEFT_ACK_WAIT_S"]))  # long enough for any further redelivery
    assert len(await mail_to(cluster, "kim@example.com", "Approve the plan")) == 2
    async with cluster.browser() as browser:  # one token: either copy of the link works, once in total
        assert (await browser.get(path_of(links(second)[0]))).status_code == 303
        assert (await browser.get(path_of(links(first)[0]))).status_code == 400
    assert draft["workflowId"] in links(second)[0]


async def test_rebuilt_read_models_spend_the_same_tokens_and_activate_the_same_workflows(cluster, db):
    from libs.readmodels import rebuild

    before_tokens = {r["id"] for r in await db.fetch("SELECT id FROM approval_tokens_used")}
    before_active = {r["id"] for r in await db.fetch("SELECT id FROM workflows WHERE status = 'active'")}
    assert before_tokens and before_active
    async with db.acquire() as conn:
        await rebuild(conn)
    assert {r["id"] for r in await db.fetch("SELECT id FROM approval_tokens_used")} == before_tokens
    assert {r["id"] for r in await db.fetch("SELECT id FROM workflows WHERE status = 'active'")} == before_active


async def test_a_token_id_is_spent_in_the_decisions_own_transaction(isolated_store, tenant):
    """Below the decider: two decisions carrying one token id, appended directly; the second append is
    refused whole (the projection's insert meets the primary key) and leaves nothing behind."""
    from libs.events.errors import DomainError
    from libs.events.schemas import Metadata
    from libs.events.schemas.run import ApprovalDecisionRecorded, RunCreated

    run_id, token_id = uuid.uuid4(), uuid.uuid4()
    meta = Metadata(tenant_id=tenant)
    stream = f"run-{run_id}"
    now = datetime.now(UTC)
    await isolated_store.append(stream, 0, [RunCreated(run_id=run_id, workflow_id=uuid.uuid4(), workflow_version=1,
                                                       definition={"nodes": []}, inputs={}, created_by="u", at=now)],
                                metadata=meta)

    def decision(who: str) -> ApprovalDecisionRecorded:
        return ApprovalDecisionRecorded(run_id=run_id, step_id="s", decision="approve", decided_by=who,
                                        token_id=token_id, at=now)

    await isolated_store.append(stream, 1, [decision("a@example.com")], metadata=meta)
    with pytest.raises(DomainError, match="already used"):
        await isolated_store.append(stream, 2, [decision("b@example.com")], metadata=meta)
    assert len(await isolated_store.read_stream(tenant, stream)) == 2
    async with isolated_store.tenant_transaction(tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM approval_tokens_used WHERE id = $1", token_id) == 1


# ---- issue 15: links that cannot be bent --------------------------------------------------------------


async def test_the_decision_is_signed_so_an_edited_action_decides_nothing(cluster, db, tenant):
    _, run_id = await start_run(cluster, tenant, approvers=["ed@example.com"])
    await run_status(db, run_id, "awaiting_approval")
    (message,) = await mail_to(cluster, "ed@example.com", "Review the offers")
    approve, reject = links(message)
    token_of = lambda url: parse_qs(urlsplit(url).query)["token"][0]  # noqa: E731
    assert token_of(approve) != token_of(reject), "approve and reject links carry different tokens"
    async with cluster.browser() as browser:
        for url, edited in ((approve, "reject"), (reject, "approve")):
            r = await browser.get("/api/workflows/resume", params={"token": token_of(url), "action": edited})
            assert r.status_code == 400 and r.json()["field"] == "action", r.text
        assert await events(db, f"run-{run_id}", "ApprovalDecisionRecorded") == []
        r = await browser.get(path_of(reject))
        assert r.status_code == 303, r.text
    await run_status(db, run_id, "failed")
    (decision,) = await events(db, f"run-{run_id}", "ApprovalDecisionRecorded")
    assert decision["decision"] == "reject"


SCANNERS = (
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
    " Microsoft Office",
    "Outlook-iOS/709.2226530.prod.iphone (3.24.1)",
    "Iframely/1.3.1 (+https://iframely.com/docs/about)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
    " Teams/1.6.00.4472 Electron/8.5.5",
    "Embedly/0.2 (+http://support.embed.ly/)",
)


async def test_known_scanners_and_unfurlers_change_nothing(cluster, db, tenant):
    _, run_id = await start_run(cluster, tenant, approvers=["sc@example.com"])
    await run_status(db, run_id, "awaiting_approval")
    (message,) = await mail_to(cluster, "sc@example.com", "Review the offers")
    approve, reject = links(message)
    for agent in SCANNERS:
        async with cluster.browser(agent=agent) as scanner:
            for url in (approve, reject):
                r = await scanner.get(path_of(url))
                assert r.status_code == 200 and "Nothing was changed" in r.text, (agent, r.status_code)
    assert await events(db, f"run-{run_id}", "ApprovalDecisionRecorded") == []
    assert (await run_status(db, run_id, "awaiting_approval"))["status"] == "awaiting_approval"
    async with cluster.browser() as browser:
        assert (await browser.get(path_of(approve))).status_code == 303
    await run_status(db, run_id, "completed")


async def test_a_decision_cancels_the_pending_deadline_and_reminders(cluster, db, tenant):
    _, run_id = await start_run(cluster, tenant, approvers=["tm@example.com"], timeout_s=3600,
                                remind_before_s=[1800, 600])
    await run_status(db, run_id, "awaiting_approval")

    async def timers() -> list[tuple[str, str]]:
        rows = await db.fetch("SELECT command_type, status FROM timers WHERE tenant_id = $1"
                              " AND envelope->'command'->>'run_id' = $2 ORDER BY command_type, due_at",
                              tenant, run_id)
        return [(r["command_type"], r["status"]) for r in rows]

    assert await timers() == [("ExpireApproval", "pending"), ("RemindApproval", "pending"),
                              ("RemindApproval", "pending")]
    (message,) = await mail_to(cluster, "tm@example.com", "Review the offers")
    async with cluster.browser() as browser:
        assert (await browser.get(path_of(links(message)[0]))).status_code == 303
    await run_status(db, run_id, "completed")
    assert await timers() == [("ExpireApproval", "cancelled"), ("RemindApproval", "cancelled"),
                              ("RemindApproval", "cancelled")]
