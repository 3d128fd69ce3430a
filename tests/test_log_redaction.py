"""No credential in any log line (issue 15): requests that carry each kind of credential, then grep the logs.

A gateway of its own at debug level gets bearer JWTs (valid and not), opaque bearer strings, WebSocket
`?token=` URLs, API keys, approval-link tokens and `?token=` on plain routes; its log file must not contain
any of them. In process: a traceback whose frames hold a request scope, and a standard-library record.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import httpx
import pytest
import structlog
import websockets

from libs.events.logging import configure_logging, redact
from libs.security.approval_tokens import issue_step_token
from tests.conftest import start_processes


@pytest.fixture(scope="module")
def logged_gateway(infra, stack):
    log_dir = infra.root / f"logs-redaction-{uuid.uuid4().hex[:6]}"
    procs, ports = start_processes(infra, ["gateway"], log_dir, extra_env={"WEFT_LOG_LEVEL": "debug"})
    try:
        yield f"http://127.0.0.1:{ports['gateway']}", log_dir / "gateway.log", procs["gateway"]
    finally:
        procs["gateway"].stop()


async def test_no_credential_reaches_the_gateway_log(stack, tenant, logged_gateway):
    from datetime import UTC, datetime

    base, log_file, proc = logged_gateway
    jwt_token = stack.token(tenant)
    opaque = f"opaque-{uuid.uuid4().hex}"
    api_key = "weft_" + uuid.uuid4().hex + uuid.uuid4().hex
    approval = issue_step_token(stack.settings, token_id=uuid.uuid4(), tenant_id=tenant, workflow_id=uuid.uuid4(),
                                run_id=uuid.uuid4(), step_id="s", plan_hash="h", approver="a@example.com",
                                action="approve", now=datetime.now(UTC))
    query_secret = f"q-{uuid.uuid4().hex}"
    secrets = {"user JWT": jwt_token, "opaque bearer": opaque, "API key": api_key, "approval token": approval,
               "query token": query_secret}
    wid, rid = uuid.uuid4(), uuid.uuid4()
    async with httpx.AsyncClient(base_url=base, timeout=20) as c:
        for token in (jwt_token, opaque, api_key, approval):
            await c.get("/api/v2/workflows", headers={"Authorization": f"Bearer {token}"})
            await c.get(f"/api/v2/workflows/{wid}/runs/{rid}/events", headers={"Authorization": f"Bearer {token}"})
            await c.get(f"/api/v1/public/executions/{rid}/status", headers={"Authorization": f"Bearer {token}"})
        await c.get(f"/api/v2/workflows?token={query_secret}", headers={"Authorization": f"Bearer {jwt_token}"})
        for token in (approval, opaque, query_secret):
            await c.get("/api/workflows/resume", params={"token": token, "action": "approve"},
                        headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"})
            await c.post("/api/workflows/resume", data={"token": token, "action": "reject"},
                         headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"})
        await c.post("/api/v2/webhooks", json={"url": "http://127.0.0.1/x", "secret": opaque},
                     headers={"Authorization": f"Bearer {jwt_token}"})
    ws = base.replace("http://", "ws://") + f"/api/v2/workflows/{wid}/runs/{rid}/ws"
    for token in (jwt_token, opaque, query_secret):
        try:
            async with websockets.connect(f"{ws}?token={token}") as socket:
                await asyncio.wait_for(socket.recv(), 5)
        except (websockets.ConnectionClosed, TimeoutError):
            pass
    await asyncio.sleep(0.5)
    proc.stop()  # flush and close: shutdown lines are checked too
    text = log_file.read_text(errors="replace")
    assert "WebSocket" in text and "step_approval_link_used" in text, "the requests above must have been logged at all"
    leaked = {name: text.count(value) for name, value in secrets.items() if value in text}
    assert not leaked, f"credentials in the gateway log: {leaked}"


def test_tracebacks_and_stdlib_records_are_redacted(capsys):
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"
    configure_logging("test", "debug")
    try:
        def handle(scope: dict) -> None:
            raise RuntimeError(f"bad header {scope['headers'][0][1]!r}")

        try:
            handle({"type": "http", "headers": [(b"authorization", f"Bearer {token}".encode())],
                    "query_string": b"token=opaque-secret-1"})
        except RuntimeError:
            structlog.get_logger().exception("unhandled_error", authorization=f"Bearer {token}",
                                             url="/ws?token=opaque-secret-2&x=1")
        handler = logging.StreamHandler()
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            logging.getLogger("uvicorn.error").warning('%s - "WebSocket %s" [accepted]', "127.0.0.1",
                                                       "/api/v2/x/ws?token=opaque-secret-3")
            try:
                raise ValueError(f"weft_{'ab' * 32}")
            except ValueError:
                logging.getLogger("asyncio").exception("failed with Authorization: Bearer opaque-secret-4")
        finally:
            root.removeHandler(handler)
    finally:
        structlog.reset_defaults()
    out = capsys.readouterr().err
    assert "unhandled_error" in out and "WebSocket" in out and "Traceback" in out
    for secret in (token, "opaque-secret-1", "opaque-secret-2", "opaque-secret-3", "opaque-secret-4", "ab" * 32):
        assert secret not in out, (secret, out)
    assert "scope" not in out or "locals" not in out  # frames keep no local variables


def test_redact_leaves_ordinary_text_alone():
    line = "run 42 completed in 3 ms; status code=200; key_prefix weft_abc..."
    assert redact(line) == line
