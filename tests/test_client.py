"""weft_client against a real stack: retries keep the Idempotency-Key (one run however many tries), a 202 is
followed to its run, the event iterator resumes across forced disconnects with exactly the events in order,
pagination, errors carry the surface's status and message, and 429 waits for Retry-After."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from services.gateway.commands import _KEY_NAMESPACE  # how the gateway names a keyed command
from tests.fakes.flaky_proxy import FlakyProxy, Rule
from weft_client import (
    AsyncClient,
    Client,
    CommandPending,
    Conflict,
    NotFound,
    PublicClient,
    RateLimited,
    TransportError,
    Unavailable,
)

STEPS = {"nodes": [
    {"id": "step_1", "type": "transform", "config": {"template": {"greeting": "Hello ${inputs.name}"}}},
    {"id": "step_2", "type": "echo", "input_from": "step_1"},
    {"id": "step_3", "type": "echo", "input_from": "step_2"},
], "concurrency": "unlimited"}


def _port(stack) -> int:
    return stack.ports["gateway"]


def _workflow(client: Client, definition=STEPS) -> str:
    return client.create_workflow(f"wf-{uuid.uuid4().hex[:8]}", definition).id


@pytest.mark.parametrize("action", ["503_before", "503_after", "drop_after"])
def test_execute_retries_with_the_same_key_and_makes_one_run(stack, tenant, action):
    with Client(stack.base_url, token=stack.token(tenant)) as direct:
        wid = _workflow(direct)
        with FlakyProxy(_port(stack), [Rule("POST", "/execute", action)]) as proxy, \
                Client(proxy.url, token=stack.token(tenant)) as flaky:
            run = flaky.execute(wid, {"name": "Ada"})
        tries = [s for s in proxy.seen if s.method == "POST"]
        assert [t.action for t in tries] == [action, None]
        keys = {t.headers["idempotency-key"] for t in tries}
        assert len(keys) == 1, keys
        runs = direct.list_runs(wid)
        # 503_after and drop_after reached the gateway twice: still one run, the one the client returned.
        assert runs.count == 1 and [r.id for r in runs.items] == [run.id]
        assert direct.wait_run(wid, run.id, timeout_s=30).outputs == {"greeting": "Hello Ada"}


def test_execute_gives_up_after_its_retries_and_says_why(stack, tenant):
    with Client(stack.base_url, token=stack.token(tenant)) as direct:
        wid = _workflow(direct)
        with FlakyProxy(_port(stack), [Rule("POST", "/execute", "503_before", times=10)]) as proxy, \
                Client(proxy.url, token=stack.token(tenant), max_retries=2) as flaky:
            with pytest.raises(Unavailable) as err:
                flaky.execute(wid)
        assert err.value.status == 503 and "unavailable" in err.value.message
        assert len([s for s in proxy.seen if s.method == "POST"]) == 3
        assert direct.list_runs(wid).count == 0


def test_a_202_is_followed_to_the_run_it_created(stack, tenant):
    key = f"k-{uuid.uuid4()}"
    command = uuid.uuid5(_KEY_NAMESPACE, f"{tenant}/alice/{key}")
    with Client(stack.base_url, token=stack.token(tenant)) as direct:
        wid = _workflow(direct)
        rule = Rule("POST", "/execute", "accepted", location=lambda _: f"/api/v2/workflows/commands/{command}")
        with FlakyProxy(_port(stack), [rule]) as proxy, Client(proxy.url, token=stack.token(tenant)) as flaky:
            run = flaky.execute(wid, {"name": "Bo"}, idempotency_key=key)
        assert [s.path for s in proxy.seen][1] == f"/api/v2/workflows/commands/{command}"
        assert [r.id for r in direct.list_runs(wid).items] == [run.id]
        # A 202 whose command never commits: the client stops polling and says where to look.
        never = f"/api/v2/workflows/commands/{uuid.uuid4()}"
        rule = Rule("POST", "/execute", "accepted", location=lambda _: never)
        with FlakyProxy(_port(stack), [rule]) as proxy, \
                Client(proxy.url, token=stack.token(tenant), follow_timeout_s=0.5) as flaky:
            with pytest.raises(CommandPending) as err:
                flaky.execute(wid)
        assert err.value.location == never


def _reference(client: Client, wid: str, rid: str):
    return list(client.events(wid, rid))


def test_events_resume_across_forced_disconnects_with_no_gap_and_no_duplicate(stack, tenant):
    with Client(stack.base_url, token=stack.token(tenant)) as direct:
        wid = _workflow(direct)
        run = direct.execute(wid, {"name": "Cy"})
        direct.wait_run(wid, run.id, timeout_s=30)
        reference = _reference(direct, wid, run.id)
        assert reference[-1].type == "workflow_complete"
        assert [e.id for e in reference] == sorted({e.id for e in reference})
        for cut in range(1, len(reference)):
            for extra in (0, 9):  # at an event's end, and in the middle of the next one
                rules = [Rule("GET", "/events", "cut", cut_after_events=cut, extra_bytes=extra)]
                with FlakyProxy(_port(stack), rules) as proxy, Client(proxy.url, token=stack.token(tenant)) as c:
                    got = list(c.events(wid, run.id))
                assert got == reference, (cut, extra)
                streams = [s for s in proxy.seen if s.path.endswith("/events")]
                assert [s.action for s in streams] == ["cut", None]
                assert "last-event-id" not in streams[0].headers
                assert streams[1].headers["last-event-id"] == str(reference[cut - 1].id)


def test_a_silent_stream_is_given_up_and_resumed(stack, tenant):
    """A connection that stays open but goes quiet (no heartbeat within stream_idle_timeout_s) is dropped by
    the client, which resumes from the last id."""
    with Client(stack.base_url, token=stack.token(tenant)) as direct:
        wid = _workflow(direct)
        run = direct.execute(wid, {"name": "Di"})
        direct.wait_run(wid, run.id, timeout_s=30)
        reference = _reference(direct, wid, run.id)
    rules = [Rule("GET", "/events", "stall", cut_after_events=2)]
    with FlakyProxy(_port(stack), rules) as proxy, \
            Client(proxy.url, token=stack.token(tenant), stream_idle_timeout_s=1.0) as c:
        started = time.monotonic()
        assert list(c.events(wid, run.id)) == reference
        assert 1.0 <= time.monotonic() - started < 10
    assert [s.action for s in proxy.seen] == ["stall", None]
    assert proxy.seen[1].headers["last-event-id"] == str(reference[1].id)


async def test_async_events_follow_a_live_run_through_a_disconnect(stack, tenant):
    definition = {"nodes": [
        {"id": "first", "type": "echo", "config": {}},
        {"id": "pause", "type": "delay", "config": {"seconds": 1}, "input_from": "first"},
        {"id": "last", "type": "echo", "input_from": "pause"},
    ]}
    async with AsyncClient(stack.base_url, token=stack.token(tenant)) as direct:
        wid = (await direct.create_workflow(f"wf-{uuid.uuid4().hex[:8]}", definition)).id
        run = await direct.execute(wid)
        # Cut after the third event, while the delay holds the run: the rest arrives after the reconnect, live.
        rules = [Rule("GET", "/events", "cut", cut_after_events=3, extra_bytes=5)]
        with FlakyProxy(_port(stack), rules) as proxy:
            async with AsyncClient(proxy.url, token=stack.token(tenant)) as c:
                got = [e async for e in c.events(wid, run.id)]
        reference = [e async for e in direct.events(wid, run.id)]
        assert got == reference and got[-1].type == "workflow_complete"
        assert [s.action for s in proxy.seen] == ["cut", None]
        assert proxy.seen[1].headers["last-event-id"] == str(got[2].id)
        steps = [(e.type, e.step_id) for e in got if e.type.startswith("step_")]
        assert steps == [("step_start", "first"), ("step_complete", "first"), ("step_start", "pause"),
                         ("step_complete", "pause"), ("step_start", "last"), ("step_complete", "last")]


def test_pages_and_errors(stack, tenant):
    with Client(stack.base_url, token=stack.token(tenant)) as c:
        made = {_workflow(c) for _ in range(5)}
        page = c.list_workflows(limit=2)
        assert page.count == 5 and len(page.items) == 2
        assert {w.id for w in c.iter_workflows(page_size=2)} == made
        with pytest.raises(NotFound) as err:
            c.get_workflow(str(uuid.uuid4()))
        assert err.value.status == 404 and err.value.message == "Workflow not found"
        wid = next(iter(made))
        c.update_workflow(wid, status="archived")
        with pytest.raises(Conflict) as err:
            c.execute(wid)
        assert err.value.status == 409 and "active" in err.value.message
    with Client("http://127.0.0.1:9", token="x", max_retries=1) as nowhere:  # nothing listens on port 9
        with pytest.raises(TransportError):
            nowhere.health()


@pytest.fixture(scope="module")
def limited_gateway(infra, tmp_path_factory):
    """A gateway of its own whose v2 limit is 60 per minute (a burst of 60, one more each second)."""
    from tests.conftest import start_processes

    procs, ports = start_processes(infra, ["gateway"], tmp_path_factory.mktemp("limited"),
                                   {"WEFT_V2_RATE_LIMIT_PER_MINUTE": "60"})
    try:
        yield f"http://127.0.0.1:{ports['gateway']}"
    finally:
        procs["gateway"].stop()


def test_a_real_429_is_waited_out_or_raised(stack, tenant, limited_gateway):
    with Client(limited_gateway, token=stack.token(tenant), wait_on_rate_limit=False) as eager:
        with pytest.raises(RateLimited) as err:
            for _ in range(200):
                eager.list_workflows(limit=1)
        assert err.value.status == 429 and err.value.retry_after is not None and err.value.retry_after >= 1
        assert "per minute" in err.value.message
        assert eager.rate_limit.limit == 60 and eager.rate_limit.remaining == 0
    # The patient client must meet a 429 for the test to mean anything; the bucket refills one token a second,
    # so a request that comes late (a loaded machine) or just as a token is due passes at once. Drain the
    # bucket right before each try, and count what the patient's transport saw.
    statuses: list[int] = []

    class Seen(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            statuses.append(response.status_code)
            return response

    for _ in range(5):
        with Client(limited_gateway, token=stack.token(tenant), wait_on_rate_limit=False) as eager:
            with pytest.raises(RateLimited):
                for _ in range(200):
                    eager.list_workflows(limit=1)
        statuses.clear()
        with Client(limited_gateway, token=stack.token(tenant),
                    transport=Seen()) as patient:
            started = time.monotonic()
            assert patient.list_workflows(limit=1).count == 0  # waited for Retry-After if refused, then answered
            waited = time.monotonic() - started
        if 429 in statuses:
            break
    assert statuses[0] == 429 and statuses[-1] == 200, statuses  # refused, waited out, answered
    assert waited >= 0.5


def test_rate_limit_waits_for_retry_after():
    """A 429 with Retry-After is waited out, then the request succeeds (wait_on_rate_limit, the default)."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(429, json={"success": False, "error": "Rate limit exceeded"},
                                  headers={"Retry-After": "1", "X-RateLimit-Limit": "100",
                                           "X-RateLimit-Remaining": "0"})
        return httpx.Response(200, json={"status": "ok", "service": "s", "version": "2", "timestamp": "t"},
                              headers={"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99"})

    with Client("http://weft.test", token="t", transport=httpx.MockTransport(handler)) as c:
        started = time.monotonic()
        assert c.health().status == "ok"
        assert time.monotonic() - started >= 0.9
        assert c.rate_limit.remaining == 99 and calls["n"] == 2
    calls["n"] = 0
    with Client("http://weft.test", token="t", transport=httpx.MockTransport(handler), wait_on_rate_limit=False) as c:
        with pytest.raises(RateLimited) as err:
            c.health()
        assert err.value.retry_after == 1.0


