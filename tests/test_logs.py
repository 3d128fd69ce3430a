"""Logs: the gateway writes one JSON line per request (method, route template, status, duration, tenant,
correlation id), and every line of every service's log is JSON, uvicorn's and FastStream's own included."""

from __future__ import annotations

import json
import uuid

from tests.conftest import Infra, poll


def lines(infra: Infra, service: str) -> list[str]:
    return (infra.root / "logs" / f"{service}.log").read_text(errors="replace").splitlines()


async def test_one_access_line_per_request_with_tenant_and_correlation_id(stack, infra, tenant):
    correlation = f"corr-{uuid.uuid4().hex}"
    async with stack.client(tenant) as c:
        r = await c.post("/api/v2/workflows", headers={"X-Correlation-Id": correlation},
                         json={"name": f"wf-{uuid.uuid4().hex[:8]}", "definition": {"nodes": [{"id": "a", "type": "noop"}]}})
        assert r.status_code == 201, r.text
        missing = await c.get(f"/api/v2/workflows/{uuid.uuid4()}")
        assert missing.status_code == 404

    async def access_lines() -> list[dict]:
        found = []
        for line in lines(infra, "gateway"):
            entry = json.loads(line)
            if entry.get("event") == "http_request" and entry.get("tenant_id") == tenant:
                found.append(entry)
        return found

    entries = await poll(access_lines, lambda found: len(found) >= 2, timeout=10)
    [created] = [e for e in entries if e["method"] == "POST"]
    assert created["route"] == "/api/v2/workflows" and created["status"] == 201
    assert created["correlation_id"] == correlation and created["duration_ms"] > 0
    assert created["service"] == "gateway" and created["level"] == "info" and created["timestamp"]
    [read] = [e for e in entries if e["method"] == "GET"]
    assert read["route"] == "/api/v2/workflows/{workflow_id}" and read["status"] == 404


def test_every_line_of_every_service_log_is_json(stack, infra):
    from_stdlib = set()
    for service in stack.procs:
        for line in lines(infra, service):
            entry = json.loads(line)  # raises on a plain-text line
            assert entry["event"] and entry["level"] and entry["timestamp"], line
            if "logger" in entry:
                from_stdlib.add(entry["logger"].split(".")[0])
    assert "uvicorn" in from_stdlib  # its start-up lines came through structlog, not around it
    assert "httpx" not in from_stdlib  # its INFO lines carry full URLs (paths and queries may hold secrets)
