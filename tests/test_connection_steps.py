"""Steps that act as the run's user's connected account, run by the real engine against the local fake
Google/Salesforce (OAuth and APIs) and a fake LLM: E's example salesforce.query -> agent -> email.send, A's
example planned offline into gmail.search -> agent -> email.send, Docs and Gmail sends, and the clear error
when the user has no connection."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from libs.adapters import connections, oauth
from libs.adapters.outbound import GuardedHttpClient
from libs.events.schemas import CommandEnvelope
from libs.events.schemas.run import StartRun
from libs.events.settings import load_settings
from libs.security.secrets import SecretBox
from services.executor import integrations
from services.executor.engine import Engine
from services.executor.handlers import handle_run_command
from services.planner.offline import offline_plan
from services.planner.validation import to_definition
from tests.fakes.oauth_server import FakeOAuth
from tests.fakes.openai_server import FakeOpenAI, Reply


@pytest.fixture(scope="module")
def fakes():
    with FakeOAuth() as provider, FakeOpenAI() as llm:
        yield provider, llm


@pytest.fixture
def step_settings(fakes, tmp_path: Path):
    provider, llm = fakes
    env = {**provider.env("google"), **provider.env("salesforce"), "WEFT_OUTBOUND_ALLOW_HOSTS": "127.0.0.1:*",
           "WEFT_LLM_BASE_URL": llm.base_url, "WEFT_MAIL_SINK_DIR": str(tmp_path / "mail")}
    return load_settings(env)


@pytest.fixture
async def engine(isolated_store, step_settings):
    deps = integrations.build_deps(step_settings, isolated_store)
    yield Engine(isolated_store, deps=deps, rng=random.Random(3))
    await integrations.close_deps(deps)


async def connect(store, step_settings, provider: FakeOAuth, tenant: str, user: str, name: str) -> None:
    """The authorization code flow against the fake, through the production client code."""
    p, verifier = oauth.provider(step_settings, name), oauth.new_verifier()
    url = oauth.authorize_url(p, state="s", verifier=verifier, redirect_uri="http://127.0.0.1/cb")
    async with httpx.AsyncClient() as browser:
        code = parse_qs(urlsplit((await browser.get(url)).headers["location"]).query)["code"][0]
    async with GuardedHttpClient(step_settings) as client:
        tokens = await oauth.exchange(client, p, code=code, verifier=verifier, redirect_uri="http://127.0.0.1/cb")
    async with store.tenant_transaction(tenant) as conn:
        await connections.save(conn, SecretBox.from_settings(step_settings), tenant, user, name, tokens)


async def run(store, engine, tenant: str, nodes: list[dict], user: str = "alice"):
    run_id, command_id = uuid.uuid4(), uuid.uuid4()
    envelope = CommandEnvelope(command_id=command_id, tenant_id=tenant, actor=user, correlation_id=str(command_id),
                               command=StartRun(run_id=run_id, workflow_id=uuid.uuid4(), workflow_version=1,
                                                definition={"nodes": nodes}, inputs={}, created_by=user,
                                                at=datetime.now(UTC)), issued_at=datetime.now(UTC))
    await handle_run_command(store, envelope)
    status = await engine.advance(tenant, run_id)
    async with store.tenant_transaction(tenant) as conn:
        row = await conn.fetchrow("SELECT steps::text AS steps, error FROM runs WHERE id = $1", run_id)
    return status, row


async def test_e_example_salesforce_agent_email_runs_end_to_end(isolated_store, engine, step_settings, fakes, tenant):
    provider, llm = fakes
    await connect(isolated_store, step_settings, provider, tenant, "alice", "salesforce")
    llm.script(Reply("Two open opportunities worth 15,000 in total."))
    nodes = [{"id": "step_1", "type": "integration", "action": "salesforce.query",
              "config": {"query": "SELECT Id, Name, Amount FROM Opportunity"}},
             {"id": "step_2", "type": "agent", "input_from": "step_1",
              "config": {"prompt": "Summarise these opportunities: ${step_1.records}"}},
             {"id": "step_3", "type": "integration", "action": "email.send", "input_from": "step_2",
              "config": {"to": "sales@example.com", "subject": "Weekly sales", "body": "${input}"}}]
    status, row = await run(isolated_store, engine, tenant, nodes)
    assert status == "completed", row
    assert "Acme renewal" in llm.requests[-1]["messages"][-1]["content"]  # the records reached the prompt
    assert "attributes" not in row["steps"]
    mail = "".join(p.read_text() for p in Path(step_settings.mail_sink_dir).rglob("*") if p.is_file())
    assert "Two open opportunities" in mail and "sales@example.com" in mail


async def test_a_example_is_planned_into_gmail_search_agent_email_and_runs(isolated_store, engine, step_settings, fakes,
                                                                          tenant):
    provider, llm = fakes
    plan = offline_plan("Send a summary of my unread emails to john@example.com", None)
    assert [s["action"] for s in plan["steps"]] == ["gmail.search", "agent", "email.send"]
    await connect(isolated_store, step_settings, provider, tenant, "alice", "google")
    llm.script(Reply("Ann wants invoice 42 paid; Bob asks about lunch."))
    status, row = await run(isolated_store, engine, tenant, to_definition(plan)["nodes"])
    assert status == "completed", row
    prompt = llm.requests[-1]["messages"][-1]["content"]
    assert "Invoice 42" in prompt and "Lunch?" in prompt and "Old news" not in prompt  # only the unread ones
    mail = "".join(p.read_text() for p in Path(step_settings.mail_sink_dir).rglob("*") if p.is_file())
    assert "invoice 42 paid" in mail and "john@example.com" in mail


async def test_gmail_get_send_and_docs_create(isolated_store, engine, step_settings, fakes, tenant):
    provider, _ = fakes
    await connect(isolated_store, step_settings, provider, tenant, "alice", "google")
    nodes = [{"id": "read", "type": "integration", "action": "gmail.get", "config": {"message_id": "m1"}},
             {"id": "doc", "type": "integration", "action": "docs.create", "input_from": "read",
              "config": {"title": "Invoice notes", "content": "${read.body}"}},
             {"id": "reply", "type": "integration", "action": "gmail.send", "input_from": "read",
              "config": {"to": "${read.from}", "subject": "Re: ${read.subject}", "body": "On it."}}]
    status, row = await run(isolated_store, engine, tenant, nodes)
    assert status == "completed", row
    assert any(d == {"title": "Invoice notes", "text": "Please pay invoice 42 by Friday."}
               for d in provider.documents.values())
    sent = provider.sent[-1].decode()
    assert "To: ann@example.com" in sent and "Subject: Re: Invoice 42" in sent and "X-Weft-Idempotency-Key" in sent


async def test_a_step_without_a_connection_fails_naming_the_provider(isolated_store, engine, tenant):
    nodes = [{"id": "s", "type": "integration", "action": "gmail.search", "config": {"query": "is:unread"}}]
    status, row = await run(isolated_store, engine, tenant, nodes, user="nobody")
    assert status == "failed"
    assert "No usable google connection" in row["error"] and "/api/auth/google/connect" in row["error"], row
