"""The fake OpenAI server works with the real ``openai`` client over loopback (no Postgres/NATS needed)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.fakes.injection_goals import EXFIL_URL, INJECTION_GOALS
from tests.fakes.openai_server import FakeOpenAI, Hang, RawBody, Reply, Status

PLAN_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "plan",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"steps": {"type": "array", "items": {"type": "string"}}},
            "required": ["steps"],
            "additionalProperties": False,
        },
    },
}
MESSAGES = [{"role": "system", "content": "plan"}, {"role": "user", "content": "do the thing"}]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def client(fake: FakeOpenAI, timeout: float = 5.0) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0, timeout=timeout)


async def test_reply_round_trip_with_usage_and_recorded_request(fake: FakeOpenAI) -> None:
    content = json.dumps({"steps": ["a", "b"]})
    fake.script(Reply(content, prompt_tokens=12, completion_tokens=7))
    async with client(fake) as c:
        resp = await c.chat.completions.create(model="m", messages=MESSAGES, response_format=PLAN_FORMAT)
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == "m"
    assert resp.choices[0].message.content == content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (12, 7, 19)
    assert len(fake.requests) == 1
    assert fake.requests[0]["model"] == "m"
    assert fake.requests[0]["messages"] == MESSAGES
    assert fake.requests[0]["response_format"] == PLAN_FORMAT


async def test_script_order_then_responder_then_default(fake: FakeOpenAI) -> None:
    fake.script(Reply("one", model="other-model"), Reply("two"))
    async with client(fake) as c:
        first = await c.chat.completions.create(model="m", messages=MESSAGES)
        second = await c.chat.completions.create(model="m", messages=MESSAGES)
        default = await c.chat.completions.create(model="m", messages=MESSAGES)
        fake.responder = lambda req: Reply(req["messages"][-1]["content"].upper())
        echoed = await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert [first.choices[0].message.content, second.choices[0].message.content] == ["one", "two"]
    assert first.model == "other-model"
    assert default.choices[0].message.content == "{}"
    assert echoed.choices[0].message.content == "HI"
    assert len(fake.requests) == 4


async def test_429_raises_rate_limit_error(fake: FakeOpenAI) -> None:
    fake.script(Status(429, "slow down", headers={"retry-after": "0"}))
    async with client(fake) as c:
        with pytest.raises(openai.RateLimitError) as info:
            await c.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"
    assert "slow down" in info.value.message
    assert info.value.response.headers["retry-after"] == "0"


async def test_500_raises_internal_server_error_then_recovers(fake: FakeOpenAI) -> None:
    fake.script(Status(500), Reply('{"ok": true}'))
    async with client(fake) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="m", messages=MESSAGES)
        ok = await c.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 500
    assert ok.choices[0].message.content == '{"ok": true}'


async def test_hang_raises_timeout_and_stop_is_prompt() -> None:
    fake = FakeOpenAI().start()
    try:
        fake.script(Hang(30))
        async with client(fake, timeout=0.5) as c:
            t0 = time.monotonic()
            with pytest.raises(openai.APITimeoutError):
                await c.chat.completions.create(model="m", messages=MESSAGES)
            assert time.monotonic() - t0 < 3
    finally:
        t0 = time.monotonic()
        fake.stop()
        assert time.monotonic() - t0 < 1.0
    assert len(fake.requests) == 1


async def test_short_hang_then_answers(fake: FakeOpenAI) -> None:
    fake.script(Hang(0.1, then=Reply("late")))
    async with client(fake, timeout=5) as c:
        resp = await c.chat.completions.create(model="m", messages=MESSAGES)
    assert resp.choices[0].message.content == "late"


async def test_raw_body_breaks_the_client(fake: FakeOpenAI) -> None:
    fake.script(RawBody(b"<html>oops</html"))
    async with client(fake) as c:
        with pytest.raises(ValueError):  # json.JSONDecodeError from the client's response.json()
            await c.chat.completions.create(model="m", messages=MESSAGES)


def test_unknown_path_is_404_with_openai_error_body(fake: FakeOpenAI) -> None:
    r = httpx.get(fake.base_url + "/models")
    assert r.status_code == 404
    assert set(r.json()["error"]) >= {"message", "type", "code"}
    r = httpx.post(fake.base_url + "/embeddings", json={"input": "x"})
    assert r.status_code == 404
    assert fake.requests == []


def test_injection_goals_shape() -> None:
    assert 20 <= len(INJECTION_GOALS) <= 40
    assert len(set(INJECTION_GOALS)) == len(INJECTION_GOALS)
    assert all(isinstance(g, str) and len(g) > 40 for g in INJECTION_GOALS)
    assert EXFIL_URL == "http://evil.example/collect"
