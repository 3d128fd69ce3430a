"""OpenTelemetry tracing: one tracer, W3C trace context in NATS headers and event metadata, OTLP export only
when an endpoint is configured.

Without an endpoint no SDK is installed: spans are the API's non-recording ones, which still carry an
incoming trace context on to the next hop, so a traced caller's trace is never cut by an untraced service.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
tracer = trace.get_tracer("weft")

__all__ = ["SpanKind", "configure_tracing", "context_from", "current_traceparent", "inject", "mark_error",
           "shutdown_tracing", "traced", "tracer"]

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
    """The current span's `traceparent`, to store in an event's metadata; None when nothing is traced or the
    trace is not sampled (every event of an unsampled run would otherwise carry 55 bytes for nothing)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def traced(name: str, *, context: otel_context.Context | None = None,
           kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span]:
    """A span named `name`, child of `context` (a carried trace context) or of the current span. Under a
    parent that is not sampled no span is made at all, since parent-based sampling would drop it: the parent's
    context stays current, so what is sent on still carries the caller's (unsampled) trace. With sampling off
    a run then pays for one span, its request's, not one per command, step and call (bench/bench_telemetry.py)."""
    parent = trace.get_current_span(context).get_span_context()
    if parent.is_valid and not parent.trace_flags.sampled:
        token = otel_context.attach(context) if context is not None else None
        try:
            yield trace.get_current_span()
        finally:
            if token is not None:
                otel_context.detach(token)
        return
    with tracer.start_as_current_span(name, context=context, kind=kind) as current:
        yield current


def mark_error(span: Span, message: str) -> None:
    if span.is_recording():
        span.set_status(Status(StatusCode.ERROR, message[:200]))
