"""Issue 15: what a client can send never yields a 500 (or a 500 after a commit), and identities are whole.

Against the session's real gateway: malformed identity claims, NUL characters on the routes that write
directly, API-key expiry bounds, and the command lookup a 202 points at.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import httpx
import jwt

from services.gateway.commands import _KEY_NAMESPACE
from tests.test_streams import DEFINITION


def _token(stack, **overrides) -> str:
    s = stack.settings
    now = int(time.time())
    claims = {"iss": s.jwt_issuer, "aud": s.jwt_audience, "sub": "alice", s.jwt_tenant_claim: "acme",
              "iat": now, "exp": now + 600} | overrides
    return jwt.encode(claims, s.jwt_secret, algorithm="HS256")


def _client(stack, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=20)


async def test_malformed_identity_claims_get_401_never_500(stack, tenant):
    cases = {
        "tenant with a trailing newline": _token(stack, customer_id=f"{tenant}\n"),
        "exp as a numeric string": _token(stack, customer_id=tenant, exp=str(int(time.time()) + 600)),
        "iat as a numeric string": _token(stack, customer_id=tenant, iat=str(int(time.time()))),
        "NUL in sub": _token(stack, customer_id=tenant, sub="ali\x00ce"),
        "sub not a string": _token(stack, customer_id=tenant, sub=["alice"]),
    }
    for label, token in cases.items():
        async with _client(stack, token) as c:
            for method, path, body in (("GET", "/api/v2/workflows", None),
                                       ("POST", "/api/v2/workflows", {"name": "x", "definition": DEFINITION}),
                                       ("POST", "/api/v2/api-keys", {"name": "k", "workflow_ids": []})):
                r = await c.request(method, path, json=body)
                assert r.status_code == 401, (label, method, path, r.status_code, r.text)
    async with _client(stack, _token(stack, customer_id=tenant)) as c:  # the same token, well formed, works
        assert (await c.get("/api/v2/workflows")).status_code == 200


async def _workflow(c) -> str:
    r = await c.post("/api/v2/workflows", json={"name": f"h-{uuid.uuid4().hex[:6]}", "definition": DEFINITION})
    assert r.status_code == 201, r.text
    return r.json()["workflow"]["id"]


async def test_api_key_expiry_is_bounded_before_anything_is_written(stack, pool, tenant):
    async with stack.client(tenant) as c:
        wid = await _workflow(c)
        for expires in ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z",
                        "2200-01-01T00:00:00Z", "2020-01-01T00:00:00Z", "2001-01-01T00:00:00-14:00"):
            r = await c.post("/api/v2/api-keys", json={"name": "k", "workflow_ids": [wid], "expires_at": expires})
            assert r.status_code == 400 and r.json()["field"] == "expires_at", (expires, r.status_code, r.text)
        r = await c.get("/api/v2/api-keys")
        assert r.status_code == 200 and r.json()["count"] == 0, r.text
        ok = await c.post("/api/v2/api-keys", json={"name": "k", "workflow_ids": [wid],
                                                     "expires_at": "2027-06-01T00:00:00Z"})
        assert ok.status_code == 201, ok.text
        key_id = ok.json()["api_key"]["id"]
        r = await c.patch(f"/api/v2/api-keys/{key_id}", json={"expires_at": "0001-01-01T00:00:00Z"})
        assert r.status_code == 400 and r.json()["field"] == "expires_at", r.text
        # A row stored before this fix (year 1) must not make every later read a 500.
        await pool.execute("UPDATE api_keys SET expires_at = $2 WHERE id = $1", uuid.UUID(key_id),
                           datetime(1, 1, 1, tzinfo=UTC))
        r = await c.get("/api/v2/api-keys")
        assert r.status_code == 200 and r.json()["api_keys"][0]["status"] == "expired", r.text
        assert (await c.get(f"/api/v2/api-keys/{key_id}")).status_code == 200


async def test_nul_characters_give_400_naming_the_field(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _workflow(c)
        r = await c.post("/api/v2/api-keys", json={"name": "k\x00", "workflow_ids": [wid]})
        assert r.status_code == 400 and r.json()["field"] == "name", r.text
        r = await c.post("/api/v2/api-keys", json={"name": "k", "workflow_ids": [wid]})
        key_id = r.json()["api_key"]["id"]
        r = await c.patch(f"/api/v2/api-keys/{key_id}", json={"name": "\x00"})
        assert r.status_code == 400 and r.json()["field"] == "name", r.text
        url = "https://hooks.example.com/weft"
        for body, field in (({"url": url, "secret": "s" * 20 + "\x00" + "s" * 20}, "secret"),
                            ({"url": url, "owner_email": "ann\x00@example.com"}, "owner_email"),
                            ({"url": "https://hooks.example.com/\x00"}, "url")):
            r = await c.post("/api/v2/webhooks", json=body)
            assert r.status_code == 400 and r.json()["field"] == field, (body, r.status_code, r.text)
        assert (await c.get("/api/v2/webhooks")).json()["count"] == 0


async def test_command_lookup_is_404_for_unknown_and_other_tenants_ids(stack, tenant):
    async with stack.client(tenant) as c:
        r = await c.get(f"/api/v2/workflows/commands/{uuid.uuid4()}")
        assert r.status_code == 404, r.text
        r = await c.post("/api/v2/workflows", json={"name": "cmd", "definition": DEFINITION},
                         headers={"Idempotency-Key": "cmd-1"})
        assert r.status_code == 201, r.text
        command_id = uuid.uuid5(_KEY_NAMESPACE, f"{tenant}/alice/cmd-1")
        r = await c.get(f"/api/v2/workflows/commands/{command_id}")
        assert r.status_code == 200 and r.json()["command"]["state"] == "committed", r.text
    async with stack.client(f"{tenant}x") as other:
        r = await other.get(f"/api/v2/workflows/commands/{command_id}")
        assert r.status_code == 404, r.text
