"""Telemetry every process shares: Prometheus metrics (metrics.py) and OpenTelemetry tracing (tracing.py).

The lowest layer: it imports nothing of Weft, so the kernel (libs/events) can instrument where things happen."""
