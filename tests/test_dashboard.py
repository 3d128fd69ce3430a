"""The dashboard in a real browser: Playwright driving the system's Chromium against the real stack.

Sign in with a one-time link, plan a workflow and approve it from the emailed link (the mail sink folder),
watch a run's timeline reach completed live, decide a paused step in the inbox, preview a schedule's next
occurrences, replay a dead-lettered webhook delivery, keys shown once, and a second tenant seeing none of it.
Forms refuse bad input next to the field; cookie flags and CSRF are checked. Every page is screenshotted; with
WEFT_SCREENSHOTS=docs/screenshots the pictures the README shows are refreshed, else they go to a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from libs.security.signin_tokens import signin_url
from tests.conftest import Infra, Stack, poll, start_processes
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.test_webhooks import replaced_notifier

CHROMIUM = os.environ.get("WEFT_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
# A person's browser: headless Chromium's own user agent is (rightly) treated as a link scanner by approval links.
AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
SHOTS = Path(os.environ.get("WEFT_SCREENSHOTS") or tempfile.mkdtemp(prefix="weft-screenshots-"))
LINK = re.compile(r"https?://\S+")

async_api = pytest.importorskip("playwright.async_api", reason="BROWSER TESTS SKIPPED: the playwright package "
                                "is missing (pip install -e '.[test]')")
if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"BROWSER TESTS SKIPPED: no Chromium at {CHROMIUM} (apt-get install -y chromium)",
                allow_module_level=True)

pytestmark = pytest.mark.timeout(120)

SLOW = {"nodes": [{"id": "shape", "type": "transform", "config": {"template": {"total": 3}}},
                  {"id": "wait", "type": "delay", "config": {"seconds": 2}, "depends_on": ["shape"]},
                  {"id": "done", "type": "echo", "input_from": "shape", "depends_on": ["wait"]}],
        "concurrency": "unlimited"}
REVIEW = {"nodes": [{"id": "offers", "type": "transform", "config": {"template": {"rows": [
              {"name": "Ada", "amount": 120, "secret": "x"}, {"name": "Bob", "amount": 80, "secret": "y"}]}}},
          {"id": "review", "type": "approval", "input_from": "offers", "config": {
              "title": "Review the offers", "rows": "${input.rows}", "display_fields": ["name", "amount"],
              "approvers": ["ann@example.com"], "require_comment": True}},
          {"id": "after", "type": "echo", "depends_on": ["review"]}], "concurrency": "unlimited"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-mail")


@pytest.fixture(scope="module")
def dash(stack: Stack, infra: Infra, mail_dir: Path) -> Iterator[Stack]:
    """The stack behind a gateway of this module that lets webhooks reach loopback (endpoint URLs are checked
    at creation, docs/decisions/0054), with a notifier of this module: mail into a folder we read, fast retries."""
    logs = infra.root / "dashboard-logs"
    procs, ports = start_processes(infra, ["gateway"], logs, {"WEFT_OUTBOUND_ALLOW_HOSTS": "127.0.0.1:*"})
    gateway = Stack(f"http://127.0.0.1:{ports['gateway']}", stack.settings, {**stack.procs, **procs},
                    {**stack.ports, **ports})
    env = {"WEFT_MAIL_SINK_DIR": str(mail_dir), "WEFT_OUTBOUND_ALLOW_HOSTS": "127.0.0.1:*",
           "WEFT_WEBHOOK_RETRY_DELAYS_S": "0.2,0.2", "WEFT_WEBHOOK_TIMEOUT_S": "2", "WEFT_NAK_DELAY_S": "0.2",
           "WEFT_PUBLIC_BASE_URL": gateway.base_url, "WEFT_SMTP_HOST": ""}
    try:
        with replaced_notifier(stack, infra, env, logs) as own:
            own.start()
            yield gateway
    finally:
        procs["gateway"].stop()


@pytest.fixture(scope="module")
async def browser(dash: Stack) -> AsyncIterator[object]:
    async with async_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        await chromium.close()


class Person:
    """One signed-in person: a browser context (its own cookies) on a tenant."""

    def __init__(self, stack: Stack, page, tenant: str, email: str):
        self.stack, self.page, self.tenant, self.email = stack, page, tenant, email

    def url(self, path: str) -> str:
        return self.stack.base_url + path

    async def goto(self, path: str):
        return await self.page.goto(self.url(path))

    async def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def sign_in(browser, stack: Stack, tenant: str, user: str = "ann", email: str = "ann@example.com") -> Person:
    context = await browser.new_context(user_agent=AGENT, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = await context.new_page()
    await page.goto(signin_url(stack.settings, stack.base_url, tenant, user, email=email))
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/dashboard/workflows")
    return Person(stack, page, tenant, email)


@pytest.fixture(scope="module")
def tenant_a() -> str:
    return f"dash{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
async def ann(browser, dash: Stack, tenant_a: str) -> AsyncIterator[Person]:
    person = await sign_in(browser, dash, tenant_a)
    yield person
    await person.page.context.close()


async def submit(page, button) -> int:
    """Click a form's button and wait for the page it answers with; that answer's status."""
    async with page.expect_navigation() as navigation:
        await button.click()
    return (await navigation.value).status


async def create_from_definition(person: Person, name: str, definition: dict) -> str:
    await person.goto("/dashboard/workflows")
    await person.page.get_by_label("Name", exact=True).fill(name)
    await person.page.get_by_label("Definition (JSON").fill(json.dumps(definition))
    await person.page.get_by_role("button", name="Create", exact=True).click()
    await person.page.wait_for_url(re.compile(r".*/dashboard/workflows/[0-9a-f-]{36}$"))
    return person.page.url.rsplit("/", 1)[1]


async def run_now(person: Person, workflow_id: str) -> str:
    await person.goto(f"/dashboard/workflows/{workflow_id}")
    await person.page.get_by_role("button", name="Run now").click()
    await person.page.wait_for_url(re.compile(r".*/dashboard/runs/[0-9a-f-]{36}$"))
    return person.page.url.rsplit("/", 1)[1]


# ---- sign-in, cookies, CSRF -----------------------------------------------------------------------------


async def test_sign_in_sets_a_scoped_httponly_samesite_cookie_and_the_link_works_once(browser, dash, ann):
    assert await ann.page.locator("h1").inner_text() == "Workflows"
    cookies = {c["name"]: c for c in await ann.page.context.cookies()}
    session = cookies["weft_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax" and session["path"] == "/dashboard"
    assert await ann.page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    await ann.page.keyboard.press("Tab")  # keyboard first: the skip link, then the navigation
    assert await ann.page.evaluate("document.activeElement.textContent") == "Skip to content"
    await ann.shot("workflows")

    link = signin_url(dash.settings, dash.base_url, ann.tenant, "ann", email=ann.email)
    other = await browser.new_context(user_agent=AGENT)
    page = await other.new_page()
    for attempt in range(2):
        await page.goto(link)
        await page.get_by_role("button", name="Sign in").click()
    assert "already used" in await page.locator("#signin-error").inner_text()
    await other.close()


async def test_forms_without_the_csrf_token_change_nothing_and_the_api_ignores_the_cookie(dash, ann):
    request = ann.page.context.request  # the signed-in person's cookies, but no page token
    r = await request.post(ann.url("/dashboard/workflows"), form={"kind": "goal", "goal": "Say hello to the team"})
    assert r.status == 403 and "security token" in await r.text()
    r = await request.post(ann.url("/dashboard/workflows"),
                           form={"kind": "goal", "goal": "Say hello to the team", "csrf_token": "forged"})
    assert r.status == 403
    r = await request.get(ann.url("/api/v2/workflows"))  # the cookie is no API credential
    assert r.status == 401
    async with httpx.AsyncClient(base_url=dash.base_url) as c:
        r = await c.get("/api/v2/workflows/health")
        assert "set-cookie" not in r.headers
        r = await c.get("/dashboard/workflows", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/signin?next=")
        r = await c.get("/dashboard/signin")
        assert r.status_code == 200 and "weft_signin_csrf" in r.headers["set-cookie"]


async def test_bad_input_is_refused_next_to_the_field(ann):
    page = ann.page
    await ann.goto("/dashboard/workflows")
    await page.get_by_label("Name", exact=True).fill("Broken")
    await page.get_by_label("Definition (JSON").fill("{not json")
    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await page.get_by_role("button", name="Create", exact=True).click()
    assert (await answer.value).status == 400
    assert "definition is not valid JSON" in await page.locator("#definition-error").inner_text()
    await page.get_by_label("Definition (JSON").fill('{"nodes": [{"id": "a", "type": "echo", "depends_on": ["ghost"]}]}')
    assert await submit(page, page.get_by_role("button", name="Create", exact=True)) == 400
    assert "unknown step 'ghost'" in await page.locator("#definition-error").inner_text()
    await page.get_by_label("Goal, in plain language").fill("hi")
    assert await submit(page, page.get_by_role("button", name="Plan it")) == 400
    assert "goal must be" in await page.locator("#goal-error").inner_text()
    await ann.shot("workflows-refused")
    r = await page.context.request.get(ann.url("/dashboard/runs/not-a-uuid"))
    assert r.status == 404
    r = await page.context.request.get(ann.url("/dashboard/history?before=-1"))
    assert r.status == 400


# ---- workflows, plan approval by email, live runs -------------------------------------------------------


def _mail_links(mail_dir: Path, to: str, subject: str = "Approve the plan") -> list[str]:
    found = []
    for path in sorted(mail_dir.glob("*.eml")):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        if message["To"] == to and subject in (message["Subject"] or ""):
            found += LINK.findall(message.get_body(("plain",)).get_content())
    return found


async def test_a_goal_is_planned_and_its_emailed_link_lands_on_the_page_showing_the_decision(ann, mail_dir):
    page = ann.page
    await ann.goto("/dashboard/workflows")
    await page.get_by_label("Goal, in plain language").fill("Summarise sales and email team@example.com")
    await page.get_by_role("button", name="Plan it").click()
    await page.wait_for_url(re.compile(r".*/dashboard/workflows/[0-9a-f-]{36}$"))
    workflow_id = page.url.rsplit("/", 1)[1]
    assert "draft" in await page.locator("main p").first.inner_text()
    assert await page.locator("svg.graph g.node").count() >= 1
    await ann.shot("workflow-draft")

    async def links() -> list[str]:
        return [u for u in _mail_links(mail_dir, ann.email) if f"/api/workflows/{workflow_id}/approve" in u]

    (link,) = await poll(links, lambda found: len(found) == 1, timeout=20)
    await page.goto(link)  # the console contract's link: 303 to the dashboard's page of the workflow
    await page.wait_for_url(f"**/dashboard/workflows/{workflow_id}")
    decided = await page.locator("#decisions").inner_text()
    assert "approved by ann@example.com via email" in decided
    assert "active" in await page.locator("main p").first.inner_text()
    await ann.shot("workflow-approved")


async def test_an_edited_draft_shows_its_plan_diff_and_is_rejected_from_the_page(dash, ann):
    page = ann.page
    await ann.goto("/dashboard/workflows")
    await page.get_by_label("Goal, in plain language").fill("Write a haiku about queues")
    await page.get_by_role("button", name="Plan it").click()
    await page.wait_for_url(re.compile(r".*/dashboard/workflows/[0-9a-f-]{36}$"))
    workflow_id = page.url.rsplit("/", 1)[1]
    async with dash.client(ann.tenant, "ann") as api:  # a second plan version, edited through the console API
        r = await api.post(f"/api/workflows/{workflow_id}/steps", json={"steps": [
            {"id": "note", "action": "transform", "config": {"template": {"text": "queues"}}},
            {"id": "say", "action": "echo", "input_from": "note", "config": {"message": "done"}}]})
        assert r.status_code == 200, r.text
    await ann.goto(f"/dashboard/workflows/{workflow_id}?from=1&to=2")
    changes = await page.locator("#h-versions ~ ul").inner_text()
    assert "added step note" in changes and "added step say" in changes and "removed step" in changes
    await ann.shot("workflow-diff")
    assert await submit(page, page.get_by_role("button", name="Reject draft")) == 200
    assert "Plan rejected by ann" in await page.locator("#decisions").inner_text()
    assert "archived" in await page.locator("main p").first.inner_text()
    assert await page.get_by_role("button", name=re.compile("Approve plan")).count() == 0


async def test_a_run_timeline_reaches_completed_live_and_the_slider_shows_the_past(ann):
    page = ann.page
    workflow_id = await create_from_definition(ann, f"Slow {uuid.uuid4().hex[:6]}", SLOW)
    await run_now(ann, workflow_id)
    status = page.locator("#run-status")
    assert "completed" not in await status.inner_text()  # the delay step is still waiting: what follows is live
    await page.locator("#timeline li[data-type=workflow_complete]").wait_for(timeout=20_000)
    assert "Run completed" in await page.locator("#timeline").inner_text()
    await page.wait_for_function("document.querySelector('#run-status').innerText.includes('completed')")
    assert await page.locator("#timeline li").count() >= 5
    await ann.shot("run")
    slider = page.get_by_label(re.compile("Show the run as of event"))
    await slider.fill("1")  # the run right after RunCreated
    await page.locator("#asof-note").wait_for()
    assert "completed" not in await page.locator("#run-status").inner_text()
    await ann.shot("run-as-of")
    await ann.goto("/dashboard/runs?status=completed")
    assert workflow_id in await page.content()
    await ann.shot("runs")


async def test_a_paused_step_is_decided_in_the_inbox_with_a_comment(ann):
    page = ann.page
    workflow_id = await create_from_definition(ann, f"Offers {uuid.uuid4().hex[:6]}", REVIEW)
    run_id = await run_now(ann, workflow_id)
    await page.wait_for_function("document.querySelector('#run-status').innerText.includes('awaiting')")
    await ann.goto("/dashboard/inbox")
    section = page.locator(f"#step-{run_id}-review")
    table = await section.locator("table").inner_text()
    assert "Ada" in table and "120" in table and "secret" not in table  # display fields only
    await ann.shot("inbox")
    assert await submit(page, section.get_by_role("button", name="Reject")) == 400  # no comment: refused
    assert "comment is required" in await page.locator(f"#step-{run_id}-review .error").inner_text()
    section = page.locator(f"#step-{run_id}-review")
    await section.get_by_label(re.compile("Comment")).fill("Amounts checked")
    await section.get_by_role("button", name="Approve").click()
    await page.wait_for_url("**/dashboard/inbox")
    assert await page.locator(f"#step-{run_id}-review").count() == 0
    await ann.goto(f"/dashboard/runs/{run_id}")
    await page.locator("#timeline li[data-type=workflow_complete]").wait_for()
    timeline = await page.locator("#timeline").inner_text()
    assert "ApprovalDecisionRecorded (review)" in timeline and "Run completed" in timeline
    await ann.goto(f"/dashboard/workflows/{workflow_id}")
    assert "step review: approved by ann@example.com via dashboard" in await page.locator("#step-decisions").inner_text()


async def test_a_step_approved_from_its_emailed_link_lands_on_the_workflow_showing_the_decision(ann, mail_dir):
    page = ann.page
    workflow_id = await create_from_definition(ann, f"Emailed {uuid.uuid4().hex[:6]}", REVIEW)
    run_id = await run_now(ann, workflow_id)

    async def links() -> list[str]:
        return [u for u in _mail_links(mail_dir, ann.email, "Review the offers")
                if "action=approve" in u and run_id in _run_of(u)]

    (link,) = await poll(links, lambda found: len(found) == 1, timeout=20)
    await page.goto(link)  # GET /api/workflows/resume?token=...&action=approve: the step requires a comment,
    await page.locator('textarea[name="note"]').fill("Amounts checked")  # so the link asks for it first
    await page.get_by_role("button", name="Approve").click()
    await page.wait_for_url(f"**/dashboard/workflows/{workflow_id}")
    decided = await page.locator("#step-decisions").inner_text()
    assert "step review: approved by ann@example.com via confirm-page" in decided
    await ann.shot("workflow-step-decided")


def _run_of(link: str) -> str:
    """The run an approval link is bound to (its token's claims, read without checking: only to pick the mail)."""
    token = parse_qs(urlsplit(link).query)["token"][0]
    return str(jwt.decode(token, options={"verify_signature": False}).get("rid", ""))


# ---- schedules, webhooks, keys, assistant, history -------------------------------------------------------


async def test_a_schedule_previews_its_next_occurrences_in_its_zone(ann):
    page = ann.page
    workflow_id = await create_from_definition(ann, f"Nightly {uuid.uuid4().hex[:6]}", SLOW)
    await ann.goto("/dashboard/schedules")
    await page.get_by_label("Workflow").select_option(workflow_id)
    await page.get_by_label("Cron expression").fill("61 * * * *")
    assert await submit(page, page.get_by_role("button", name="Create schedule")) == 400
    assert "minute" in await page.locator("#cron_expression-error").inner_text()
    await page.get_by_label("Time zone").fill("Europe/Berlin")
    await page.get_by_label("Cron expression").fill("30 2 * * *")
    await page.locator("#preview ol.upcoming li").nth(4).wait_for()  # live preview while typing (htmx)
    items = await page.locator("#preview ol.upcoming li").all_inner_texts()
    assert len(items) == 5 and all("02:30:00 CE" in i for i in items)
    await page.get_by_role("button", name="Create schedule").click()
    await page.wait_for_url(re.compile(r".*/dashboard/schedules/[0-9a-f-]{36}/[0-9a-f-]{36}$"))
    assert await page.locator("#preview ol.upcoming li").count() == 5
    assert "No occurrence yet" in await page.locator("table").last.inner_text()
    await ann.shot("schedule")
    await ann.goto("/dashboard/schedules")
    await ann.shot("schedules")


async def test_a_dead_lettered_delivery_is_replayed_from_the_page(ann, receiver):
    page = ann.page
    receiver.mode = "fail"
    await ann.goto("/dashboard/webhooks")
    await page.get_by_label("URL").fill(receiver.url("/ok"))
    assert await submit(page, page.get_by_role("button", name="Add endpoint")) == 201
    assert await page.locator("#webhook-secret").inner_text()
    workflow_id = await create_from_definition(ann, f"Hooked {uuid.uuid4().hex[:6]}", {"nodes": [
        {"id": "only", "type": "echo", "config": {"message": "hi"}}]})
    run_id = await run_now(ann, workflow_id)

    async def dead_rows() -> int:
        await ann.goto("/dashboard/webhooks?status=dead")
        return await page.locator(f"tr:has(a[href='/dashboard/runs/{run_id}'])").count()

    assert await poll(dead_rows, lambda n: n >= 2, timeout=30, every=0.5)  # started and completed
    receiver.mode = None
    assert await submit(page, page.get_by_role("button", name=re.compile("^Replay delivery")).first) == 200
    assert "replayed" in await page.locator("p.notice").inner_text()

    async def delivered() -> int:
        await ann.goto("/dashboard/webhooks?status=delivered")
        return await page.locator(f"tr:has(a[href='/dashboard/runs/{run_id}'])").count()

    assert await poll(delivered, lambda n: n == 1, timeout=20, every=0.5)
    await ann.goto("/dashboard/webhooks")
    await ann.shot("webhooks")


async def test_an_api_key_is_shown_once_then_deactivated_and_rotated(ann):
    page = ann.page
    await create_from_definition(ann, f"Keyed {uuid.uuid4().hex[:6]}", SLOW)
    await ann.goto("/dashboard/keys")
    assert await submit(page, page.get_by_role("button", name="Create key")) == 400  # no name, no workflow
    assert "name" in await page.locator("#name-error").inner_text()
    await page.get_by_label("Name").fill("CI key")
    await page.locator("input[name=workflow_ids]").first.check()
    assert await submit(page, page.get_by_role("button", name="Create key")) == 201
    key = await page.locator("#new-key").inner_text()
    assert key.startswith("wk_") or len(key) > 20
    await ann.shot("keys")
    await ann.goto("/dashboard/keys")
    assert key not in await page.content()  # shown once
    assert await submit(page, page.get_by_role("button", name="Rotate CI key")) == 200
    rotated = await page.locator("#new-key").inner_text()
    assert rotated != key
    assert await submit(page, page.get_by_role("button", name="Deactivate CI key")) == 200
    assert "inactive" in await page.locator("tr", has_text="CI key").inner_text()


async def test_the_assistant_plans_and_runs_and_history_finds_it(ann):
    page = ann.page
    await ann.goto("/dashboard/assistant")
    await ann.shot("assistant")
    await page.get_by_label("What should Weft do?").fill("Record that the nightly build passed")
    await page.get_by_role("button", name="Plan and run").click()
    await page.wait_for_url(re.compile(r".*/dashboard/(runs|workflows)/[0-9a-f-]{36}$"))
    if "/runs/" in page.url:
        await page.wait_for_function("document.querySelector('#run-status').innerText.match(/completed|failed/)")
    await ann.goto("/dashboard/history?q=RunCreated")
    assert await page.locator("tbody tr").count() >= 1 and "RunCreated" in await page.locator("tbody").inner_text()
    await ann.shot("history")
    await ann.goto("/dashboard/")
    assert await page.locator("svg.chart").count() == 2
    await ann.shot("overview")


# ---- tenant isolation -------------------------------------------------------------------------------------


async def test_another_tenants_user_sees_none_of_it(browser, dash, ann):
    page = ann.page
    await ann.goto("/dashboard/runs")
    run_href = await page.locator("a[href^='/dashboard/runs/']").first.get_attribute("href")
    workflow_href = await page.locator("a[href^='/dashboard/workflows/']").first.get_attribute("href")
    bea = await sign_in(browser, dash, f"other{uuid.uuid4().hex[:8]}", "bea", "bea@example.com")
    try:
        assert "No workflows" in await bea.page.locator("tbody").inner_text()
        for path in (run_href, workflow_href, f"{run_href}/events", f"{run_href}/at?version=1"):
            r = await bea.page.context.request.get(bea.url(path))
            assert r.status == 404, path
        for path, empty in (("/dashboard/runs", "No runs match"), ("/dashboard/inbox", "Nothing is waiting"),
                            ("/dashboard/schedules", "No schedules"), ("/dashboard/webhooks", "No endpoints"),
                            ("/dashboard/keys", "No API keys"), ("/dashboard/history", "No events")):
            await bea.goto(path)
            assert empty in await bea.page.locator("main").inner_text(), path
    finally:
        await bea.page.context.close()


def test_no_dashboard_page_failed_on_our_side(dash, infra):
    """Every refusal above was a 4xx page: the gateway logged no unexpected dashboard error (a 500)."""
    log = (infra.root / "dashboard-logs" / "gateway.log").read_text(errors="replace")
    assert '"event": "dashboard_error"' not in log