def test_public_client_executes_with_an_api_key_and_reads_status_and_results(stack, tenant):
    with Client(stack.base_url, token=stack.token(tenant)) as user:
        wid = _workflow(user)
        answer = httpx.post(f"{stack.base_url}/api/v2/api-keys", json={"name": "site", "workflow_ids": [wid]},
                            headers={"Authorization": f"Bearer {stack.token(tenant)}"}, timeout=20)
        assert answer.status_code == 201, answer.text
    key = answer.json()["key"]
    with FlakyProxy(_port(stack), [Rule("POST", "/execute", "503_after")]) as proxy, \
            PublicClient(proxy.url, api_key=key) as public:
        execution = public.execute(wid, {"name": "Eve"}, description="from the client")
        assert execution.status == "pending" and execution.id == execution.executionId
        deadline = time.monotonic() + 30
        while (status := public.status(execution.id)).status != "completed":
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert public.results(execution.id).output["greeting"] == "Hello Eve"
        assert public.rate_limit.limit == 10  # the key's burst, from X-RateLimit-Limit
        with pytest.raises(NotFound) as err:
            public.status(str(uuid.uuid4()))
        assert err.value.message == "Execution not found"  # the public shape's "message"
    posts = [s for s in proxy.seen if s.method == "POST"]
    assert len(posts) == 2 and len({s.headers["idempotency-key"] for s in posts}) == 1
    with Client(stack.base_url, token=stack.token(tenant)) as user:
        assert user.list_runs(wid).count == 1


