"""`make up` (weft up): starts everything, prints URL and token, stops cleanly on Ctrl-C, keeps data."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from libs.security.auth import verify_token
from deploy.local.embedded import free_port, free_port_block
from libs.events.settings import load_settings


def _start(data_dir: Path, ports: dict[str, int]) -> tuple[subprocess.Popen, str, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    env.update(WEFT_DATA_DIR=str(data_dir), WEFT_PORT=str(ports["api"]), WEFT_PG_PORT=str(ports["pg"]),
               WEFT_NATS_PORT=str(ports["nats"]), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if line.startswith("Dashboard"):  # printed right after the dev token
            token = next(x for x in lines if x.startswith("Dev token")).split()[-1]
            return proc, token, lines
    proc.kill()
    raise AssertionError("weft up did not print a token:\n" + "".join(lines))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=90)


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
    # weft up gives the five other services the ports after the gateway's: all six must be free.
    ports = {"api": free_port_block(6), "pg": free_port(), "nats": free_port()}
    service_ports = [ports["api"] + offset for offset in range(6)]
    proc, token, lines = _start(tmp_path / "data", ports)
    try:
        output = "".join(lines)
        assert f"http://127.0.0.1:{ports['api']}" in output
        assert verify_token(load_settings({}), token).tenant_id == "acme"
        assert all(_listening(p) for p in service_ports), "every service answers on its port"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{ports['api']}", headers=headers, timeout=20) as c:
            name = f"kept-{uuid.uuid4().hex[:6]}"
            r = c.post("/api/v2/workflows", json={"name": name, "definition": {"nodes": [
                {"id": "a", "type": "transform", "config": {"template": {"v": 1}}}]}})
            assert r.status_code == 201, r.text
            workflow_id = r.json()["workflow"]["id"]
        _sign_in_once(next(x for x in lines if x.startswith("Dashboard")).split()[-1])
    finally:
        code = _stop(proc)
    assert code == 0
    rest = proc.stdout.read()
    assert "stopped" in rest
    for port in [*service_ports, ports["pg"], ports["nats"]]:
        assert not _listening(port), f"port {port} still open after Ctrl-C"

    # Data lives under the data folder and survives a restart.
    proc, token, _ = _start(tmp_path / "data", ports)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{ports['api']}",
                          headers={"Authorization": f"Bearer {token}"}, timeout=20) as c:
            assert c.get(f"/api/v2/workflows/{workflow_id}").json()["workflow"]["name"] == name
    finally:
        assert _stop(proc) == 0


def test_weft_token_prints_a_verifiable_jwt():
    out = subprocess.run([sys.executable, "-m", "cli", "token", "--tenant", "acme", "--user", "alice"],
                         capture_output=True, text=True, check=True, env={k: v for k, v in os.environ.items()
                                                                           if not k.startswith("WEFT_")})
    principal = verify_token(load_settings({}), out.stdout.strip())
    assert (principal.tenant_id, principal.user_id) == ("acme", "alice")
    bad = subprocess.run([sys.executable, "-m", "cli", "token", "--tenant", "a.b", "--user", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "tenant" in bad.stderr
