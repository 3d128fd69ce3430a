"""`http.request`: call an HTTP endpoint through the guarded client."""

from __future__ import annotations

from typing import Any

from services.executor.integrations.support import check_status, decode_body, require_str, send
from services.executor.steps import StepCall, StepDeps, StepError, config_of, step

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


def _expected(value: Any) -> list[int] | None:
    if value is None:
        return None
    codes = value if isinstance(value, list) else [value]
    if not codes or not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes):
        raise StepError(f"http.request: config.expected_status must be a status code or a list of them, got {value!r}")
    return codes


@step("http.request")
async def http_request(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """Send config.method to config.url (body: JSON unless a string); fail on an unexpected status."""
    config = config_of(node, context)
    method = str(config.get("method") or "GET").upper()
    if method not in METHODS:
        raise StepError(f"http.request: config.method must be one of {sorted(METHODS)}, got {config.get('method')!r}")
    url = require_str(config, "url", "http.request")
    headers = config.get("headers") or {}
    if not isinstance(headers, dict):
        raise StepError(f"http.request: config.headers must be an object, got {headers!r}")
    headers = {str(k): v if isinstance(v, str) else str(v) for k, v in headers.items()}
    expected = _expected(config.get("expected_status"))
    body = config.get("body")
    what = f"http.request {method} {url}"
    if body is None:
        response = await send(deps, call, method, url, what=what, headers=headers)
    elif isinstance(body, str):
        response = await send(deps, call, method, url, what=what, headers=headers, content=body.encode())
    else:
        response = await send(deps, call, method, url, what=what, headers=headers, json=body)
    check_status(response, what, expected)
    return {"status": response.status, "headers": response.headers, "body": decode_body(response)}
