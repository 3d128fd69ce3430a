"""The runtime every service shares: pools, NATS, FastStream broker, health, readiness and /metrics routes."""

from __future__ import annotations

import asyncio
import os
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import asyncpg
import nats
import nats.js.errors
import structlog
from faststream.nats import NatsBroker
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.response import Response
from nats.js import JetStreamContext

from libs.events.bus import COMMANDS_STREAM, EVENTS_STREAM, ensure_streams
from libs.events.consumer import keep_consumers
from libs.events.db import create_pool
from libs.events.logging import configure_logging, faststream_logger
from libs.readmodels import project
from libs.runtime.probe import NatsProbe
from libs.events.settings import Settings
from libs.events.store import EventStore
from libs.runtime.http_telemetry import HttpTelemetry
from libs.telemetry import metrics
from libs.telemetry.tracing import configure_tracing, shutdown_tracing

log = structlog.get_logger()


@dataclass
class ServiceContext:
    settings: Settings
    pool: asyncpg.Pool
    store: EventStore
    nc: nats.NATS
    js: JetStreamContext
    broker: NatsBroker
    tasks: list[asyncio.Task] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    probe: NatsProbe | None = None  # round trips through nats-server that no caller can break (probe.py)


Setup = Callable[[ServiceContext], Awaitable[None]]


def nats_servers(settings: Settings) -> list[str]:
    """WEFT_NATS_URL may name every node of a cluster, comma-separated: a client reaches any live one."""
    return [url.strip() for url in settings.nats_url.split(",") if url.strip()]


async def connect_nats(settings: Settings, name: str) -> nats.NATS:
    return await nats.connect(
        nats_servers(settings), name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5
    )


@asynccontextmanager
async def service_resources(settings: Settings, name: str, setup: Setup | None) -> AsyncIterator[ServiceContext]:
    pool = await create_pool(settings)
    nc = await connect_nats(settings, name)
    js = nc.jetstream()
    probe = NatsProbe(nc)
    await probe.start()
    await until_jetstream_answers("ensure_streams", partial(ensure_streams, js, settings))
    # graceful_timeout: on shutdown, in-flight handlers get this long to finish before their messages
    # are left unacked (JetStream redelivers them). FastStream's own per-message lines ("Received",
    # "Processed") go to DEBUG: every handler logs its outcome itself (e.g. command_handled), once, structured.
    broker = NatsBroker(nats_servers(settings), graceful_timeout=15.0, max_reconnect_attempts=-1, log_level=logging.DEBUG,
                        logger=faststream_logger())  # its lines through structlog (libs/events/logging.py)
    ctx = ServiceContext(
        settings=settings, pool=pool, store=EventStore(pool, app_role=settings.db_app_role, projector=project),
        nc=nc, js=js, broker=broker, probe=probe,
    )
    try:
        if setup is not None:
            await setup(ctx)
        metrics.add_sampler(partial(sample_consumers, js, name))
        await until_jetstream_answers("broker_start", broker.start, undo=broker.stop)
        ctx.tasks.append(asyncio.create_task(keep_consumers(broker, nc, js, settings)))
        log.info("service_started", port=settings.port)
        yield ctx
    finally:
        await broker.stop()
        for stop in ctx.on_stop:
            await stop()
        for task in ctx.tasks:
            task.cancel()
        await asyncio.gather(*ctx.tasks, return_exceptions=True)
        metrics.clear_samplers()
        await nc.drain()
        await pool.close()
        log.info("service_stopped")


# What a JetStream API request meets while the cluster is busy, electing a leader or not up yet: a timeout, no
# responders, "JetStream not available" (503). Anything else (a refused config) is a real error.
JETSTREAM_NOT_ANSWERING = (nats.errors.TimeoutError, asyncio.TimeoutError, nats.errors.NoRespondersError,
                           nats.js.errors.ServiceUnavailableError)


async def until_jetstream_answers(what: str, start: Callable[[], Awaitable[None]], *,
                                  undo: Callable[[], Awaitable[None]] | None = None, within_s: float = 120.0) -> None:
    """Run a start-up step that talks to the JetStream API, again (after `undo`) while JetStream does not
    answer, for up to `within_s`. A loaded cluster can time out one consumer lookup: a process that exits on it
    only comes back through a restart, and meanwhile nothing serves (its readiness stays false while it waits)."""
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + within_s, 0.5
    while True:
        try:
            await start()
            return
        except JETSTREAM_NOT_ANSWERING as exc:
            if loop.time() + delay > deadline:
                raise
            log.warning("startup_jetstream_retry", step=what, error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
            if undo is not None:
                await undo()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def sample_consumers(js: JetStreamContext, service: str) -> None:
    """weft_consumer_pending for this service's durable consumers (named "<service>-...")."""
    for stream in (COMMANDS_STREAM, EVENTS_STREAM):
        for info in await js.consumers_info(stream):
            if info.name.startswith(f"{service}-"):
                metrics.CONSUMER_PENDING.labels(info.name).set((info.num_pending or 0) + (info.num_ack_pending or 0))


async def ready(state: State) -> Response:
    ctx: ServiceContext | None = getattr(state, "ctx", None)
    checks = {"database": False, "nats": False}
    if ctx is not None:
        # Connected is not enough: a connection whose read loop died still says connected while nothing it
        # publishes is acknowledged. Ready means a message made the round trip through nats-server just now.
        checks["nats"] = await ctx.probe.healthy(1.0) if ctx.probe is not None else ctx.nc.is_connected
        try:
            await asyncio.wait_for(ctx.pool.fetchval("SELECT 1"), 2.0)
            checks["database"] = True
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
    ok = all(checks.values())
    return Response({"status": "ready" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


@get("/health/live", sync_to_thread=False)
def live() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/ready")
async def ready_route(state: State) -> Response:
    return await ready(state)


@get("/metrics", include_in_schema=False)
async def metrics_route() -> Response:
    body, content_type = await metrics.exposition()
    return Response(body, media_type=content_type)


def create_service_app(
    settings: Settings, *, name: str, setup: Setup | None = None, route_handlers: Sequence = (),
    access_log: bool = False, **litestar_kwargs
) -> Litestar:
    """A Litestar app whose lifespan owns the service's resources; `setup` registers subscribers/tasks.
    Every request is measured and traced (libs/runtime/http_telemetry.py); the gateway also logs each one."""
    configure_logging(name, settings.log_level)
    if not settings.metrics_enabled:
        metrics.disable()
    configure_tracing(name, settings.otel_endpoint, settings.trace_sample_ratio)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            async with service_resources(settings, name, setup) as ctx:
                app.state.ctx = ctx
                yield
        finally:
            shutdown_tracing()

    # logging_config=None: Litestar would otherwise install its own plain-text handlers over ours.
    app = Litestar(route_handlers=[live, ready_route, metrics_route, *route_handlers], lifespan=[lifespan],
                   logging_config=None, **litestar_kwargs)
    app.asgi_handler = HttpTelemetry(app.asgi_handler, log_requests=access_log)
    return app


def serve(app: Litestar, settings: Settings) -> None:
    """Run under uvicorn; SIGTERM/SIGINT trigger the lifespan shutdown (graceful). uvloop and httptools when
    installed (they are dependencies; docs/decisions/0012-uvloop.md)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            # uvicorn acts on a stop signal only once startup is over, and startup can wait on a dependency for
            # ever (a reconnecting NATS client after its server died with our supervisor). Stopped before it
            # started, the process has nothing to drain: no message is acked before startup ends.
            if not self.started:
                os._exit(128 + sig)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=20, loop="auto", http="auto")
    Server(config).run()