async def test_async_client_retries_follows_and_pages(stack, tenant):
    key = f"k-{uuid.uuid4()}"
    command = uuid.uuid5(_KEY_NAMESPACE, f"{tenant}/alice/{key}")
    async with AsyncClient(stack.base_url, token=stack.token(tenant)) as direct:
        wid = (await direct.create_workflow(f"wf-{uuid.uuid4().hex[:8]}", STEPS)).id
        with FlakyProxy(_port(stack), [Rule("POST", "/execute", "drop_after")]) as proxy:
            async with AsyncClient(proxy.url, token=stack.token(tenant)) as flaky:
                first = await flaky.execute(wid, {"name": "A"})  # dropped once, then answered
        posts = [s for s in proxy.seen if s.method == "POST"]
        assert [p.action for p in posts] == ["drop_after", None]
        assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
        rule = Rule("POST", "/execute", "accepted", location=lambda _: f"/api/v2/workflows/commands/{command}")
        with FlakyProxy(_port(stack), [rule]) as proxy:
            async with AsyncClient(proxy.url, token=stack.token(tenant)) as flaky:
                second = await flaky.execute(wid, {"name": "B"}, idempotency_key=key)  # a 202, followed
        assert [(s.method, s.path.split("/")[5]) for s in proxy.seen] == [
            ("POST", "execute"), ("GET", str(command)), ("GET", "runs")]  # the 202, its Location, the run
        listed = [r.id async for r in direct.iter_runs(wid, page_size=1)]
        assert sorted(listed) == sorted([first.id, second.id])
        assert (await direct.wait_run(wid, second.id, timeout_s=30)).outputs == {"greeting": "Hello B"}
