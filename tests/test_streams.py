"""Live run events (SSE and WebSocket) against real gateway, executor and relay processes.

The core property: a client resuming with Last-Event-ID (or ?lastEventId=) N gets exactly the events after N,
then live ones, with no gap and no duplicate, whether N falls before any event, mid-run, or at the end, and
whether the events were committed before, during or after the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import types
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import nats
import pytest
import websockets

from libs.events.order import cursor_at, read_all
from libs.events.schemas import Metadata
from libs.events.schemas.run import RunCreated, RunStarted
from libs.runtime.probe import NatsProbe
from services.gateway import streams
from tests.conftest import poll, start_processes

DEFINITION = {
    "nodes": [
        {"id": "a", "type": "transform", "config": {"template": {"v": 1}}},
        {"id": "b", "type": "echo", "input_from": "a"},
    ]
}


# ------------------------------------------------------------------ helpers


@dataclass
class Sse:
    id: int | None
    event: str
    data: dict[str, Any]

    def key(self) -> tuple:
        return self.id, self.event, json.dumps(self.data, sort_keys=True)


class SseReader:
    """One open SSE response, parsed into events and comments as they arrive."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self.events: list[Sse] = []
        self.comments: list[str] = []
        self._lines = response.aiter_lines()
        self._fields: dict[str, str] = {}
        self.closed = False

    async def _one(self) -> None:
        line = await self._lines.__anext__()
        if line == "":
            if self._fields:
                f, self._fields = self._fields, {}
                self.events.append(Sse(int(f["id"]) if "id" in f else None, f.get("event", "message"),
                                       json.loads(f["data"]) if "data" in f else {}))
            return
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        self._fields[name] = self._fields.get(name, "") + ("\n" if name == "data" and name in self._fields else "") + value

    async def read_until(self, done, timeout: float = 20.0) -> None:
        """Read until done(self) holds; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while not done(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"stream condition not met in {timeout}s; got {[e.event for e in self.events]}")
            try:
                await asyncio.wait_for(self._one(), left)
            except StopAsyncIteration:
                self.closed = True
                raise AssertionError("stream closed early") from None
            except TimeoutError:
                continue

    async def settle(self, seconds: float) -> None:
        """Keep reading for `seconds` (extra events here would be duplicates or strays)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(self._one(), left)
            except (TimeoutError, StopAsyncIteration):
                return

    @property
    def data_events(self) -> list[Sse]:
        return [e for e in self.events if e.event != "connected"]

    def completes(self) -> int:
        return sum(1 for e in self.events if e.event == "workflow_complete")


@contextlib.asynccontextmanager
async def open_sse(client: httpx.AsyncClient, url: str, **kwargs):
    async with client.stream("GET", url, timeout=httpx.Timeout(30, read=None), **kwargs) as r:
        assert r.status_code == 200, (r.status_code, await r.aread())
        assert r.headers["content-type"].startswith("text/event-stream")
        yield SseReader(r)


def stream_url(wid: str) -> str:
    return f"/api/workflow/stream?workflowId={wid}"


async def read_stream(client, url: str, *, completes: int | None = None, count: int | None = None,
                      headers: dict | None = None, settle: float = 0.3) -> list[Sse]:
    """Data events of a stream, read until `completes` workflow_complete events or `count` data events."""
    async with open_sse(client, url, headers=headers or {}) as s:
        if completes is not None:
            await s.read_until(lambda s: s.completes() >= completes)
        else:
            await s.read_until(lambda s: len(s.data_events) >= count)
        await s.settle(settle)
        return s.data_events


async def create_workflow(client) -> str:
    r = await client.post("/api/v2/workflows", json={"name": f"st-{uuid.uuid4().hex[:8]}", "definition": DEFINITION})
    assert r.status_code == 201, r.text
    return r.json()["workflow"]["id"]


async def execute(client, wid: str) -> str:
    r = await client.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": {}})
    assert r.status_code == 201, r.text
    return r.json()["run"]["id"]


async def wait_done(client, wid: str, rid: str) -> None:
    async def fetch():
        return (await client.get(f"/api/v2/workflows/{wid}/runs/{rid}")).json()["run"]["status"]

    await poll(fetch, lambda s: s in ("completed", "failed", "terminated"), timeout=30)


