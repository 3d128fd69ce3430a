"""`make up` (weft up): starts everything, prints URL and token, stops cleanly on Ctrl-C, keeps data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from libs.events.settings import load_settings
from libs.security.auth import verify_token
from tests.weft_up import Up, listening, up_env


def _sign_in_once(link: str) -> None:
    """The printed one-time dashboard link signs the dev user in, once."""
    with httpx.Client(timeout=20) as browser:
        for attempt in range(2):
            page = browser.get(link)
            assert page.status_code == 200, page.text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            token = re.search(r'name="link_token" value="([^"]+)"', page.text).group(1)
            r = browser.post(link.split("?")[0], data={"csrf_token": csrf, "link_token": token, "next": ""})
            if attempt == 0:
                assert r.status_code == 303 and "weft_session" in r.cookies, r.text
                assert browser.get(link.split("/signin")[0] + "/workflows").status_code == 200
                browser.cookies.delete("weft_session")
            else:
                assert r.status_code == 400 and "already used" in r.text


def test_weft_up_runs_everything_and_stops_cleanly(tmp_path: Path):
    env = up_env(tmp_path / "data")
    api = int(env["WEFT_PORT"])
    # weft up gives the five other services the ports after the gateway's: all six must be free.
    service_ports = [api + offset for offset in range(6)]
    up = Up(env)
    try:
        token = up.token()
        assert f"http://127.0.0.1:{api}" in up.output
        principal = verify_token(load_settings({}), token)
        assert (principal.tenant_id, principal.email) == ("acme", "dev@localhost")
        assert f"Mail         {tmp_path / 'data' / 'mail'}" in up.wait_for("Mail ", 10)
        assert all(listening(p) for p in service_ports), "every service answers on its port"
        _sign_in_once(up.wait_for("Dashboard", 10).split()[-1])
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=up.api, headers=headers, timeout=20) as c:
            name = f"kept-{uuid.uuid4().hex[:6]}"
            r = c.post("/api/v2/workflows", json={"name": name, "definition": {"nodes": [
                {"id": "a", "type": "transform", "config": {"template": {"v": 1}}}]}})
            assert r.status_code == 201, r.text
            workflow_id = r.json()["workflow"]["id"]
    finally:
        code = up.stop()
    assert code == 0
    assert "stopped" in up.output
    for port in [*service_ports, int(env["WEFT_PG_PORT"]), int(env["WEFT_NATS_PORT"])]:
        assert not listening(port), f"port {port} still open after Ctrl-C"

    # Data lives under the data folder and survives a restart.
    up = Up(env)
    try:
        with httpx.Client(base_url=up.api, headers={"Authorization": f"Bearer {up.token()}"}, timeout=20) as c:
            assert c.get(f"/api/v2/workflows/{workflow_id}").json()["workflow"]["name"] == name
    finally:
        assert up.stop() == 0


def test_weft_token_prints_a_verifiable_jwt():
    out = subprocess.run([sys.executable, "-m", "cli", "token", "--tenant", "acme", "--user", "alice"],
                         capture_output=True, text=True, check=True, env={k: v for k, v in os.environ.items()
                                                                           if not k.startswith("WEFT_")})
    principal = verify_token(load_settings({}), out.stdout.strip())
    assert (principal.tenant_id, principal.user_id) == ("acme", "alice")
    bad = subprocess.run([sys.executable, "-m", "cli", "token", "--tenant", "a.b", "--user", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "tenant" in bad.stderr
