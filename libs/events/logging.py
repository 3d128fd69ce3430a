"""structlog setup: JSON lines when not on a TTY, console rendering otherwise; no credential in any line.

Every line, structlog's and the standard library's (uvicorn, asyncio, nats-py, Litestar), passes through
`redact` (docs/decisions/0053): bearer and basic credentials, JWTs (user tokens and approval-link tokens),
API keys, Standard Webhooks secrets and the values of credential-named query parameters (`?token=`,
`api_key=`, ...) become `[REDACTED]`, and so do the values of credential-named fields (authorization,
token, secret, password, cookie, ...). Tracebacks keep their frames but not their local variables: locals
hold request scopes, headers and settings, which are credentials more often than not.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

REDACTED = "[REDACTED]"
_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+|%20|\+)[A-Za-z0-9._~+/=%-]{4,}"), rf"\1\2{REDACTED}"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.?[A-Za-z0-9_-]*"), REDACTED),  # any JWT
    (re.compile(r"weft_[0-9a-fA-F]{8,}"), f"weft_{REDACTED}"),  # API keys (libs/security/apikeys.py)
    (re.compile(r"whsec_[A-Za-z0-9+/=]{8,}"), f"whsec_{REDACTED}"),  # Standard Webhooks secrets
    (re.compile(r"(?i)((?:^|[?&;\s\"'])(?:token|access_token|id_token|api_key|apikey|api-key|secret|password"
                r"|signature)=)[^&\s\"'#<>]+"), rf"\1{REDACTED}"),
)
SENSITIVE_FIELDS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "token", "access_token", "api_key",
    "apikey", "x-api-key", "secret", "password", "jwt_secret", "approval_signing_key", "smtp_password",
    "llm_api_key", "webhook_secret", "signing_key",
})


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(k, str) and k.lower() in SENSITIVE_FIELDS and v else _clean(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return redact(bytes(value).decode("latin-1"))
    return value


def redact_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: every credential in the event (its fields, messages and tracebacks) redacted."""
    return _clean(event_dict)


def _install_record_factory() -> None:
    """Redact standard-library records when they are made, whatever handler formats them later."""
    current = logging.getLogRecordFactory()
    if getattr(current, "weft_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        try:
            record.msg, record.args = redact(record.getMessage()), ()
        except Exception:  # noqa: BLE001 - a record whose arguments do not format is left to the handler
            return record
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    factory.weft_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def configure_logging(service: str, level: str = "info") -> None:
    renderer = (
        structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _install_record_factory()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
