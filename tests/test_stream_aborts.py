"""Clients that abort live streams cannot take the gateway down (issue 15).

A client that resets its TCP connection ~2 ms after sending `GET /api/workflow/stream?...` cancels the stream's
request task while it is waiting for nats-server. Before the fix that task was inside nats-py's `flush()`: its
cancelled PONG future stayed queued on the gateway's one shared connection, and the next PONG killed the
connection's read loop (`InvalidStateError` in `_process_pong`), so every command of every tenant answered 503
while /health/ready said ready. Here: hundreds of such aborts against a gateway of its own, then commands still
answer 2xx at once and the gateway is still ready.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
import types
import uuid

import httpx
import pytest

from deploy.local.embedded import free_port
from deploy.local.stack import PROCESSES, ServiceProcess, service_env, wait_http
from tests.fakes.latency_proxy import LatencyProxy
from tests.test_streams import DEFINITION

ABORTS = 300
AT_ONCE = 10


@pytest.fixture(scope="module")
def own_gateway(infra, stack):
    """A gateway of its own (the session's planner, executor and relay serve its commands), reaching nats-server
    through a 3 ms proxy, as a gateway reaches a NATS cluster in another rack: a stream's round trip to
    nats-server then lasts long enough for a client's reset to land inside it."""
    from urllib.parse import urlsplit

    nats_url = urlsplit(infra.nats_url)
    proxy = LatencyProxy(nats_url.hostname, nats_url.port, 0.003).start()
    log_dir = infra.root / f"logs-aborts-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = service_env(os.environ.copy(), name="gateway", port=port, database_url=infra.database_url,
                      nats_url=f"nats://127.0.0.1:{proxy.port}")
    proc = ServiceProcess("gateway", PROCESSES["gateway"][0], env, log_dir)
    proc.start()
    try:
        wait_http(port)
        yield f"http://127.0.0.1:{port}", port, log_dir / "gateway.log"
    finally:
        proc.stop()
        proxy.stop()


async def _abort(port: int, path: str, token: str, delay: float) -> None:
    """Send a stream request, wait for the response to start and then `delay` more (the stream is talking to
    nats-server by then), then reset the connection (RST, as a killed client does)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        await asyncio.sleep(delay)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        writer.transport.abort()


async def test_hundreds_of_aborted_streams_leave_commands_answering(stack, tenant, own_gateway):
    base, port, log_file = own_gateway
    token = stack.token(tenant)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=20) as c:
        r = await c.post("/api/v2/workflows", json={"name": "aborts", "definition": DEFINITION})
        assert r.status_code == 201, r.text
        wid = r.json()["workflow"]["id"]
        r = await c.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": {}})
        assert r.status_code == 201, r.text
        rid = r.json()["run"]["id"]
        paths = [f"/api/workflow/stream?workflowId={wid}", f"/api/v2/workflows/{wid}/runs/{rid}/events"]
        gate = asyncio.Semaphore(AT_ONCE)

        async def one(i: int) -> None:
            async with gate:
                # 0 to 5 ms after the response started: inside the stream's round trip to nats-server
                await _abort(port, paths[i % 2], token, (i % 11) * 0.0005)

        await asyncio.gather(*(one(i) for i in range(ABORTS)))
        await asyncio.sleep(1.0)  # let every cancelled request task finish, and a few NATS PINGs pass

        for n in range(5):  # commands answer at once, for this tenant and another
            started = time.monotonic()
            r = await c.post("/api/v2/workflows", json={"name": f"after-{n}", "definition": DEFINITION})
            assert r.status_code == 201, r.text
            assert time.monotonic() - started < 3.0
        other = stack.token(f"t{uuid.uuid4().hex[:12]}")
        r = await c.post("/api/v2/workflows", json={"name": "other", "definition": DEFINITION},
                         headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 201, r.text
        assert (await c.get("/health/ready")).status_code == 200
        # and a stream still works end to end
        async with c.stream("GET", paths[1], timeout=httpx.Timeout(10, read=10)) as s:
            assert s.status_code == 200
            async for line in s.aiter_lines():
                if "workflow_complete" in line:
                    break
    text = log_file.read_text(errors="replace")
    assert "InvalidStateError" not in text and "nats: encountered error" not in text


async def test_readiness_reflects_a_connection_that_cannot_read(settings, pool):
    """The failure above, on a connection of its own: a cancelled nc.flush() leaves a cancelled PONG future
    queued, and the next PONG stops the read loop while nc.is_connected stays true. Readiness must say so."""
    import nats
    from litestar.datastructures import State

    from libs.runtime.probe import NatsProbe
    from libs.runtime.service import ready

    nc = await nats.connect(settings.nats_url)
    try:
        probe = NatsProbe(nc)
        await probe.start()
        state = State({"ctx": types.SimpleNamespace(nc=nc, pool=pool, probe=probe)})
        assert (await ready(state)).status_code == 200
        broken = asyncio.create_task(nc.flush())
        await asyncio.sleep(0)  # the PING is queued with its future
        broken.cancel()
        await asyncio.gather(broken, return_exceptions=True)
        await asyncio.sleep(0.3)  # the PONG arrives and the read loop dies
        assert nc.is_connected, "nats-py still says connected: that alone cannot be readiness"
        response = await ready(state)
        assert response.status_code == 503 and response.content["checks"]["nats"] is False
    finally:
        await nc.close()
