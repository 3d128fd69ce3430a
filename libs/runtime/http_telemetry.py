"""Per-request telemetry around a service's whole ASGI app: the request metric and latency by route template,
a server span (continuing a caller's `traceparent`), and, in the gateway, one access-log line per request."""

from __future__ import annotations

import time
from typing import Any

import structlog
from litestar.types import ASGIApp, Receive, Scope, Send

from libs.telemetry import metrics
from libs.telemetry.tracing import SpanKind, context_from, mark_error, traced

access_log = structlog.get_logger("weft.access")
UNMATCHED = "unmatched"  # a path no route serves: one label value, never the raw path
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


_WANTED = (b"traceparent", b"tracestate", b"x-correlation-id")


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers this wrapper reads (trace context, correlation id), decoded; the rest are not."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ()) if k in _WANTED}


class HttpTelemetry:
    """Wraps the app's ASGI handler (outside routing and exception handling, so 404s and 500s count too)."""

    def __init__(self, app: ASGIApp, *, log_requests: bool) -> None:
        self.app, self.log_requests = app, log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _headers(scope)
        status = 500  # what the client sees if the app raises before answering
        method = scope["method"] if scope["method"] in METHODS else "other"  # a client picks it: keep it bounded

        async def send_and_watch(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with traced(f"HTTP {method}", context=context_from(headers), kind=SpanKind.SERVER) as span:
            try:
                await self.app(scope, receive, send_and_watch)
            finally:
                route = scope.get("path_template") or UNMATCHED
                elapsed = time.perf_counter() - started
                metrics.labelled(metrics.HTTP_REQUESTS, route, method, str(status)).inc()
                metrics.labelled(metrics.HTTP_LATENCY, route, method).observe(elapsed)
                if span.is_recording():
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        mark_error(span, f"HTTP {status}")
                if self.log_requests:
                    bound = structlog.contextvars.get_contextvars()
                    access_log.info("http_request", method=method, route=route, path=scope["path"], status=status,
                                    duration_ms=round(elapsed * 1000, 2), tenant_id=bound.get("tenant_id"),
                                    correlation_id=bound.get("correlation_id") or headers.get("x-correlation-id"))