async def run_to_end(client, wid: str) -> str:
    rid = await execute(client, wid)
    await wait_done(client, wid, rid)
    return rid


def assert_exact(got: list[Sse], want: list[Sse], label: str = "") -> None:
    got_ids, want_ids = [e.id for e in got], [e.id for e in want]
    missing = sorted(set(want_ids) - set(got_ids))
    dupes = sorted({i for i in got_ids if got_ids.count(i) > 1})
    assert got_ids == want_ids, f"{label}: missing {missing}, duplicated {dupes}, got {got_ids}, want {want_ids}"
    assert [e.key() for e in got] == [e.key() for e in want], label


def run_id_of(e: Sse) -> str:
    return e.data["data"]["runId"]


def _connz_subs(infra, subject: str) -> int:
    body = httpx.get(f"http://127.0.0.1:{infra.nats.monitor_port}/connz?subs=1&limit=1024").json()
    return sum(c.get("subscriptions_list", []).count(subject) for c in body.get("connections", []))


# ------------------------------------------------------------------ the workflow stream (contract A)


async def test_stream_shows_connected_steps_and_completion(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await create_workflow(c)
        rid = await run_to_end(c, wid)
        async with open_sse(c, stream_url(wid)) as s:
            await s.read_until(lambda s: s.completes() >= 1)
            await s.settle(0.3)
    first = s.events[0]
    assert first.event == "connected" and first.id is None
    assert first.data == {"type": "connected", "workflowId": wid}
    events = s.data_events
    assert all(e.id is not None for e in events)
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "ids must be strictly increasing"
    steps = [(e.event, e.data.get("stepId")) for e in events if e.event.startswith("step_")]
    assert steps == [("step_start", "a"), ("step_complete", "a"), ("step_start", "b"), ("step_complete", "b")]
    for e in events:
        assert e.data["type"] == e.event and run_id_of(e) == rid
    start_a = next(e for e in events if e.event == "step_start")
    assert start_a.data["data"]["attempt"] == 1
    done_a = next(e for e in events if e.event == "step_complete" and e.data["stepId"] == "a")
    assert done_a.data["data"]["output"] == {"v": 1}
    last = events[-1]
    assert last.event == "workflow_complete" and last.data["data"]["status"] == "completed"
    assert last.data["data"]["runId"] == rid
    # Other run events are `run_event`s named by their type.
    assert [e.data["eventType"] for e in events if e.event == "run_event"][:2] == ["RunCreated", "RunStarted"]


async def test_stream_errors(stack, tenant):
    async with stack.client(tenant) as c, stack.client(f"{tenant}x") as other:
        wid = await create_workflow(c)
        r = await c.get("/api/workflow/stream")
        assert r.status_code == 400 and r.json()["error"] == "Bad Request" and "workflowId" in r.json()["message"]
        r = await c.get("/api/workflow/stream?workflowId=not-a-uuid")
        assert r.status_code == 400 and "message" in r.json()
        r = await c.get(stream_url(wid), headers={"Last-Event-ID": "abc"})
        assert r.status_code == 400
        r = await other.get(stream_url(wid))
        assert r.status_code == 404 and r.json() == {"error": "Not Found", "message": "Workflow not found"}
        r = await c.get(stream_url(str(uuid.uuid4())))
        assert r.status_code == 404
    async with httpx.AsyncClient(base_url=stack.base_url) as anon:
        assert (await anon.get(stream_url(wid))).status_code == 401


# ------------------------------------------------------------------ exactness


async def test_reconnect_at_any_cut_point_gets_exactly_the_suffix(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await create_workflow(c)
        for _ in range(3):
            await run_to_end(c, wid)
        full = await read_stream(c, stream_url(wid), completes=3)
        ids = [e.id for e in full]
        assert ids == sorted(set(ids)) and len(full) >= 21
        mid_run = next(i for i, e in enumerate(full) if e.event == "step_complete" and run_id_of(e) == run_id_of(full[-1]))
        boundary = next(i for i, e in enumerate(full) if e.event == "workflow_complete")
        cuts = {"before any event (0)": 0, "just before the first": ids[0] - 1, "first": ids[0],
                "run boundary": ids[boundary], "mid-run": ids[mid_run], "second to last": ids[-2],
                "random": random.choice(ids)}
        for label, cut in cuts.items():
            want = [e for e in full if e.id > cut]
            got = await read_stream(c, stream_url(wid), count=len(want), headers={"Last-Event-ID": str(cut)}) \
                if want else None
            if got is not None:
                assert_exact(got, want, label)
        # Query parameter works the same; the header wins when both are given.
        got = await read_stream(c, f"{stream_url(wid)}&lastEventId={ids[3]}", count=len(full) - 4)
        assert_exact(got, full[4:], "?lastEventId")
        got = await read_stream(c, f"{stream_url(wid)}&lastEventId={ids[0]}", count=len(full) - 6,
                                headers={"Last-Event-ID": str(ids[5])})
        assert_exact(got, full[6:], "header over query")
        # At the very end: nothing but heartbeats until something new happens.
        async with open_sse(c, stream_url(wid), headers={"Last-Event-ID": str(ids[-1])}) as s:
            await s.read_until(lambda s: len(s.events) >= 1)
            await s.settle(0.5)
        assert s.data_events == []


async def test_events_committed_while_disconnected_arrive_on_resume(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await create_workflow(c)
        await run_to_end(c, wid)
        before = await read_stream(c, stream_url(wid), completes=1)
        # Live: connect at the end, start a run, leave mid-run.
        async with open_sse(c, stream_url(wid), headers={"Last-Event-ID": str(before[-1].id)}) as s:
            await s.read_until(lambda s: s.events and s.events[0].event == "connected")
            rid = await execute(c, wid)
            await s.read_until(lambda s: any(e.event == "step_start" for e in s.events))
            first_part = s.data_events
        # Disconnected: that run finishes and another runs entirely.
        await wait_done(c, wid, rid)
        await run_to_end(c, wid)
        async with open_sse(c, stream_url(wid), headers={"Last-Event-ID": str(first_part[-1].id)}) as s:
            await s.read_until(lambda s: s.completes() >= 2)
            # And live again after the resume's replay.
            await run_to_end(c, wid)
            await s.read_until(lambda s: s.completes() >= 3)
            await s.settle(0.3)
            second_part = s.data_events
        full = await read_stream(c, stream_url(wid), completes=4)
    assert_exact(first_part + second_part, full[len(before):], "resume across a disconnect")


async def test_readers_connecting_while_runs_commit_see_every_event_once(stack, tenant):
    """The replay -> live handoff under fire: readers connect (from 0 and from cut points) while runs are
    committing events, so some events land between a reader's replay and its first live message."""
    runs = 6
    async with stack.client(tenant) as c:
        wid = await create_workflow(c)
        await run_to_end(c, wid)
        seed = await read_stream(c, stream_url(wid), completes=1)

        finished: list[float] = []

        async def runner():
            for _ in range(runs):
                await run_to_end(c, wid)
            finished.append(time.monotonic())

        async def reader(delay: float, after: int):
            await asyncio.sleep(delay)
            async with open_sse(c, stream_url(wid), headers={"Last-Event-ID": str(after)}) as s:
                need = runs + 1 - sum(1 for e in seed if e.id <= after and e.event == "workflow_complete")
                # Until every completion arrived, or (when one is lost) a grace period after the last run,
                # so that a gap shows up below as the exact ids missing rather than as a time-out.
                await s.read_until(lambda s: s.completes() >= need or bool(finished and time.monotonic()
                                                                           > finished[0] + 3), timeout=90)
                await s.settle(0.5)
                return after, s.data_events

        task = asyncio.create_task(runner())
        cuts = [0, seed[2].id, seed[-1].id]
        readers = [asyncio.create_task(reader(0.15 * i, cuts[i % len(cuts)])) for i in range(12)]
        results = await asyncio.gather(*readers)
        await task
        full = await read_stream(c, stream_url(wid), completes=runs + 1)
    for i, (after, got) in enumerate(results):
        assert_exact(got, [e for e in full if e.id > after], f"reader {i} from {after}")


# ------------------------------------------------------------------ one run: SSE and WebSocket


async def test_run_stream_and_websocket_give_the_same_sequence(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await create_workflow(c)
        await run_to_end(c, wid)
        rid = await run_to_end(c, wid)
        await run_to_end(c, wid)
        full = await read_stream(c, stream_url(wid), completes=3)
        mine = [e for e in full if run_id_of(e) == rid]
        url = f"/api/v2/workflows/{wid}/runs/{rid}/events"
        async with open_sse(c, url) as s:
            await s.read_until(lambda s: s.completes() >= 1)
            await s.settle(0.3)
        assert s.events[0].data == {"type": "connected", "workflowId": wid, "runId": rid}
        assert_exact(s.data_events, mine, "run SSE")
        cut = mine[2].id
        got = await read_stream(c, url, count=len(mine) - 3, headers={"Last-Event-ID": str(cut)})
        assert_exact(got, mine[3:], "run SSE resume")

        ws_base = stack.base_url.replace("http://", "ws://") + f"/api/v2/workflows/{wid}/runs/{rid}/ws"

        async def ws_read(url: str, n: int, headers: dict | None = None) -> list[dict]:
            out: list[dict] = []
            async with websockets.connect(url, additional_headers=headers or {}) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert hello == {"type": "connected", "workflowId": wid, "runId": rid}
                while len(out) < n:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if msg["type"] != "heartbeat":
                        out.append(msg)
                with contextlib.suppress(TimeoutError):  # nothing more must come
                    extra = json.loads(await asyncio.wait_for(ws.recv(), 0.4))
                    assert extra["type"] == "heartbeat", extra
            return out

        def as_sse(msgs: list[dict]) -> list[Sse]:
            return [Sse(m.pop("id"), m["type"], m) for m in msgs]

        got = await ws_read(f"{ws_base}?token={stack.token(tenant)}", len(mine))
        assert_exact(as_sse(got), mine, "websocket")
        got = await ws_read(f"{ws_base}?lastEventId={cut}", len(mine) - 3,
                            headers={"Authorization": f"Bearer {stack.token(tenant)}"})
        assert_exact(as_sse(got), mine[3:], "websocket resume")

        # Another tenant: 404 in each shape.
        async with stack.client(f"{tenant}x") as other:
            r = await other.get(url)
            assert r.status_code == 404 and r.json() == {"success": False, "error": "Run not found"}
        r = await c.get(f"/api/v2/workflows/{wid}/runs/{uuid.uuid4()}/events")
        assert r.status_code == 404
        async with websockets.connect(f"{ws_base}?token={stack.token(f'{tenant}x')}") as ws:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert msg == {"type": "error", "status": 404, "error": "Run not found"}
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd.code == 4404
        async with websockets.connect(ws_base) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["status"] == 401


# ------------------------------------------------------------------ disconnects, heartbeats, overflow


async def test_client_disconnect_removes_the_nats_subscription(stack, infra, tenant):
    if infra.nats is None:  # pragma: no cover - testcontainers have no monitor port mapped
        pytest.skip("needs the embedded nats-server's monitor port")
    subject = f"weft.evt.{tenant}.run.>"
    async with stack.client(tenant) as c:
        wid = await create_workflow(c)
        rid = await run_to_end(c, wid)
        for _ in range(2):
            async with open_sse(c, stream_url(wid)) as s:
                await s.read_until(lambda s: s.completes() >= 1)
                await poll(lambda: asyncio.to_thread(_connz_subs, infra, subject), lambda n: n == 1)
            await poll(lambda: asyncio.to_thread(_connz_subs, infra, subject), lambda n: n == 0)
        run_subject = f"weft.evt.{tenant}.run.{rid}.*"
        ws_url = stack.base_url.replace("http://", "ws://") + f"/api/v2/workflows/{wid}/runs/{rid}/ws"
        async with websockets.connect(f"{ws_url}?token={stack.token(tenant)}") as ws:
            await asyncio.wait_for(ws.recv(), 10)
            await poll(lambda: asyncio.to_thread(_connz_subs, infra, run_subject), lambda n: n == 1)
        await poll(lambda: asyncio.to_thread(_connz_subs, infra, run_subject), lambda n: n == 0)


@pytest.fixture(scope="module")
def fast_heartbeat_gateway(infra, stack):
    """A second gateway process with a 0.2 s heartbeat, on the session's Postgres and NATS."""
    procs, ports = start_processes(infra, ["gateway"], infra.root / "logs-heartbeat",
                                   extra_env={"WEFT_STREAM_HEARTBEAT_S": "0.2"})
    try:
        yield f"http://127.0.0.1:{ports['gateway']}"
    finally:
        procs["gateway"].stop()


async def test_heartbeats_arrive_on_idle_streams(stack, tenant, fast_heartbeat_gateway):
    async with stack.client(tenant) as c:
        wid = await create_workflow(c)
        rid = await run_to_end(c, wid)
    async with httpx.AsyncClient(base_url=fast_heartbeat_gateway,
                                 headers={"Authorization": f"Bearer {stack.token(tenant)}"}) as c:
        async with open_sse(c, stream_url(wid)) as s:
            await s.read_until(lambda s: s.completes() >= 1)
            started = time.monotonic()
            beats = s.comments.count("heartbeat")
            await s.read_until(lambda s: s.comments.count("heartbeat") >= beats + 3, timeout=10)
            elapsed = time.monotonic() - started
    assert s.events[0].event == "connected" and s.completes() == 1
    assert 0.4 < elapsed < 5, elapsed
    ws_url = fast_heartbeat_gateway.replace("http://", "ws://") + f"/api/v2/workflows/{wid}/runs/{rid}/ws"
    async with websockets.connect(f"{ws_url}?token={stack.token(tenant)}") as ws:
        kinds: list[str] = []
        while kinds.count("heartbeat") < 3:
            kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["type"])
    assert kinds[0] == "connected" and "workflow_complete" in kinds


async def test_with_heartbeats_interleaves_and_closes_the_source():
    closed = asyncio.Event()

    async def slow():
        try:
            for i in range(3):
                await asyncio.sleep(0.25)
                yield i
            await asyncio.sleep(10)
        finally:
            closed.set()

    seen: list[Any] = []
    stream = streams.with_heartbeats(slow(), 0.1)
    async for item in stream:
        seen.append(item)
        if seen.count(2) and seen.count(streams.HEARTBEAT) >= 8:
            break
    await stream.aclose()
    assert [x for x in seen if x is not streams.HEARTBEAT] == [0, 1, 2]
    assert seen.index(0) >= 1, "a heartbeat comes before a slow first item"
    assert closed.is_set(), "closing the heartbeat stream closes its source"


async def test_feed_ends_with_reconnect_when_its_live_buffer_overflows(store, settings, tenant):
    """Bounded buffer: a reader that falls MAX_BUFFER behind is dropped (it resumes by id), never grows."""
    nc = await nats.connect(settings.nats_url)
    subject_root = f"test.streams.{uuid.uuid4().hex}"

    class TestScope(streams.Scope):
        @property
        def subject(self) -> str:  # a private subject: nothing here reaches the real event stream
            return f"{subject_root}.>"

    try:
        probe = NatsProbe(nc)
        await probe.start()
        ctx = types.SimpleNamespace(store=store, nc=nc, probe=probe)
        feed = streams.EventFeed(ctx, TestScope(tenant, uuid.uuid4()), 0, max_buffer=5)
        items = feed.__aiter__()
        assert isinstance(await items.__anext__(), streams.Connected)
        for i in range(20):
            await nc.publish(f"{subject_root}.x", b"{}", headers={"Weft-Position": str(i + 1)})
        await nc.flush()
        await asyncio.sleep(0.2)
        end = await asyncio.wait_for(items.__anext__(), 5)
        assert isinstance(end, streams.Reconnect) and "overflow" in end.reason
        with pytest.raises(StopAsyncIteration):
            await items.__anext__()
        assert feed._queue.qsize() <= 6
    finally:
        await nc.close()


async def test_workflow_feed_never_skips_an_event_that_commits_late(store, settings, tenant):
    """A workflow's feed spans streams, so it follows the global order (docs/decisions/0032): an event whose
    transaction commits after a later-started one's must still reach the reader, once, and in (xid, position)
    order. Replay from Postgres, then live messages from a relay stand-in (the real read_all, the relay's headers)
    on a private subject."""
    nc = await nats.connect(settings.nats_url)
    admin = await asyncpg.connect(settings.database_url)
    root = f"test.streams.{uuid.uuid4().hex}"

    class TestScope(streams.Scope):
        @property
        def subject(self) -> str:
            return f"{root}.>"

    wid, meta, now = uuid.uuid4(), Metadata(tenant_id=tenant), datetime.now(UTC)
    r1, r2 = uuid.uuid4(), uuid.uuid4()

    def created(rid: uuid.UUID) -> RunCreated:
        return RunCreated(run_id=rid, workflow_id=wid, workflow_version=1, definition={"concurrency": "unlimited"},
                          inputs={}, created_by="t", at=now)

    relayed = await cursor_at(admin, await admin.fetchval("SELECT coalesce(max(global_position), 0) FROM events"))
    ours: list[tuple[int, int]] = []  # (xid, position) of this test's events, in the order the stand-in relayed them

    async def relay_until(count: int) -> None:
        nonlocal relayed
        deadline = time.monotonic() + 15
        while len(ours) < count:
            assert time.monotonic() < deadline, f"relayed {len(ours)} of {count} events"
            for rec in await read_all(admin, relayed, 100):
                relayed = rec.cursor
                if rec.tenant_id == tenant:
                    ours.append(rec.cursor)
                    await nc.publish(f"{root}.{rec.type}", rec.data, headers={
                        "Weft-Position": str(rec.global_position), "Weft-Xid": str(rec.xid),
                        "Weft-Stream": rec.stream_id, "Weft-Type": rec.type})
            await asyncio.sleep(0.02)

    got: list = []

    async def consume(feed) -> None:
        async for item in feed:
            got.append(item)

    consumer = None
    try:
        probe = NatsProbe(nc)
        await probe.start()
        ctx = types.SimpleNamespace(store=store, nc=nc, probe=probe)
        await store.append(f"run-{r1}", 0, [created(r1)], metadata=meta)
        await store.append(f"run-{r2}", 0, [created(r2)], metadata=meta)
        async with store.transaction(tenant) as slow:  # takes its xid now, commits last
            await slow.append_recorded(f"run-{r1}", 1, [RunStarted(run_id=r1, at=now)], metadata=meta)
            await store.append(f"run-{r2}", 1, [RunStarted(run_id=r2, at=now)], metadata=meta)
            consumer = asyncio.create_task(consume(streams.EventFeed(ctx, TestScope(tenant, wid), 0)))
            await poll(lambda: asyncio.sleep(0, len(got)), lambda n: n >= 3, timeout=10)  # connected + 2 replayed
            await asyncio.sleep(0.5)  # anything else the replay would send, while the slow transaction runs
            replayed = got[1:]
        await relay_until(4)
        deadline = time.monotonic() + 5  # a bounded wait, so that a skipped event fails below by name
        while len(got) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        live = got[1 + len(replayed):]
    finally:
        if consumer is not None:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        await admin.close()
        await nc.close()
    assert isinstance(got[0], streams.Connected)
    positions = [e.position for e in replayed + live]
    assert sorted(positions) == sorted(p for _, p in ours), (positions, ours)  # each event once, none skipped
    assert positions == [p for _, p in sorted(ours)], "not in (xid, position) order"
    assert len(replayed) == 2, "the replay read past a transaction that was still running"


def test_run_messages_follow_contract_a():
    rid = str(uuid.uuid4())
    assert streams.run_message("StepStarted", {"type": "StepStarted", "run_id": rid, "step_id": "s", "attempt": 2,
                                               "at": "t"}) == {
        "type": "step_start", "stepId": "s", "data": {"runId": rid, "attempt": 2, "at": "t"}}
    assert streams.run_message("StepFailed", {"run_id": rid, "step_id": "s", "error": "boom", "attempt": 1}) == {
        "type": "step_error", "stepId": "s", "data": {"runId": rid, "error": "boom", "attempt": 1}}
    for event_type, status in [("RunCompleted", "completed"), ("RunFailed", "failed"),
                               ("RunCancelled", "cancelled"), ("RunTerminated", "cancelled")]:
        msg = streams.run_message(event_type, {"run_id": rid})
        assert msg == {"type": "workflow_complete", "data": {"status": status, "runId": rid, "eventType": event_type}}
    assert streams.run_message("StepRetryScheduled", {"run_id": rid, "step_id": "s", "retry_at": "t"}) == {
        "type": "run_event", "eventType": "StepRetryScheduled", "stepId": "s", "data": {"runId": rid, "retryAt": "t"}}
