"""Failed authentication is rate-limited per client address across gateways (issue 15), with the headers of
the other limits: unknown API keys and bad JWTs spend one shared bucket; once it is empty, credentialed
requests from that address get 429 until it refills."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import start_processes

LIMIT = 6


@pytest.fixture(scope="module")
def two_gateways(infra, stack):
    procs, ports = {}, {}
    for name in ("a", "b"):
        p, pt = start_processes(infra, ["gateway"], infra.root / f"logs-authlimit-{name}-{uuid.uuid4().hex[:6]}",
                                {"WEFT_AUTH_FAILURES_PER_MINUTE": str(LIMIT)})
        procs[name], ports[name] = p["gateway"], pt["gateway"]
    try:
        yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    finally:
        for proc in procs.values():
            proc.stop()


async def test_failed_authentication_is_bounded_per_address_across_gateways(stack, tenant, two_gateways):
    good = {"Authorization": f"Bearer {stack.token(tenant)}"}
    guesses = [{"Authorization": f"Bearer weft_{uuid.uuid4().hex}{uuid.uuid4().hex}"},
               {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad"},
               {"Authorization": "Bearer not-a-token"}]
    async with httpx.AsyncClient(base_url=two_gateways["a"], timeout=20) as a, \
            httpx.AsyncClient(base_url=two_gateways["b"], timeout=20) as b:
        assert (await a.get("/api/v2/workflows", headers=good)).status_code == 200
        remaining = []
        for i in range(LIMIT):  # alternate gateways and surfaces: one bucket for the address
            client = (a, b)[i % 2]
            path = ("/api/v1/public/executions/x/status", "/api/v2/workflows", "/api/workflows")[i % 3]
            r = await client.get(path, headers=guesses[i % 3])
            assert r.status_code == 401, (i, path, r.text)
            assert r.headers["x-ratelimit-limit"] == str(LIMIT)
            remaining.append(int(r.headers["x-ratelimit-remaining"]))
        assert remaining == list(range(LIMIT - 1, -1, -1)), remaining
        # Gateway a has not seen the bucket empty yet: its next failure finds it so (401, no token left, and
        # Retry-After) and holds the address from then on. The bound is the limit plus one per gateway.
        r = await a.get("/api/v2/workflows", headers=guesses[1])
        assert r.status_code == 401 and r.headers["x-ratelimit-remaining"] == "0" and "retry-after" in r.headers
        for client in (a, b):
            r = await client.get("/api/v1/public/executions/x/status", headers=guesses[0])
            assert r.status_code == 429, r.text
            assert int(r.headers["retry-after"]) >= 1 and r.json()["retryAfter"] >= 1
            assert r.json()["statusCode"] == 429  # the public API's error shape
            # while the address is held, a right guess is refused like a wrong one
            r = await client.get("/api/v2/workflows", headers=good)
            assert r.status_code == 429 and r.json()["success"] is False and "x-ratelimit-reset" in r.headers
        # requests without credentials are never held
        assert (await a.get("/api/v2/workflows/health")).status_code == 200
