"""Integration steps and the guarded outbound client against real servers on loopback: an HTTP receiver that
honours Idempotency-Key, an aiosmtpd SMTP server, the fake OpenAI server and (agents) the real Postgres.

Every outbound dial goes through a spy on httpx's transport that refuses anything but 127.0.0.1, so no test
(not even one run against a deliberately broken guard) connects to another address.
"""

from __future__ import annotations

import time
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from aiosmtpd.controller import Controller

from deploy.local.embedded import free_port
from libs.adapters.outbound import GuardedHttpClient, OutboundError, check_destination
from libs.events.settings import Settings, load_settings
from services.executor.integrations import build_deps, close_deps, register_agent
from services.executor.integrations.for_each import MAX_ROWS
from services.executor.interpolation import MissingPath
from services.executor.steps import REGISTRY, StepCall, StepDeps, StepError, StepResult
from tests.fakes.http_receiver import HttpReceiver
from tests.fakes.openai_server import FakeOpenAI, Reply, Status
from tests.fakes.smtp_server import Inbox, smtp_server

RUN = uuid.UUID("00000000-0000-4000-8000-00000000abcd")
PUBLIC_IP = "93.184.216.34"  # a public address: the spy records the dial and refuses it


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"outbound_allow_hosts": "127.0.0.1:*", "outbound_timeout_s": 5.0,
                              "outbound_max_bytes": 100_000, "llm_base_url": ""}
    return load_settings({}, **(values | overrides))


def step_call(step_id: str = "s1", attempt: int = 1, tenant: str = "tintegrations") -> StepCall:
    return StepCall(tenant_id=tenant, run_id=RUN, step_id=step_id, attempt=attempt)


