"""OpenTelemetry tracing: one tracer, W3C trace context in NATS headers and event metadata, OTLP export only
when an endpoint is configured.

Without an endpoint no SDK is installed: spans are the API's non-recording ones, which still carry an
incoming trace context on to the next hop, so a traced caller's trace is never cut by an untraced service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
tracer = trace.get_tracer("weft")

__all__ = ["SpanKind", "configure_tracing", "context_from", "current_traceparent", "inject", "mark_error",
           "shutdown_tracing", "tracer"]

_provider: Any = None


def configure_tracing(service: str, endpoint: str, sample_ratio: float = 1.0) -> bool:
    """Install the SDK exporting to `endpoint` (OTLP over HTTP, `<endpoint>/v1/traces`); no endpoint, no SDK.
    Sampling follows the caller's decision (parent-based), else keeps `sample_ratio` of new traces."""
    global _provider
    if not endpoint or _provider is not None:
        return _provider is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(resource=Resource.create({"service.name": f"weft-{service}"}),
                              sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")))
    trace.set_tracer_provider(provider)
    _provider = provider
    return True


def shutdown_tracing() -> None:
    """Flush and stop the exporter (service shutdown), so the last spans are not lost."""
    if _provider is not None:
        _provider.shutdown()


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context (`traceparent`, `tracestate`) to outgoing headers; a no-op when untraced."""
    _PROPAGATOR.inject(headers)
    return headers


def context_from(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    """The trace context a message or request carried (headers, or an event's metadata), or None."""
    if not carrier or TRACEPARENT not in carrier:
        return None
    return _PROPAGATOR.extract(carrier)


def current_traceparent() -> str | None:
    """The current span's `traceparent`, to store in an event's metadata; None when nothing is traced."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def mark_error(span: Span, message: str) -> None:
    if span.is_recording():
        span.set_status(Status(StatusCode.ERROR, message[:200]))
