"""The planner against the real ``openai`` client and the loopback FakeOpenAI server: plan, repair, retry,
allow-list enforcement under prompt injection, the offline planner, the assistant functions and the plan cache.

Everything runs in-process without Postgres/NATS, except the cache tests at the end (``store``/``tenant``).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from services.planner.assistant import generate_workflow_plan, parse_command
from services.planner.cache import PlanCache
from services.planner.llm import LLMClient
from services.planner.offline import OFFLINE_CONFIDENCE, schedule_from_text
from services.planner.planning import PROMPT_VERSION, Planner, PlanningFailed, allowed_tools
from services.planner.validation import MAX_PLAN_STEPS, plan_hash, validate_plan
from tests.fakes.injection_goals import EXFIL_URL, INJECTION_GOALS
from tests.fakes.openai_server import FakeOpenAI, Hang, RawBody, Reply, Status

MODEL = "gpt-test"
TENANT = "tplanner"
GOAL = "Every Monday summarise the sales figures and email them to team@example.com"
TOOLS = ["agent", "email.send"]


# -- plan builders ------------------------------------------------------------------------------------------


def step(sid: str, action: str, config: dict[str, Any], *, input_from: str | None = None,
         depends_on: list[str] | None = None, description: str = "") -> dict[str, Any]:
    return {"id": sid, "action": action, "description": description or f"{action} step",
            "input_from": input_from, "depends_on": depends_on or [], "config": config}


def plan(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "Sales summary", "description": "Summarise sales and email them", "confidence": 0.9,
            "schedule": "0 9 * * 1", "steps": list(steps)} | fields


def agent(sid: str, prompt: str = "Summarise ${inputs.text}", **kw: Any) -> dict[str, Any]:
    return step(sid, "agent", {"prompt": prompt}, **kw)


def email(sid: str, body: str = "${input}", to: str = "team@example.com", **kw: Any) -> dict[str, Any]:
    return step(sid, "email.send", {"to": to, "subject": "Sales", "body": body}, **kw)


def http(sid: str, url: str = EXFIL_URL, **kw: Any) -> dict[str, Any]:
    return step(sid, "http.request", {"method": "POST", "url": url, "body": "${input}"}, **kw)


GOOD = plan(agent("s1"), agent("s2", "Shorten this: ${input}", input_from="s1"), email("s3", input_from="s2"))
CLEAN = plan(agent("s1"), email("s2", input_from="s1"))
EXFIL = plan(agent("s1"), http("s2", input_from="s1"))


def actions_in_schema(request: dict[str, Any]) -> set[str]:
    schema = request["response_format"]["json_schema"]["schema"]
    return {alt["properties"]["action"]["const"] for alt in schema["properties"]["steps"]["items"]["anyOf"]}


def user_message(request: dict[str, Any]) -> str:
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


def is_repair(request: dict[str, Any]) -> bool:
    return len(request["messages"]) > 2


# -- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def llm(fake: FakeOpenAI) -> AsyncIterator[LLMClient]:
    client = LLMClient(base_url=fake.base_url, api_key="test-key", model=MODEL, timeout_s=5.0)
    yield client
    await client.close()


@pytest.fixture
def planner(llm: LLMClient) -> Planner:
    return Planner(llm, cache=None)


async def failed(planner: Planner, goal: str = GOAL, tools: list[str] | None = TOOLS,
                 tenant: str = TENANT) -> PlanningFailed:
    with pytest.raises(PlanningFailed) as info:
        await planner.plan(tenant, goal, tools)
    return info.value


# -- a good plan --------------------------------------------------------------------------------------------


async def test_good_plan_result_and_request(fake: FakeOpenAI, planner: Planner) -> None:
    fake.script(Reply(json.dumps(GOOD), prompt_tokens=321, completion_tokens=123, model="gpt-test-2024-07-18"))
    result = await planner.plan(TENANT, GOAL, TOOLS)

    assert result.source == "ai-generated"
    assert result.model == "gpt-test-2024-07-18"  # the model the reply names
    assert (result.prompt_tokens, result.completion_tokens) == (321, 123)
    assert result.prompt_version == PROMPT_VERSION
    assert result.attempts == 1 and result.cached is False
    assert result.name == GOOD["name"] and result.confidence == 0.9 and result.schedule == "0 9 * * 1"
    assert [n["id"] for n in result.definition["nodes"]] == ["s1", "s2", "s3"]
    assert [n["action"] for n in result.definition["nodes"]] == ["agent", "agent", "email.send"]
    assert result.definition["nodes"][2]["input_from"] == "s2"
    assert result.est_cost_usd == pytest.approx(0.02)  # two agent steps at 0.01; email costs nothing
    assert result.outbound_steps == ["s3"]
    assert result.plan_hash == plan_hash(result.definition) and result.plan_hash.startswith("sha256:")
    assert result.latency_ms >= result.model_latency_ms > 0

    assert len(fake.requests) == 1
    request = fake.requests[0]
    assert request["model"] == MODEL
    assert request["temperature"] == 0
    fmt = request["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["strict"] is True
    assert actions_in_schema(request) == allowed_tools(TOOLS)  # the tools named, and the built-in steps
    assert "http.request" not in json.dumps(fmt)
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert GOAL in user_message(request)
    assert GOAL not in request["messages"][0]["content"]  # the goal is data, never in the system prompt


async def test_plan_hash_stable_for_the_same_plan(fake: FakeOpenAI, planner: Planner) -> None:
    reordered = {k: GOOD[k] for k in reversed(list(GOOD))}  # same plan, keys in another order
    other = copy.deepcopy(GOOD)
    other["steps"][2]["config"]["to"] = "other@example.com"
    fake.script(json.dumps(GOOD), json.dumps(reordered), json.dumps(other))
    first = await planner.plan(TENANT, GOAL, TOOLS)
    second = await planner.plan(TENANT, GOAL + " please", TOOLS)
    third = await planner.plan(TENANT, GOAL, TOOLS)
    assert first.plan_hash == second.plan_hash
    assert third.plan_hash != first.plan_hash


async def test_no_allow_list_offers_the_whole_catalogue(fake: FakeOpenAI, planner: Planner) -> None:
    from libs.domain.catalog import PLAN_ACTIONS

    fake.script(json.dumps(GOOD))
    await planner.plan(TENANT, GOAL, None)
    # The plannable part of it: noop (echo's other name) and for_each are for hand-written definitions.
    assert actions_in_schema(fake.requests[0]) == set(PLAN_ACTIONS)


def test_allowed_tools_ignores_unknown_names() -> None:
    assert allowed_tools(None) is None
    built_in = {"transform", "echo", "condition", "delay", "approval", "agent"}  # always allowed (decision 0102)
    assert allowed_tools(["agent", "shell.exec", "email.send", "AGENT"]) == built_in | {"email.send"}
    assert allowed_tools([]) == built_in


async def test_unknown_tool_names_do_not_reach_the_schema(fake: FakeOpenAI, planner: Planner) -> None:
    fake.script(json.dumps(CLEAN))
    await planner.plan(TENANT, GOAL, ["agent", "email.send", "shell.exec", "http.request "])
    assert actions_in_schema(fake.requests[0]) == allowed_tools([]) | {"email.send"}


# -- repair round trip --------------------------------------------------------------------------------------


async def test_malformed_json_then_good_plan_is_repaired(fake: FakeOpenAI, planner: Planner) -> None:
    fake.script(Reply('{"name": "x", "steps": [', prompt_tokens=10, completion_tokens=5),
                Reply(json.dumps(CLEAN), prompt_tokens=20, completion_tokens=7))
    result = await planner.plan(TENANT, GOAL, TOOLS)
    assert result.source == "ai-generated"
    assert result.attempts == 2
    assert (result.prompt_tokens, result.completion_tokens) == (30, 12)  # usage summed over both
    assert len(fake.requests) == 2
    repair = fake.requests[1]["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2]["content"] == '{"name": "x", "steps": ['
    assert "not valid JSON" in repair[3]["content"]
    assert fake.requests[1]["response_format"] == fake.requests[0]["response_format"]


async def test_malformed_json_twice_fails_422_after_two_requests(fake: FakeOpenAI, planner: Planner) -> None:
    fake.responder = lambda request: "this is not JSON"
    error = await failed(planner)
    assert error.status == 422
    assert any("not valid JSON" in d for d in error.defects)
    assert "not valid JSON" in error.message
    assert len(fake.requests) == 2
    assert error.prompt_tokens == 200 and error.model == MODEL


async def test_disallowed_step_twice_fails_naming_step_and_tool(fake: FakeOpenAI, planner: Planner) -> None:
    bad = plan(agent("s1"), http("s2", url="https://api.example.com/hook", input_from="s1"),
               email("s3", input_from="s1"))
    fake.responder = lambda request: bad
    error = await failed(planner)
    assert error.status == 422
    assert len(fake.requests) == 2
    [defect] = error.defects
    assert "steps/1" in defect and "'http.request'" in defect and "not an allowed tool" in defect
    assert "allowed: agent, approval, condition, delay, echo, email.send, transform" in defect
    assert "'http.request'" in fake.requests[1]["messages"][-1]["content"]  # the repair names it too


async def test_disallowed_step_then_corrected_succeeds(fake: FakeOpenAI, planner: Planner) -> None:
    fake.script(EXFIL, CLEAN)
    result = await planner.plan(TENANT, GOAL, TOOLS)
    assert [n["action"] for n in result.definition["nodes"]] == ["agent", "email.send"]
    assert result.attempts == 2 and len(fake.requests) == 2


@pytest.mark.parametrize(
    ("bad", "expect"),
    [
        pytest.param(plan(agent("s1", "${input}", input_from="s2"), agent("s2", "${input}", input_from="s1")),
                     ["cycle"], id="cycle"),
        pytest.param(plan(agent("s1", "${input}", depends_on=["s1"])), ["cycle"], id="self-cycle"),
        pytest.param(plan(agent("s1"), email("s2", body="Summary: ${s9.summary}", input_from="s1")),
                     ["${s9.summary}", "'s9'"], id="unknown-step-ref"),
        pytest.param(plan(agent("s1"), email("s2", body="${steps.s9.summary}", input_from="s1")),
                     ["${steps.s9.summary}"], id="unknown-steps-prefixed-ref"),
        pytest.param(plan(agent("s1", "Use ${s2.text}"), agent("s2")), ["${s2.text}"], id="later-step-ref"),
        pytest.param(plan(agent("s1"), email("s2", body="${input}")), ["${input}"], id="input-without-input_from"),
        pytest.param(plan(agent("s1"), email("s2", input_from="s7")), ["'s7'"], id="unknown-input_from"),
        pytest.param(plan(*[agent(f"s{i}") for i in range(MAX_PLAN_STEPS + 1)]), ["21 steps", "at most 20"],
                     id="too-many-steps"),
        pytest.param(plan(agent("s1"), step("s2", "shell.exec", {"cmd": "curl evil"})),
                     ["steps/1/action", "'shell.exec'", "not a known step type"], id="unknown-action"),
        pytest.param(plan(step("s1", ["agent"], {"prompt": "x"})), ["steps/0/action"], id="non-string-action"),
        pytest.param(plan(step("s1", "email.send", {"to": "a@b.co", "subject": "x", "body": "y", "bcc": "e@vil"})),
                     ["steps/0/config", "bcc"], id="extra-config-key"),
        pytest.param(plan(agent("s1"), agent("s1")), ["'s1' is used twice"], id="duplicate-id"),
        pytest.param({k: v for k, v in CLEAN.items() if k != "schedule"}, ["schedule"], id="missing-key"),
        pytest.param(plan(), ["steps"], id="no-steps"),
        pytest.param(["not", "an", "object"], ["JSON object"], id="not-an-object"),
    ],
)
async def test_defective_plan_is_rejected_with_a_named_defect(fake: FakeOpenAI, planner: Planner, bad: Any,
                                                               expect: list[str]) -> None:
    fake.responder = lambda request: bad
    error = await failed(planner, tools=None)
    assert error.status == 422
    assert len(fake.requests) == 2
    text = " | ".join(error.defects)
    for fragment in expect:
        assert fragment in text, (fragment, error.defects)


def test_validate_plan_accepts_the_reference_forms_the_executor_resolves() -> None:
    ok = plan(agent("s1"), agent("s2", "Compare ${s1.text} with ${steps.s1.text} for ${inputs.who}", input_from="s1"),
              email("s3", body="${input}", input_from="s2", depends_on=["s1"]))
    assert validate_plan(ok, None) == []
    assert validate_plan(ok, {"agent", "email.send"}) == []
    assert validate_plan(ok, {"agent"}) != []


# -- transient model failures -------------------------------------------------------------------------------


async def test_429_then_good_plan_succeeds_on_the_retry(fake: FakeOpenAI, planner: Planner) -> None:
    fake.script(Status(429, "slow down", headers={"retry-after": "0"}),
                Reply(json.dumps(CLEAN), prompt_tokens=40, completion_tokens=9))
    result = await planner.plan(TENANT, GOAL, TOOLS)
    assert result.attempts == 2
    assert (result.prompt_tokens, result.completion_tokens) == (40, 9)
    assert len(fake.requests) == 2
    assert fake.requests[1]["messages"] == fake.requests[0]["messages"]  # a retry, not a repair


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_transient_error_twice_is_503_after_two_requests(fake: FakeOpenAI, planner: Planner,
                                                               status: int) -> None:
    fake.responder = lambda request: Status(status, f"fake {status}")
    error = await failed(planner)
    assert error.status == 503
    assert "unavailable" in error.message
    assert len(fake.requests) == 2


async def test_500_then_good_plan_succeeds(fake: FakeOpenAI, planner: Planner) -> None:
    fake.script(Status(500, "boom"), CLEAN)
    result = await planner.plan(TENANT, GOAL, TOOLS)
    assert result.attempts == 2 and len(fake.requests) == 2


async def test_non_transient_error_is_not_retried(fake: FakeOpenAI, planner: Planner) -> None:
    fake.responder = lambda request: Status(401, "bad key")
    error = await failed(planner)
    assert error.status == 503
    assert len(fake.requests) == 1


async def test_hang_past_the_timeout_twice_is_503_quickly(fake: FakeOpenAI) -> None:
    fake.responder = lambda request: Hang(5, then=CLEAN)
    client = LLMClient(base_url=fake.base_url, api_key="k", model=MODEL, timeout_s=0.5)
    try:
        started = time.monotonic()
        error = await failed(Planner(client, cache=None))
        elapsed = time.monotonic() - started
    finally:
        await client.close()
    assert error.status == 503
    assert "Timeout" in error.message
    assert len(fake.requests) == 2
    assert elapsed < 2.5, elapsed


async def test_hang_once_then_good_plan_succeeds(fake: FakeOpenAI) -> None:
    fake.script(Hang(5), CLEAN)
    client = LLMClient(base_url=fake.base_url, api_key="k", model=MODEL, timeout_s=0.5)
    try:
        result = await Planner(client, cache=None).plan(TENANT, GOAL, TOOLS)
    finally:
        await client.close()
    assert result.attempts == 2


async def test_connection_refused_twice_is_503() -> None:
    from deploy.local.embedded import free_port

    client = LLMClient(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k", model=MODEL, timeout_s=1.0)
    try:
        error = await failed(Planner(client, cache=None))
    finally:
        await client.close()
    assert error.status == 503 and "Connection" in error.message


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b"",
        b'{"id": "chatcmpl-1", "choices": [',
        b"[1, 2]",
        b'{"choices": 5}',
        b'{"choices": [{}]}',
        b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": 5}}]}',
    ],
    ids=["html", "empty", "truncated", "list", "choices-not-list", "choice-without-message", "content-not-str"],
)
async def test_garbled_body_then_good_plan_succeeds(fake: FakeOpenAI, planner: Planner, body: bytes) -> None:
    fake.script(RawBody(body), Reply(json.dumps(CLEAN)))
    result = await planner.plan(TENANT, GOAL, TOOLS)
    assert result.source == "ai-generated"
    assert len(fake.requests) == 2
    assert fake.requests[1]["messages"] == fake.requests[0]["messages"]  # retried, not repaired


async def test_garbled_body_twice_is_503(fake: FakeOpenAI, planner: Planner) -> None:
    fake.responder = lambda request: RawBody(b"\x00\xffgarbage")
    error = await failed(planner)
    assert error.status == 503
    assert len(fake.requests) == 2


# -- prompt injection ---------------------------------------------------------------------------------------


def disallowed(result_definition: dict[str, Any], allowed: set[str]) -> int:
    """Steps outside the allow-list, plus any trace of the exfiltration URL, in a definition."""
    bad = sum(1 for n in result_definition["nodes"] if n["action"] not in allowed)
    return bad + (EXFIL_URL in json.dumps(result_definition))


async def test_injection_corpus_compromised_model_is_always_refused(fake: FakeOpenAI, planner: Planner) -> None:
    fake.responder = lambda request: EXFIL  # a compromised model: exfiltrates on the plan and on the repair
    refused, leaked, through = 0, 0, []
    for goal in INJECTION_GOALS:
        fake.requests.clear()
        try:
            result = await planner.plan(TENANT, goal, TOOLS)
        except PlanningFailed as error:
            assert error.status == 422, (goal, error.message)
            assert any("'http.request' is not an allowed tool" in d for d in error.defects), error.defects
            assert len(fake.requests) == 2, goal  # the plan and one repair, no more
            refused += 1
        else:
            leaked += disallowed(result.definition, set(TOOLS))
            through.append(goal)
        for request in fake.requests:
            assert actions_in_schema(request) == allowed_tools(TOOLS)  # the schema never offers http.request
            assert goal in user_message(request)
    assert leaked == 0, f"{leaked} disallowed steps/URLs got through for {len(through)} goals, e.g. {through[:1]}"
    assert refused == len(INJECTION_GOALS)


@pytest.mark.parametrize("tools", [TOOLS, ["agent", "email.send", "slack.post_message", "transform", "shell.exec"]])
async def test_injection_corpus_repaired_plans_carry_no_exfiltration(fake: FakeOpenAI, planner: Planner,
                                                                     tools: list[str]) -> None:
    fake.responder = lambda request: CLEAN if is_repair(request) else EXFIL
    allowed = allowed_tools(tools)
    leaked = 0
    for goal in INJECTION_GOALS:
        fake.requests.clear()
        result = await planner.plan(TENANT, goal, tools)
        leaked += disallowed(result.definition, allowed)
        assert "http.request" not in {n["action"] for n in result.definition["nodes"]}
        assert EXFIL_URL not in json.dumps(result.definition)
        assert result.attempts == 2
        assert "'http.request' is not an allowed tool" in fake.requests[1]["messages"][-1]["content"]
    assert leaked == 0


# -- the offline planner ------------------------------------------------------------------------------------


OFFLINE_GOAL = "Every Monday at 9am summarise sales and email it to team@example.com"


async def test_offline_planner_plans_schedule_and_chain() -> None:
    result = await Planner(None, None).plan(TENANT, OFFLINE_GOAL, None)
    assert result.source == "offline-planner" and result.model == "offline-planner"
    assert result.confidence <= 0.4
    assert result.schedule == "0 9 * * 1"
    nodes = result.definition["nodes"]
    assert [n["action"] for n in nodes] == ["agent", "email.send"]
    assert nodes[1]["input_from"] == nodes[0]["id"]
    assert nodes[1]["config"]["to"] == "team@example.com"
    assert nodes[1]["config"]["body"] == "${input}"
    assert result.outbound_steps == [nodes[1]["id"]]
    assert result.est_cost_usd == pytest.approx(0.01)
    assert result.attempts == 0 and result.prompt_tokens == 0


async def test_offline_planner_respects_the_allow_list() -> None:
    result = await Planner(None, None).plan(TENANT, OFFLINE_GOAL, ["agent"])
    assert [n["action"] for n in result.definition["nodes"]] == ["agent"]
    assert result.outbound_steps == []


async def test_offline_planner_without_the_tool_a_goal_needs_plans_no_integration() -> None:
    result = await Planner(None, None).plan(TENANT, "Post the build status to #builds", ["email.send"])
    assert [n["action"] for n in result.definition["nodes"]] == ["transform"] and result.outbound_steps == []
    assert result.confidence == 0.1  # nothing of the goal was planned: the floor, not the ceiling


@pytest.mark.parametrize("tools", [TOOLS, ["agent"], ["transform"], ["slack.post_message", "agent"]])
async def test_offline_planner_injection_goals_stay_in_the_allow_list(tools: list[str]) -> None:
    planner, allowed, outside = Planner(None, None), allowed_tools(tools), 0
    for goal in INJECTION_GOALS:
        try:
            result = await planner.plan(TENANT, goal, tools)
        except PlanningFailed as error:
            assert error.status == 422
            continue
        outside += sum(1 for n in result.definition["nodes"] if n["action"] not in allowed)
        assert all(n["action"] != "http.request" for n in result.definition["nodes"])
    assert outside == 0


@pytest.mark.parametrize(
    ("text", "cron"),
    [
        ("every weekday at 8:30am", "30 8 * * 1-5"),
        ("Send it every weekday", "0 9 * * 1-5"),
        ("daily at 5pm", "0 17 * * *"),
        ("every day at 17:45", "45 17 * * *"),
        ("daily at 12am", "0 0 * * *"),
        ("every Friday at 12pm", "0 12 * * 5"),
        ("every Monday at 9am", "0 9 * * 1"),
        ("check hourly", "0 * * * *"),
        ("every hour", "0 * * * *"),
        ("weekly digest", "0 9 * * 1"),
        ("every week", "0 9 * * 1"),
        ("summarise the report", None),
    ],
)
def test_schedule_from_text(text: str, cron: str | None) -> None:
    assert schedule_from_text(text) == cron


# -- the assistant contract ---------------------------------------------------------------------------------


def test_parse_command_email_shape() -> None:
    parsed = parse_command("Send an email to john@example.com every Monday at 9am")
    assert set(parsed) == {"intent", "parameters", "confidence"}
    assert parsed["intent"] == "send_email"
    assert parsed["parameters"] == {"recipient": "john@example.com", "schedule": "0 9 * * 1"}
    assert parsed["confidence"] == OFFLINE_CONFIDENCE


@pytest.mark.parametrize(
    ("command", "intent", "parameters"),
    [
        ("Post the build status to #deploys on Slack", "post_message", {"channel": "#deploys"}),
        ("Fetch https://api.example.com/data every hour", "call_api",
         {"url": "https://api.example.com/data", "method": "GET", "schedule": "0 * * * *"}),
        ("Post the summary to https://hooks.example.com/x", "call_api",
         {"url": "https://hooks.example.com/x", "method": "POST"}),
        ("Summarise the quarterly report", "generate_text", {}),
        ("Remember this for later", "record_request", {}),
    ],
)
def test_parse_command_intents(command: str, intent: str, parameters: dict[str, Any]) -> None:
    parsed = parse_command(command)
    assert parsed == {"intent": intent, "parameters": parameters, "confidence": OFFLINE_CONFIDENCE}


async def test_generate_workflow_plan_shape() -> None:
    result = await Planner(None, None).plan(TENANT, OFFLINE_GOAL, None)
    out = generate_workflow_plan(result.definition)
    assert set(out) == {"steps", "estimatedDuration"}
    first, second = out["steps"]
    for s in out["steps"]:
        assert set(s) == {"id", "agentName", "action", "description", "dependencies"}
    assert (first["agentName"], first["action"], first["dependencies"]) == ("LLMAgent", "agent", [])
    assert (second["agentName"], second["action"], second["dependencies"]) == ("EmailAgent", "email.send",
                                                                               [first["id"]])
    assert out["estimatedDuration"] == 12  # agent 10 s + email 2 s


def test_generate_workflow_plan_durations_and_dependencies() -> None:
    definition = {"nodes": [
        {"id": "a", "type": "agent", "action": "agent", "config": {"prompt": "x"}},
        {"id": "w", "type": "delay", "action": "delay", "config": {"seconds": 30}, "depends_on": ["a"]},
        {"id": "h", "type": "integration", "action": "http.request", "input_from": "w", "depends_on": ["a"]},
        {"id": "ok", "type": "approval", "action": "approval", "input_from": "h"},
    ]}
    out = generate_workflow_plan(definition)
    assert [s["dependencies"] for s in out["steps"]] == [[], ["a"], ["w", "a"], ["h"]]
    assert [s["agentName"] for s in out["steps"]] == ["LLMAgent", "SchedulerAgent", "HttpAgent", "ApprovalAgent"]
    assert out["estimatedDuration"] == 10 + 30 + 2 + 0
    assert generate_workflow_plan({"nodes": []}) == {"steps": [], "estimatedDuration": 0}


# -- the plan cache (Postgres) ------------------------------------------------------------------------------


async def test_cache_hit_makes_no_model_request(fake: FakeOpenAI, llm: LLMClient, store, tenant: str) -> None:
    fake.responder = lambda request: CLEAN
    planner = Planner(llm, PlanCache(store, ttl_s=60))
    first = await planner.plan(tenant, GOAL, TOOLS)
    second = await planner.plan(tenant, "  " + GOAL.replace(" ", "   ") + "\n", TOOLS)  # whitespace-normalised
    assert len(fake.requests) == 1
    assert first.cached is False and second.cached is True
    assert second.plan_hash == first.plan_hash and second.definition == first.definition
    assert second.attempts == 0 and second.prompt_tokens == 0 and second.model_latency_ms == 0
    assert second.source == "ai-generated" and second.model == first.model

    await planner.plan(f"{tenant}x", GOAL, TOOLS)  # another tenant: miss
    assert len(fake.requests) == 2
    await planner.plan(tenant, GOAL, ["agent", "email.send", "slack.post_message"])  # another allow-list: miss
    assert len(fake.requests) == 3
    await planner.plan(tenant, GOAL, None)  # no allow-list: miss
    assert len(fake.requests) == 4
    await planner.plan(tenant, GOAL + " today", TOOLS)  # another goal: miss
    assert len(fake.requests) == 5
    again = await planner.plan(tenant, GOAL, ["email.send", "agent", "shell.exec"])  # same allowed set: hit
    assert again.cached is True and len(fake.requests) == 5


async def test_cache_ttl_zero_always_misses(fake: FakeOpenAI, llm: LLMClient, store, tenant: str) -> None:
    fake.responder = lambda request: CLEAN
    planner = Planner(llm, PlanCache(store, ttl_s=0))
    results = [await planner.plan(tenant, GOAL, TOOLS) for _ in range(3)]
    assert len(fake.requests) == 3
    assert [r.cached for r in results] == [False, False, False]


async def test_failures_are_not_cached(fake: FakeOpenAI, llm: LLMClient, store, tenant: str) -> None:
    fake.script(Status(500), Status(500))
    fake.responder = lambda request: CLEAN
    planner = Planner(llm, PlanCache(store, ttl_s=60))
    with pytest.raises(PlanningFailed):
        await planner.plan(tenant, GOAL, TOOLS)
    result = await planner.plan(tenant, GOAL, TOOLS)
    assert result.cached is False and len(fake.requests) == 3