async def run_step(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """Look the step up the way the engine does: integrations by action, the rest by type."""
    key = node.get("action") if node["type"] == "integration" else node["type"]
    return await REGISTRY[key](node, context, call, deps)


def integration(action: str, **config: Any) -> dict[str, Any]:
    return {"id": "s1", "type": "integration", "action": action, "config": config}


class ScriptedResolver:
    """Answers from a script; each host may have a sequence of answers (the last one repeats)."""

    def __init__(self, answers: dict[str, list[str] | list[list[str]]]) -> None:
        self.answers = {h: (a if a and isinstance(a[0], list) else [a]) for h, a in answers.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        sequence = self.answers[host]
        return sequence.pop(0) if len(sequence) > 1 else sequence[0]


@dataclass(frozen=True)
class Dial:
    host: str
    port: int | None
    headers: dict[str, str]
    sni: str | None


@pytest.fixture(autouse=True)
def dials(monkeypatch: pytest.MonkeyPatch) -> list[Dial]:
    """Every connection httpx is asked to make; only 127.0.0.1 is really dialled."""
    seen: list[Dial] = []
    real = httpx.AsyncHTTPTransport.handle_async_request

    async def spy(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        sni = request.extensions.get("sni_hostname")
        seen.append(Dial(request.url.host, request.url.port, dict(request.headers), sni))
        if request.url.host != "127.0.0.1":
            raise httpx.ConnectError(f"test spy refused to dial {request.url.host}", request=request)
        return await real(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", spy)
    return seen


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as rx:
        yield rx


@asynccontextmanager
async def deps_for(settings: Settings, resolver: ScriptedResolver | None = None, store: Any = None
                   ) -> AsyncIterator[StepDeps]:
    deps = build_deps(settings, store, resolver=resolver)
    try:
        yield deps
    finally:
        await close_deps(deps)


# --- the guard ------------------------------------------------------------------------------------------


async def test_an_allow_listed_address_is_dialled_by_ip_with_the_original_host_header(receiver, dials):
    resolver = ScriptedResolver({"api.weft-test.example": ["127.0.0.1"]})
    async with GuardedHttpClient(make_settings(), resolver) as guard:
        response = await guard.request("POST", receiver.url("/effect", host="api.weft-test.example"),
                                       json={"n": 1}, headers={"Host": "evil.example"})
    assert response.status == 201 and response.json()["received"] == {"n": 1}
    assert resolver.asked == ["api.weft-test.example"]
    assert [d.host for d in dials] == ["127.0.0.1"]
    # The receiver got the name, not the IP, and the caller's own Host header did not survive.
    (request,) = receiver.requests
    assert request.headers["host"] == f"api.weft-test.example:{receiver.port}"
    assert request.raw_head.count(b"Host:") + request.raw_head.count(b"host:") == 1
    assert response.elapsed_ms > 0


async def test_a_public_address_passes_and_https_is_pinned_with_the_name_for_sni(dials):
    # The second answer would rebind the name to loopback; the client resolves once and dials the first.
    resolver = ScriptedResolver({"api.weft-test.example": [[PUBLIC_IP], ["127.0.0.1"]]})
    async with GuardedHttpClient(make_settings(outbound_allow_hosts=""), resolver) as guard:
        with pytest.raises(OutboundError) as caught:
            await guard.request("GET", "https://api.weft-test.example/v1/things?q=1")
    assert caught.value.retryable and "spy refused" in str(caught.value)
    assert resolver.asked == ["api.weft-test.example"]
    assert dials == [Dial(PUBLIC_IP, None, dials[0].headers, "api.weft-test.example")]
    assert dials[0].headers["host"] == "api.weft-test.example"


@pytest.mark.parametrize("address", [
    "10.0.0.1", "172.16.5.4", "192.168.1.10", "127.0.0.1", "127.8.8.8", "169.254.169.254", "0.0.0.0",
    "100.64.0.1", "224.0.0.251", "255.255.255.255", "::1", "fc00::1", "fe80::1", "::", "ff02::1",
    "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "2002:a00:1::",
    "fec0::1", "feff:ffff::1", "192.88.99.1", "192.88.99.255",  # site-local; the 6to4 relay anycast (issue 15)
])
async def test_a_non_public_address_is_refused_before_any_connection(address, receiver, dials):
    resolver = ScriptedResolver({"inside.weft-test.example": [address]})
    async with GuardedHttpClient(make_settings(outbound_allow_hosts=""), resolver) as guard:
        with pytest.raises(OutboundError) as caught:
            await guard.request("POST", receiver.url("/effect", host="inside.weft-test.example"), json={})
    assert "blocked" in str(caught.value) and not caught.value.retryable
    assert resolver.asked == ["inside.weft-test.example"]
    assert dials == [] and receiver.requests == []


async def test_an_allow_listed_host_is_open_on_the_ports_it_names_and_never_on_a_platform_port(receiver, dials):
    """Issue 15: with 127.0.0.1 allowed, a step read the relay's internal port. A bare host now means its
    default ports (80, 443), `host:port` that port, `host:*` any port; no entry opens a platform port."""
    url = receiver.url("/text")
    allowed_here = (f"127.0.0.1:{receiver.port}", "127.0.0.1:*", f"[::1]:1,127.0.0.1:{receiver.port}")
    for entry in allowed_here:
        async with GuardedHttpClient(make_settings(outbound_allow_hosts=entry)) as guard:
            assert (await guard.request("GET", url)).status == 200, entry
    refused = {
        "127.0.0.1": "port(s) 80, 443 only",
        "127.0.0.1:81": "port(s) 81 only",
        "localhost:*": "only public addresses",
    }
    for entry, words in refused.items():
        async with GuardedHttpClient(make_settings(outbound_allow_hosts=entry)) as guard:
            with pytest.raises(OutboundError, match=re.escape(words)):
                await guard.request("GET", url)
    platform = (make_settings(port=receiver.port), make_settings(platform_ports=f"5,{receiver.port}"),
                make_settings(database_url=f"postgresql://u@127.0.0.1:{receiver.port}/weft"),
                make_settings(nats_url=f"nats://127.0.0.1:4222,nats://127.0.0.1:{receiver.port}"))
    for settings in platform:
        for entry in ("127.0.0.1:*", f"127.0.0.1:{receiver.port}"):
            async with GuardedHttpClient(msgspec.structs.replace(settings, outbound_allow_hosts=entry)) as guard:
                with pytest.raises(OutboundError, match="platform port"):
                    await guard.request("GET", url)
    assert len(receiver.requests) == len(allowed_here)


async def test_check_destination_refuses_what_an_attempt_would_and_passes_what_does_not_resolve():
    settings = make_settings(outbound_allow_hosts="")
    for url in ("http://127.0.0.1:8001/x", "http://169.254.169.254/latest/meta-data/", "http://[fec0::1]/",
                "http://192.88.99.7/", "https://10.0.0.1/", "http://[::ffff:127.0.0.1]/"):
        with pytest.raises(OutboundError, match="blocked"):
            await check_destination(settings, url)
    await check_destination(settings, "https://no-such-host.weft-test.invalid/hook")  # re-checked per attempt
    await check_destination(make_settings(outbound_allow_hosts="127.0.0.1:8001"), "http://127.0.0.1:8001/x")


async def test_one_private_answer_among_public_ones_blocks_the_host(dials):
    resolver = ScriptedResolver({"mixed.weft-test.example": [PUBLIC_IP, "10.1.2.3"]})
    async with GuardedHttpClient(make_settings(outbound_allow_hosts=""), resolver) as guard:
        with pytest.raises(OutboundError, match="10.1.2.3"):
            await guard.request("GET", "http://mixed.weft-test.example/")
    assert dials == []


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[::1]:8080/",
                                 "http://[::ffff:10.0.0.1]/", "https://10.0.0.1/"])
async def test_an_ip_literal_is_checked_without_resolving(url, dials):
    resolver = ScriptedResolver({})
    async with GuardedHttpClient(make_settings(outbound_allow_hosts=""), resolver) as guard:
        with pytest.raises(OutboundError, match="blocked"):
            await guard.request("GET", url)
    assert resolver.asked == [] and dials == []


async def test_the_system_resolver_is_the_default_and_localhost_is_refused(receiver, dials):
    async with GuardedHttpClient(make_settings(outbound_allow_hosts="")) as guard:
        with pytest.raises(OutboundError, match="blocked"):
            await guard.request("GET", receiver.url("/effect", host="localhost"))
    assert dials == [] and receiver.requests == []


async def test_an_allow_listed_host_name_may_resolve_inward(receiver, dials):
    resolver = ScriptedResolver({"intranet.weft-test.example": ["127.0.0.1"]})
    settings = make_settings(outbound_allow_hosts="other.example, intranet.weft-test.example:*")
    async with GuardedHttpClient(settings, resolver) as guard:
        response = await guard.request("GET", receiver.url("/text", host="intranet.weft-test.example"))
    assert response.status == 200 and response.text == "plain words"
    assert receiver.requests[0].headers["host"] == f"intranet.weft-test.example:{receiver.port}"


@pytest.mark.parametrize("url", ["ftp://example.com/file", "file:///etc/passwd", "gopher://example.com/"])
async def test_only_http_and_https_are_allowed(url, dials):
    async with GuardedHttpClient(make_settings(), ScriptedResolver({})) as guard:
        with pytest.raises(OutboundError, match="scheme") as caught:
            await guard.request("GET", url)
    assert not caught.value.retryable and dials == []


async def test_redirects_are_returned_not_followed(receiver, dials):
    async with GuardedHttpClient(make_settings(), ScriptedResolver({})) as guard:
        response = await guard.request(
            "GET", receiver.url("/status/302?location=http://169.254.169.254/latest/meta-data/"))
    assert response.status == 302 and response.headers["location"] == "http://169.254.169.254/latest/meta-data/"
    assert len(receiver.requests) == 1 and [d.host for d in dials] == ["127.0.0.1"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
async def test_an_oversize_response_is_cut(chunked, receiver):
    settings = make_settings(outbound_max_bytes=1000)
    async with GuardedHttpClient(settings, ScriptedResolver({})) as guard:
        exact = await guard.request("GET", receiver.url(f"/big?n=1000&chunked={int(chunked)}"))
        with pytest.raises(OutboundError, match="response too large") as caught:
            await guard.request("GET", receiver.url(f"/big?n=50000&chunked={int(chunked)}"))
    assert len(exact.body) == 1000
    assert not caught.value.retryable


async def test_the_whole_request_is_bounded_in_time_and_a_timeout_is_retryable(receiver):
    settings = make_settings(outbound_timeout_s=0.3)
    async with GuardedHttpClient(settings, ScriptedResolver({})) as guard:
        started = time.monotonic()
        with pytest.raises(OutboundError, match="timed out") as caught:
            await guard.request("GET", receiver.url("/slow?s=5"))
        elapsed = time.monotonic() - started
    assert caught.value.retryable and elapsed < 2.0


async def test_a_refused_connection_is_retryable():
    async with GuardedHttpClient(make_settings(), ScriptedResolver({})) as guard:
        with pytest.raises(OutboundError) as caught:
            await guard.request("GET", f"http://127.0.0.1:{free_port()}/")
    assert caught.value.retryable and "ConnectError" in str(caught.value)


# --- http.request ---------------------------------------------------------------------------------------


async def test_http_request_sends_the_idempotency_key_and_a_redelivery_has_one_effect(receiver):
    node = integration("http.request", method="POST", url=receiver.url("/effect"),
                       headers={"X-Trace": "${inputs.trace}", "Idempotency-Key": "forged"},
                       body={"order": "${inputs.order}"})
    context = {"inputs": {"order": 42, "trace": "t-1"}}
    async with deps_for(make_settings()) as deps:
        first = await run_step(node, context, step_call(), deps)
        again = await run_step(node, context, step_call(), deps)  # the same attempt, redelivered
        retry = await run_step(node, context, step_call(attempt=2), deps)
    assert first == again and first["status"] == 201
    assert first["body"] == {"effect": 1, "received": {"order": 42}}
    assert first["headers"]["content-type"] == "application/json"
    assert retry["body"]["effect"] == 2 and receiver.effects == 2
    keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert keys == [f"{RUN}:s1:1", f"{RUN}:s1:1", f"{RUN}:s1:2"]
    assert receiver.requests[0].headers["x-trace"] == "t-1"
    assert receiver.requests[0].headers["content-type"] == "application/json"


async def test_http_request_sends_a_string_body_as_is_and_returns_text(receiver):
    async with deps_for(make_settings()) as deps:
        posted = await run_step(integration("http.request", method="PUT", url=receiver.url("/effect"),
                                            body="raw ${inputs.word}"), {"inputs": {"word": "text"}}, step_call(), deps)
        text = await run_step(integration("http.request", method="GET", url=receiver.url("/text")), {},
                              step_call("s2"), deps)
    assert receiver.requests[0].body == b"raw text" and posted["body"]["received"] == "raw text"
    assert text["body"] == "plain words" and receiver.requests[1].method == "GET"


@pytest.mark.parametrize(("status", "expected", "ok", "retryable"), [
    (201, None, True, None),
    (404, 404, True, None),
    (201, [200, 202], False, False),
    (404, None, False, False),
    (302, None, False, False),
    (429, None, False, True),
    (503, None, False, True),
    (500, [200], False, True),
])
async def test_http_request_expected_status_and_retryability(status, expected, ok, retryable, receiver):
    config: dict[str, Any] = {"method": "GET", "url": receiver.url(f"/status/{status}")}
    if expected is not None:
        config["expected_status"] = expected
    async with deps_for(make_settings()) as deps:
        if ok:
            result = await run_step(integration("http.request", **config), {}, step_call(), deps)
            assert result["status"] == status and result["body"] == {"status": status}
            return
        with pytest.raises(StepError, match=f"answered {status}") as caught:
            await run_step(integration("http.request", **config), {}, step_call(), deps)
    assert caught.value.retryable is retryable


async def test_http_request_to_a_blocked_address_fails_without_retry(receiver, dials):
    async with deps_for(make_settings(outbound_allow_hosts="")) as deps:
        with pytest.raises(StepError, match="blocked") as caught:
            await run_step(integration("http.request", method="GET", url=receiver.url("/effect")), {},
                           step_call(), deps)
    assert not caught.value.retryable and dials == [] and receiver.requests == []


async def test_http_request_rejects_a_bad_method_and_a_missing_path():
    async with deps_for(make_settings()) as deps:
        with pytest.raises(StepError, match="config.method"):
            await run_step(integration("http.request", method="TRACE", url="http://127.0.0.1/"), {}, step_call(), deps)
        with pytest.raises(MissingPath):
            await run_step(integration("http.request", method="GET", url="${inputs.nope}"), {"inputs": {}},
                           step_call(), deps)


# --- condition ------------------------------------------------------------------------------------------

CONTEXT = {
    "input": {"status": "open", "count": 7, "tags": ["vip", "eu"], "when": "2026-05-01", "empty": None},
    "inputs": {"limit": 5, "status": "closed"},
    "fetch": {"status": 200},
}


@pytest.mark.parametrize(("field", "operator", "value", "passed", "actual"), [
    ("$.status", "equals", "open", True, "open"),
    ("$.status", "equals", "closed", False, "open"),
    ("$.status", "not_equals", "closed", True, "open"),
    ("$.count", "equals", "7", True, 7),
    ("$.count", "gt", "${inputs.limit}", True, 7),
    ("$.count", "lt", 5, False, 7),
    ("$.when", "gt", "2026-01-01", True, "2026-05-01"),
    ("$.tags", "contains", "vip", True, ["vip", "eu"]),
    ("$.status", "contains", "pe", True, "open"),
    ("$.tags", "contains", "us", False, ["vip", "eu"]),
    ("$.count", "exists", None, True, 7),
    ("$.empty", "exists", None, False, None),
    ("$.missing", "exists", None, False, None),
    ("$.missing", "gt", 1, False, None),
    ("$.fetch.status", "equals", 200, True, 200),  # not in the input: read from the whole context
    ("${inputs.status}", "equals", "closed", True, "closed"),  # ${} reads the context, not the input
    ("${inputs.nope}", "exists", None, False, None),
])
async def test_condition_operators(field, operator, value, passed, actual):
    node = {"id": "c", "type": "condition", "config": {"field": field, "operator": operator, "value": value}}
    result = await run_step(node, CONTEXT, step_call(), StepDeps())
    assert result == {"passed": passed, "field": field, "operator": operator, "actual": actual}


async def test_condition_rejects_an_unknown_operator_and_an_incomparable_pair():
    with pytest.raises(StepError, match="config.operator") as caught:
        await run_step({"id": "c", "type": "condition", "config": {"field": "$.a", "operator": "matches"}},
                       CONTEXT, step_call(), StepDeps())
    assert not caught.value.retryable
    with pytest.raises(StepError, match="gt compares"):
        await run_step({"id": "c", "type": "condition", "config": {"field": "$.tags", "operator": "gt", "value": 1}},
                       CONTEXT, step_call(), StepDeps())


# --- slack ----------------------------------------------------------------------------------------------


async def test_slack_posts_channel_and_text_with_the_key(receiver):
    node = integration("slack.post_message", channel="#ops", message="Run ${inputs.name} done",
                       webhook_url=receiver.url("/effect"))
    async with deps_for(make_settings()) as deps:
        result = await run_step(node, {"inputs": {"name": "nightly"}}, step_call(), deps)
    assert result == {"ok": True, "status": 201}
    (request,) = receiver.requests
    assert request.json() == {"channel": "#ops", "text": "Run nightly done"}
    assert request.headers["idempotency-key"] == f"{RUN}:s1:1"


async def test_slack_falls_back_to_the_deployment_webhook_and_needs_one(receiver):
    node = integration("slack.post_message", channel="#ops", message="hi")
    async with deps_for(make_settings(slack_webhook_url=receiver.url("/effect"))) as deps:
        assert (await run_step(node, {}, step_call(), deps))["ok"] is True
    async with deps_for(make_settings()) as deps:
        with pytest.raises(StepError, match="no webhook") as caught:
            await run_step(node, {}, step_call(), deps)
    assert not caught.value.retryable and len(receiver.requests) == 1


# --- email ----------------------------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    with smtp_server() as served:
        yield served


async def test_email_goes_to_a_real_smtp_server_with_both_parts_and_the_key(smtp):
    controller, inbox = smtp
    settings = make_settings(smtp_host="127.0.0.1", smtp_port=controller.port, smtp_from="weft@example.com")
    node = integration("email.send", to=["a@example.com", "b@example.com"], subject="Report for ${inputs.day}",
                       body="Plain ${inputs.day}", html="<p>Rich ${inputs.day}</p>")
    async with deps_for(settings) as deps:
        result = await run_step(node, {"inputs": {"day": "Monday"}}, step_call("mail"), deps)
    (envelope,) = inbox.envelopes
    assert envelope.rcpt_tos == ["a@example.com", "b@example.com"] and envelope.mail_from == "weft@example.com"
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "Report for Monday" and message["To"] == "a@example.com, b@example.com"
    assert message["Message-ID"] == f"<{RUN}.mail.1@weft>" == result["message_id"]
    assert message["X-Weft-Idempotency-Key"] == f"{RUN}:mail:1"
    assert message.get_body(("plain",)).get_content().strip() == "Plain Monday"
    assert message.get_body(("html",)).get_content().strip() == "<p>Rich Monday</p>"
    assert result["to"] == ["a@example.com", "b@example.com"] and "sink_path" not in result


async def test_email_to_an_unreachable_smtp_server_is_retryable():
    settings = make_settings(smtp_host="127.0.0.1", smtp_port=free_port(), outbound_timeout_s=2.0)
    async with deps_for(settings) as deps:
        with pytest.raises(StepError, match="SMTP") as caught:
            await run_step(integration("email.send", to="a@example.com", subject="s", body="b"), {}, step_call(), deps)
    assert caught.value.retryable


async def test_email_without_smtp_goes_to_the_sink_and_a_redelivery_overwrites(tmp_path: Path):
    settings = make_settings(mail_sink_dir=str(tmp_path / "mail"))
    node = integration("email.send", to="a@example.com", subject="Hello", body="${inputs.text}")
    async with deps_for(settings) as deps:
        first = await run_step(node, {"inputs": {"text": "first"}}, step_call("each[0]"), deps)
        again = await run_step(node, {"inputs": {"text": "second"}}, step_call("each[0]"), deps)
        other = await run_step(node, {"inputs": {"text": "third"}}, step_call("each[0]", attempt=2), deps)
    assert first["sink_path"] == again["sink_path"] != other["sink_path"]
    assert sorted(p.name for p in (tmp_path / "mail").iterdir()) == sorted(
        {Path(first["sink_path"]).name, Path(other["sink_path"]).name})
    message = message_from_bytes(Path(first["sink_path"]).read_bytes(), policy=policy.default)
    assert message.get_body(("plain",)).get_content().strip() == "second"
    assert message["X-Weft-Idempotency-Key"] == f"{RUN}:each[0]:1" and message["Message-ID"] == first["message_id"]


async def test_email_refuses_header_injection(tmp_path: Path):
    async with deps_for(make_settings(mail_sink_dir=str(tmp_path))) as deps:
        with pytest.raises(StepError, match="header"):
            await run_step(integration("email.send", to="a@example.com", subject="Hi\r\nBcc: x@evil.example",
                                       body="b"), {}, step_call(), deps)
    assert list(tmp_path.iterdir()) == []


# --- agent ----------------------------------------------------------------------------------------------


async def test_agent_endpoint_gets_the_prompt_and_its_answer_becomes_a_variable(store, tenant, receiver):
    agent_id = await register_agent(store, tenant, "researcher", receiver.url("/agent"), {"X-Agent-Token": "s3cret"})
    node = {"id": "ask", "type": "agent", "config": {"agent_id": str(agent_id), "prompt": "Summarise ${inputs.topic}"}}
    async with deps_for(make_settings(), store=store) as deps:
        result = await run_step(node, {"inputs": {"topic": "sales"}}, step_call("ask", tenant=tenant), deps)
    expected = {"answer": "agent saw 15 chars", "prompt": "Summarise sales"}
    assert result == StepResult(output=expected, variables={"researcher": expected})
    (request,) = receiver.requests
    assert request.json() == {"prompt": "Summarise sales", "runId": str(RUN), "stepId": "ask"}
    assert request.headers["idempotency-key"] == f"{RUN}:ask:1" and request.headers["x-agent-token"] == "s3cret"


async def test_another_tenants_agent_is_not_found_and_rls_hides_its_row(store, tenant, receiver):
    agent_id = await register_agent(store, tenant, "private", receiver.url("/agent"))
    other = f"t{uuid.uuid4().hex[:12]}"
    node = {"id": "ask", "type": "agent", "config": {"agent_id": str(agent_id), "prompt": "hi"}}
    async with deps_for(make_settings(), store=store) as deps:
        with pytest.raises(StepError, match="not found") as caught:
            await run_step(node, {}, step_call("ask", tenant=other), deps)
    assert not caught.value.retryable and receiver.requests == []
    async with store.tenant_transaction(other) as conn:  # no WHERE tenant_id: the policy alone must hide it
        assert await conn.fetchval("SELECT count(*) FROM agents WHERE id = $1", agent_id) == 0
    async with store.tenant_transaction(tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM agents WHERE id = $1", agent_id) == 1


async def test_agent_without_an_id_asks_the_llm():
    with FakeOpenAI() as fake:
        fake.script(Reply("A short summary", prompt_tokens=12, completion_tokens=4), Status(503), Status(400))
        settings = make_settings(llm_base_url=fake.base_url, llm_api_key="test", llm_model="gpt-test",
                                 llm_timeout_s=5.0)
        node = {"id": "a", "type": "agent", "config": {"prompt": "Summarise ${inputs.text}"}}
        async with deps_for(settings) as deps:
            result = await run_step(node, {"inputs": {"text": "the figures"}}, step_call(), deps)
            with pytest.raises(StepError, match="503") as unavailable:
                await run_step(node, {"inputs": {"text": "x"}}, step_call(), deps)
            with pytest.raises(StepError, match="400") as bad:
                await run_step({**node, "config": {"prompt": "p", "model": "other"}}, {}, step_call(), deps)
    assert result == {"text": "A short summary", "model": "gpt-test",
                      "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}}
    assert fake.requests[0]["messages"] == [{"role": "user", "content": "Summarise the figures"}]
    assert fake.requests[2]["model"] == "other" and len(fake.requests) == 3  # max_retries=0: one call each
    assert unavailable.value.retryable and not bad.value.retryable


async def test_agent_without_an_llm_or_an_id_fails_clearly():
    async with deps_for(make_settings()) as deps:
        assert deps.llm is None
        with pytest.raises(StepError, match="no LLM configured") as caught:
            await run_step({"id": "a", "type": "agent", "config": {"prompt": "p"}}, {}, step_call(), deps)
    assert not caught.value.retryable


# --- for_each -------------------------------------------------------------------------------------------


async def test_for_each_runs_every_row_with_its_own_key_and_counts_outcomes(receiver):
    rows = [{"code": 200}, {"code": 500}, {"code": 204}, {"nope": 1}]
    node = {"id": "each", "type": "for_each", "config": {
        "items": "${inputs.rows}",
        "step": {"type": "integration", "action": "http.request",
                 "config": {"method": "POST", "url": receiver.url("/status/${item.code}"), "body": {"i": "${index}"}}},
    }}
    async with deps_for(make_settings()) as deps:
        result = await run_step(node, {"inputs": {"rows": rows}}, step_call("each", attempt=3), deps)
    assert (result["successCount"], result["failedCount"], result["totalCount"]) == (2, 2, 4)
    statuses = [(r["index"], r["status"]) for r in result["results"]]
    assert statuses == [(0, "completed"), (1, "failed"), (2, "completed"), (3, "failed")]
    assert result["results"][0]["output"]["status"] == 200
    assert "answered 500" in result["results"][1]["error"] and "item.code" in result["results"][3]["error"]
    keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert keys == [f"{RUN}:each[0]:3", f"{RUN}:each[1]:3", f"{RUN}:each[2]:3"]
    assert [r.json() for r in receiver.requests] == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_for_each_checks_its_items_and_sub_step():
    def node(items: Any, sub: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"id": "each", "type": "for_each",
                "config": {"items": items, "step": sub or {"type": "echo", "config": {"message": "${item}"}}}}

    deps = StepDeps(settings=make_settings())
    ok = await run_step(node([1, 2]), {}, step_call(), deps)
    assert [r["output"] for r in ok["results"]] == [1, 2]
    with pytest.raises(StepError, match="at most 1000"):
        await run_step(node(list(range(MAX_ROWS + 1))), {}, step_call(), deps)
    with pytest.raises(StepError, match="must resolve to a list"):
        await run_step(node("${inputs.obj}"), {"inputs": {"obj": {"a": 1}}}, step_call(), deps)
    with pytest.raises(StepError, match="unknown step type"):
        await run_step(node([1], {"type": "integration", "action": "fax.send"}), {}, step_call(), deps)

