"""Every Prometheus metric Weft exports, defined once, plus the /metrics exposition with on-scrape samplers.

Instrumentation stays where the thing happens (a consumer counts the commands it handled, the relay its
lag); this module only names the metrics, so a dashboard or alert rule can be checked against one list
(tests/test_observability_assets.py). Label values are bounded sets (route templates, command and step
types, outcomes, consumer names): a tenant id never becomes a label value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

log = structlog.get_logger()

# Latency buckets from 1 ms (an inline no-op step) to 30 s (a model call, a slow webhook receiver).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter("weft_http_requests", "HTTP requests answered, by route template, method and status",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("weft_http_request_duration_seconds", "HTTP request latency, by route template and method",
                         ["route", "method"], buckets=LATENCY_BUCKETS)
COMMANDS = Counter("weft_commands_handled", "Commands a service handled, by command type and outcome "
                   "(ok, refused, nacked, rejected)", ["command", "outcome"])
COMMAND_LATENCY = Histogram("weft_command_duration_seconds", "Time from a command's delivery to its recorded "
                            "outcome, by command type", ["command"], buckets=LATENCY_BUCKETS)
RUNS_STARTED = Counter("weft_runs_started", "Runs that started (RunStarted committed)")
RUNS_FINISHED = Counter("weft_runs_finished", "Runs that ended, by status (completed, failed, cancelled, terminated)",
                        ["status"])
STEP_LATENCY = Histogram("weft_step_duration_seconds", "Step execution time, by step type and result (ok, error)",
                         ["step_type", "result"], buckets=LATENCY_BUCKETS)
APPROVALS_WAITING = Gauge("weft_approvals_waiting", "Runs paused on a step approval")
TIMERS_DUE = Gauge("weft_timers_due", "Pending durable timers whose due time has passed")
TIMERS_LATE = Gauge("weft_timers_late", "Pending durable timers due more than 10 s ago (the firing loop lags)")
TIMER_DELAY = Histogram("weft_timer_fire_delay_seconds", "How long after its due time a timer was fired",
                        buckets=LATENCY_BUCKETS)
SCHEDULE_OCCURRENCES = Counter("weft_schedule_occurrences", "Schedule occurrences, by outcome (fired, skipped, "
                               "missed)", ["outcome"])
WEBHOOK_DELIVERIES = Counter("weft_webhook_attempts", "Webhook attempts, by what followed (delivered, retrying, "
                             "dead_lettered, cancelled)", ["outcome"])
WEBHOOK_DEAD_LETTERS = Gauge("weft_webhook_dead_letters", "Dead-lettered webhook deliveries not replayed")
RELAY_LAG = Gauge("weft_relay_lag_events", "Events committed to the store but not yet published by the relay")
RELAY_HELD_BACK = Gauge("weft_relay_held_back_seconds", "How long the oldest committed event the relay may not publish "
                        "yet has waited: a transaction older than it still runs (docs/decisions/0033); 0 when none")
COMMAND_BACKLOG = Gauge("weft_command_backlog", "Commands accepted (in the command log) whose outcome is not recorded yet")
CONSUMER_PENDING = Gauge("weft_consumer_pending", "Messages a durable consumer has not acknowledged yet "
                         "(pending plus in flight), by consumer", ["consumer"])
RATE_LIMITED = Counter("weft_rate_limit_rejections", "Requests refused with 429, by surface (v2, public)",
                       ["surface"])

_children: dict[tuple[int, tuple[str, ...]], object] = {}


def labelled(metric, *values: str):
    """metric.labels(*values), remembered: the run path calls these per request, command and step, and
    prometheus_client's labels() takes a lock and builds its key each time (about 3x the cost of the inc)."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


Sampler = Callable[[], Awaitable[None]]
_samplers: list[Sampler] = []


def add_sampler(sampler: Sampler) -> None:
    """Register a coroutine that refreshes gauges read from Postgres or JetStream; it runs on each scrape,
    so an unscraped service pays nothing for them."""
    _samplers.append(sampler)


def clear_samplers() -> None:
    _samplers.clear()


async def _sample(sampler: Sampler) -> None:
    try:
        await asyncio.wait_for(sampler(), 2.0)
    except Exception as exc:  # noqa: BLE001 - a failed sampler leaves its gauges as they were; the scrape goes on
        log.warning("metrics_sampler_failed", sampler=getattr(sampler, "__qualname__", repr(sampler)),
                    error=f"{type(exc).__name__}: {exc}")


async def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric, after the samplers ran; (body, content type)."""
    await asyncio.gather(*(_sample(s) for s in list(_samplers)))
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


ALL = (HTTP_REQUESTS, HTTP_LATENCY, COMMANDS, COMMAND_LATENCY, RUNS_STARTED, RUNS_FINISHED, STEP_LATENCY,
       APPROVALS_WAITING, TIMERS_DUE, TIMERS_LATE, TIMER_DELAY, SCHEDULE_OCCURRENCES, WEBHOOK_DELIVERIES,
       WEBHOOK_DEAD_LETTERS, RELAY_LAG, RELAY_HELD_BACK, COMMAND_BACKLOG, CONSUMER_PENDING, RATE_LIMITED)
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def names() -> set[str]:
    """Every series name these metrics export (`weft_http_requests_total`, `..._bucket`, ...), labelled or not."""
    return {metric._name + suffix for metric in ALL for suffix in _SUFFIXES[metric._type]}


class _Off:
    """What a metric is when metrics are off: every call does nothing."""

    def labels(self, *_args, **_kwargs) -> _Off:
        return self

    def inc(self, *_args) -> None: ...
    def dec(self, *_args) -> None: ...
    def set(self, *_args) -> None: ...
    def observe(self, *_args) -> None: ...


def disable() -> None:
    """WEFT_METRICS_ENABLED=false: instrumentation calls become no-ops (bench/bench_telemetry.py's baseline).
    Call sites read `metrics.NAME` at call time, so rebinding the names here reaches all of them."""
    off = _Off()
    for name, value in list(globals().items()):
        if any(value is metric for metric in ALL):
            globals()[name] = off
