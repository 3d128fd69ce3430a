"""Connected accounts (contract A's /api/auth) against a real gateway process and a local fake OAuth provider:
PKCE and single-use state, tokens sealed at rest and never answered, refresh, revoke-then-delete, status and
preferences, with the 401/400/403/404 cases."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from libs.adapters import connections as stored
from libs.adapters import oauth
from libs.adapters.outbound import GuardedHttpClient
from libs.events.settings import load_settings
from libs.security.auth import issue_token
from libs.security.secrets import SecretBox
from tests.conftest import start_processes
from tests.fakes.oauth_server import FakeOAuth


@pytest.fixture(scope="module")
def provider_fake():
    with FakeOAuth() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(infra, stack, provider_fake):
    env = {**provider_fake.env("google"), **provider_fake.env("salesforce"), "WEFT_OUTBOUND_ALLOW_HOSTS": "127.0.0.1:*"}
    procs, ports = start_processes(infra, ["gateway"], infra.root / "logs-accounts", env)
    try:
        yield f"http://127.0.0.1:{ports['gateway']}", procs["gateway"], env
    finally:
        procs["gateway"].stop()


def client(stack, base: str, tenant: str | None, user: str = "alice") -> httpx.AsyncClient:
    headers = {} if tenant is None else {"Authorization": f"Bearer {issue_token(stack.settings, tenant, user)}"}
    return httpx.AsyncClient(base_url=base, headers=headers, timeout=20)


async def connect(c: httpx.AsyncClient, provider: str = "google") -> httpx.Response:
    """What a browser does: the gateway's redirect, the provider's consent (the fake grants at once), back."""
    r = await c.get(f"/api/auth/{provider}/connect")
    assert r.status_code == 302, r.text
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(r.headers["location"])
    assert consent.status_code == 302
    back = urlsplit(consent.headers["location"])
    assert back.path == f"/api/auth/{provider}/callback"
    return await c.get(f"{back.path}?{back.query}")


async def test_connect_status_refresh_and_disconnect(stack, gateway, provider_fake, tenant, pool):
    base, proc, env = gateway
    async with client(stack, base, tenant) as alice, client(stack, base, tenant, "bob") as bob, \
            client(stack, base, f"o{tenant}") as stranger, client(stack, base, None) as anon:
        body = (await alice.get("/api/auth/status")).json()
        assert body["isAuthenticated"] is True and body["session"]["userId"] == "alice"
        assert body["session"]["oauthStatus"] == {"isConnected": False, "userEmail": None, "scopes": [],
                                                  "expiresAt": None}
        assert body["session"]["preferences"] == {"theme": "system", "notificationsEnabled": True,
                                                  "defaultView": "dashboard", "favoriteActions": []}

        r = await alice.get("/api/auth/google/connect")
        query = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
        assert r.headers["location"].startswith(provider_fake.url("/authorize"))
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert query["state"].startswith(f"{tenant}.") and query["client_id"] == "fake-client"

        r = await connect(alice)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard?connected=google", r.text
        exchange = provider_fake.token_requests[-1]
        assert exchange["grant_type"] == "authorization_code" and len(exchange["code_verifier"]) >= 43
        status = (await alice.get("/api/auth/status")).json()["session"]["oauthStatus"]
        assert status["isConnected"] is True and status["userEmail"] == "alice@example.com"
        assert "email" in status["scopes"] and status["expiresAt"]
        assert (await bob.get("/api/auth/status")).json()["session"]["oauthStatus"]["isConnected"] is False
        assert (await stranger.get("/api/auth/status")).json()["session"]["oauthStatus"]["isConnected"] is False

        # Sealed at rest: no token in clear in the row; the key id is kept for rotation.
        row = await pool.fetchrow("SELECT * FROM connections WHERE tenant_id = $1 AND user_id = 'alice'", tenant)
        issued = [t for t in provider_fake.refresh_tokens] + list(provider_fake.access_tokens)
        raw = b"".join(v for v in dict(row).values() if isinstance(v, bytes))
        assert row["key_id"] == "dev" and not any(t.encode() in raw for t in issued)
        keyring = SecretBox.from_settings(load_settings({}))
        tokens = await _load(stack, pool, keyring, tenant)
        assert tokens.access_token in provider_fake.access_tokens

        # Refresh on request: the answer says when, never what.
        before = len(provider_fake.token_requests)
        r = await alice.post("/api/auth/refresh-google-token", json={"refreshToken": "ignored"})
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"success", "expires_in", "token_type", "expiresAt"}
        assert 3500 <= r.json()["expires_in"] <= 3600 and r.json()["token_type"] == "Bearer"
        assert provider_fake.token_requests[before]["grant_type"] == "refresh_token"
        assert not any(t in r.text for t in provider_fake.access_tokens | provider_fake.refresh_tokens)
        r = await bob.post("/api/auth/refresh-google-token", json={})
        assert r.status_code == 404 and r.json()["error"] == "Not Found"
        assert (await stranger.post("/api/auth/refresh-google-token")).status_code == 404

        # Preferences change through the API and show in the status.
        r = await alice.patch("/api/auth/preferences", json={"theme": "dark", "defaultView": "history"})
        assert r.status_code == 200 and r.json()["theme"] == "dark"
        prefs = (await alice.get("/api/auth/status")).json()["session"]["preferences"]
        assert (prefs["theme"], prefs["defaultView"], prefs["notificationsEnabled"]) == ("dark", "history", True)
        for bad, field in (({"theme": "neon"}, "theme"), ({"defaultView": "x"}, "defaultView"), ({"x": 1}, "x")):
            r = await alice.patch("/api/auth/preferences", json=bad)
            assert r.status_code == 400 and r.json()["field"] == field, r.text
        assert (await bob.get("/api/auth/status")).json()["session"]["preferences"]["theme"] == "system"

        # Disconnect: revoke first; if the provider cannot be reached, the connection stays.
        provider_fake.revoke_status = 503
        r = await alice.post("/api/auth/disconnect")
        assert r.status_code == 502 and r.json()["error"] == "Bad Gateway"
        assert (await alice.get("/api/auth/status")).json()["session"]["oauthStatus"]["isConnected"] is True
        provider_fake.revoke_status = 200
        refresh_token = (await _load(stack, pool, keyring, tenant)).refresh_token
        r = await alice.post("/api/auth/disconnect")
        assert r.status_code == 200 and r.json() == {"success": True,
                                                     "message": "Successfully disconnected Google account"}
        assert provider_fake.revoked[-1] == refresh_token
        assert await pool.fetchval("SELECT count(*) FROM connections WHERE tenant_id = $1", tenant) == 0
        assert (await alice.post("/api/auth/disconnect")).status_code == 404
        assert (await bob.post("/api/auth/disconnect", json={"provider": "google"})).status_code == 404
        r = await alice.post("/api/auth/disconnect", json={"provider": "myspace"})
        assert r.status_code == 404 and set(r.json()) >= {"error", "message"}

        for method, path in (("GET", "/api/auth/status"), ("GET", "/api/auth/google/connect"),
                             ("POST", "/api/auth/refresh-google-token"), ("POST", "/api/auth/disconnect"),
                             ("PATCH", "/api/auth/preferences")):
            r = await anon.request(method, path, json={})
            assert r.status_code == 401 and set(r.json()) == {"error", "message"}, (path, r.text)
    log = (proc.log_dir / "gateway.log").read_text()
    assert "account_connected" in log and not any(t in log for t in issued)


async def _load(stack, pool, keyring, tenant):
    async with pool.acquire() as conn:
        return await stored.load(conn, keyring, tenant, "alice", "google")


async def test_callback_refuses_replayed_foreign_and_denied_states(stack, gateway, provider_fake, tenant):
    base, _, _ = gateway
    async with client(stack, base, tenant) as alice, client(stack, base, None) as browser:
        r = await alice.get("/api/auth/google/connect")
        state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
        r = await browser.get("/api/auth/google/callback", params={"state": state, "error": "access_denied"})
        assert r.status_code == 400 and "did not grant access" in r.json()["message"]
        r = await browser.get("/api/auth/google/callback", params={"state": state, "code": "x"})
        assert r.status_code == 400 and r.json()["field"] == "state"  # used up by the denial
        r = await connect(alice)
        assert r.status_code == 303
        for params in ({"state": "x", "code": "y"}, {"code": "y"}, {"state": f"o{tenant}.abc", "code": "y"},
                       {"state": "../..", "code": "y"}):
            r = await browser.get("/api/auth/google/callback", params=params)
            assert r.status_code == 400 and r.json()["error"] == "Bad Request", (params, r.text)
        r = await alice.get("/api/auth/salesforce/connect")
        state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
        r = await browser.get("/api/auth/google/callback", params={"state": state, "code": "y"})
        assert r.status_code == 400  # a Salesforce state does not finish a Google connection
        assert (await alice.get("/api/auth/nope/connect")).status_code == 404


async def test_a_token_near_expiry_is_refreshed_before_use_and_a_failed_refresh_says_so(
        stack, gateway, provider_fake, tenant, store):
    base, _, env = gateway
    async with client(stack, base, tenant) as alice:
        assert (await connect(alice)).status_code == 303
    settings = load_settings(env)
    keyring, p = SecretBox.from_settings(settings), oauth.provider(settings, "google")
    async with GuardedHttpClient(settings) as http:
        async with store.tenant_transaction(tenant) as conn:
            first = await stored.usable(conn, keyring, http, p, tenant, "alice")
        calls = len(provider_fake.token_requests)
        async with store.tenant_transaction(tenant) as conn:  # an hour left: used as it is
            assert (await stored.usable(conn, keyring, http, p, tenant, "alice")).access_token == first.access_token
        assert len(provider_fake.token_requests) == calls
        near_expiry = first.expires_at - stored.REFRESH_BEFORE + timedelta(seconds=1)  # as a step would see it then
        async with store.tenant_transaction(tenant) as conn:
            fresh = await stored.usable(conn, keyring, http, p, tenant, "alice", now=near_expiry)
        assert fresh.access_token != first.access_token and len(provider_fake.token_requests) == calls + 1
        assert fresh.refresh_token == first.refresh_token  # the refresh answer had none: the old one stays
        provider_fake.refuse_refresh = True
        try:
            async with store.tenant_transaction(tenant) as conn:
                with pytest.raises(stored.NotConnected, match="google.*connect it again"):
                    await stored.usable(conn, keyring, http, p, tenant, "alice", force_refresh=True)
            async with client(stack, base, tenant) as alice:
                r = await alice.post("/api/auth/refresh-google-token")
                assert r.status_code == 400 and "connect it again" in r.json()["message"], r.text
        finally:
            provider_fake.refuse_refresh = False


async def test_two_refreshes_at_once_make_one_call_and_hold_no_transaction_id_while_it_runs(
        stack, gateway, provider_fake, tenant, store, pool):
    # Refreshes of one account are serialised (one provider call for two steps that need one), but not by a row
    # lock: that would give the waiting transactions an id for as long as the provider takes, and the relay
    # and live feeds publish nothing above a running transaction's id (docs/decisions/0032).
    base, _, env = gateway
    async with client(stack, base, tenant, "erin") as erin:
        assert (await connect(erin)).status_code == 303
    settings = load_settings(env)
    keyring, p = SecretBox.from_settings(settings), oauth.provider(settings, "google")
    pids: list[int] = []

    async def use() -> oauth.TokenSet:
        async with store.tenant_transaction(tenant) as conn:
            pids.append(conn.get_server_pid())
            first = await stored.load(conn, keyring, tenant, "erin", "google")
            near_expiry = first.expires_at - stored.REFRESH_BEFORE + timedelta(seconds=1)
            return await stored.usable(conn, keyring, http, p, tenant, "erin", now=near_expiry)

    provider_fake.refresh_delay_s = 1.5
    try:
        async with GuardedHttpClient(settings) as http:
            calls = len(provider_fake.token_requests)
            both = asyncio.gather(use(), use())
            await asyncio.sleep(0.7)  # one refresh is at the provider, the other waits for it
            xids = await pool.fetch("SELECT pid, backend_xid FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids)
            one, two = await both
    finally:
        provider_fake.refresh_delay_s = 0.0
    assert len(pids) == 2 and len(xids) == 2
    assert [r["backend_xid"] for r in xids] == [None, None], xids  # neither holds a transaction id meanwhile
    assert len(provider_fake.token_requests) == calls + 1  # one refresh call for the two
    assert one.access_token == two.access_token


async def test_execute_refuses_a_plan_needing_an_unconnected_account_with_the_connect_url(
        stack, gateway, provider_fake, tenant):
    base, _, _ = gateway
    command = "Send a summary of my unread emails to john@example.com"
    async with client(stack, base, tenant, "dora") as dora:
        r = await dora.post("/api/workflow/execute", json={"command": command})
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["error"] == "Bad Request" and body["field"] == "command"
        assert "needs your Google account" in body["message"] and "/api/auth/google/connect" in body["message"]
        assert (await connect(dora)).status_code == 303
        r = await dora.post("/api/workflow/execute", json={"command": command})
        assert r.status_code == 200, r.text
        planned = r.json()
        assert [s["action"] for s in planned["steps"]] == ["gmail.search", "agent", "email.send"]
        assert planned["status"] == "awaiting_plan_approval"  # it sends email: the plan waits for approval
        # A command that needs no account is not asked about one.
        r = await dora.post("/api/workflow/execute", json={"command": "Record that the nightly build passed"})
        assert r.status_code == 200
