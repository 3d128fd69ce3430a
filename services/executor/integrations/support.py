"""Helpers the integration steps share: config checks and outbound HTTP errors in step terms."""

from __future__ import annotations

from typing import Any

from libs.adapters.outbound import OutboundError, OutboundResponse
from services.executor.steps import StepCall, StepDeps, StepError


def require_str(config: dict[str, Any], key: str, step: str) -> str:
    """config[key] as a non-empty string, or a StepError naming the field."""
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise StepError(f"{step}: config.{key} must be a non-empty string, got {value!r}")
    return value


def is_retryable_status(status: int) -> bool:
    """Throttling and server errors may pass on a later attempt; other statuses will not."""
    return status == 429 or status >= 500


async def send(deps: StepDeps, call: StepCall, method: str, url: str, *, what: str,
               headers: dict[str, str] | None = None, json: Any = None, content: bytes | str | None = None,
               timeout: float | None = None) -> OutboundResponse:
    """One request through the guarded client, carrying the call's Idempotency-Key."""
    if deps.http is None:
        raise StepError(f"{what}: no outbound HTTP client configured")
    # The key goes last so a config header cannot replace it: receivers dedupe on it.
    sent = {k: v for k, v in (headers or {}).items() if k.lower() != "idempotency-key"}
    sent["Idempotency-Key"] = call.idempotency_key
    try:
        return await deps.http.request(method, url, headers=sent, json=json, content=content, timeout=timeout)
    except OutboundError as exc:
        raise StepError(f"{what}: {exc}", retryable=exc.retryable) from exc


def check_status(response: OutboundResponse, what: str, expected: list[int] | None = None) -> None:
    """Raise a StepError unless the status is expected (default: any 2xx)."""
    ok = response.status in expected if expected is not None else 200 <= response.status < 300
    if ok:
        return
    wanted = f"one of {expected}" if expected is not None else "2xx"
    hint = " (redirects are not followed)" if 300 <= response.status < 400 else ""
    snippet = response.text[:200]
    raise StepError(f"{what}: answered {response.status}{hint}, expected {wanted}: {snippet}",
                    retryable=is_retryable_status(response.status))


def decode_body(response: OutboundResponse) -> Any:
    """Parsed JSON when the response says JSON (text if it does not parse), else text."""
    if response.is_json():
        try:
            return response.json()
        except ValueError:
            pass
    return response.text
