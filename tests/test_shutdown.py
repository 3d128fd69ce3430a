"""Graceful shutdown: SIGTERM of a service under load loses no accepted command and applies none twice."""

from __future__ import annotations

import asyncio
import time
import uuid

from deploy.local.stack import wait_http
from tests.conftest import poll

DEFINITION = {"nodes": [{"id": "a", "type": "echo"}]}


async def test_sigterm_under_load_loses_nothing(stack, tenant):
    planner = stack.procs["planner"]
    sent: list[str] = []
    responses = []
    spans: list[tuple[float, float]] = []
    stop_sending = asyncio.Event()
    async with stack.client(tenant) as c:

        async def client_loop(worker: int) -> None:
            i = 0
            while not stop_sending.is_set():
                name = f"load-{worker}-{i}-{uuid.uuid4().hex[:6]}"
                sent.append(name)
                began = time.monotonic()
                # A key per workflow, so a client retry could never create a second one.
                responses.append(await c.post("/api/v2/workflows", json={"name": name, "definition": DEFINITION},
                                              headers={"Idempotency-Key": name}))
                spans.append((began, time.monotonic()))
                i += 1

        clients = [asyncio.create_task(client_loop(w)) for w in range(6)]
        await asyncio.sleep(0.5)
        sigterm_at = time.monotonic()
        await asyncio.to_thread(planner.stop)  # SIGTERM; returns when the process has exited
        stopped_in = time.monotonic() - sigterm_at
        planner.start()
        await asyncio.to_thread(wait_http, stack.ports["planner"])
        await asyncio.sleep(0.5)
        stop_sending.set()
        await asyncio.gather(*clients)

        assert {r.status_code for r in responses} <= {201, 202}, [r.text for r in responses if r.status_code > 202]
        in_flight = [s for s in spans if s[0] < sigterm_at < s[1]]
        assert in_flight, "no request was in flight when SIGTERM arrived; the test proved nothing"
        for r in responses:
            if r.status_code == 202:
                await poll(lambda loc=r.json()["location"]: c.get(loc),
                           lambda resp: resp.json()["command"]["state"] == "committed", timeout=60)
        listing = (await c.get("/api/v2/workflows", params={"limit": 500})).json()
    assert len(sent) < 500
    assert sorted(w["name"] for w in listing["workflows"]) == sorted(sent)
    assert stopped_in < 20
