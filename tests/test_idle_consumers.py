"""An idle pull consumer is quiet: fetches that find nothing are not errors, and its pull loop never dies."""

from __future__ import annotations

import asyncio
import logging
import uuid

import nats
from faststream.nats import NatsBroker

from libs.events.bus import ensure_streams
from libs.events.consumer import subscribe_events
from libs.events.settings import Settings


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_an_idle_event_consumer_logs_no_error_and_keeps_its_pull_loop(settings: Settings):
    nc = await nats.connect(settings.nats_url)
    await ensure_streams(nc.jetstream(), settings)
    await nc.close()
    records = Records()
    logger = logging.getLogger(f"test-idle-{uuid.uuid4().hex[:6]}")
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    broker = NatsBroker(settings.nats_url, logger=logger)

    async def handle(subject: str, headers: dict, data: bytes) -> None:  # never called: nothing is published
        raise AssertionError(subject)

    # Subjects nobody publishes on: every fetch ends by timing out. About one idle fetch in 20 used to end in
    # the wrong exception (see _fetch_times_out_as_documented), so 16 consumers idle for 8 s make ~128 tries.
    for _ in range(16):
        subscribe_events(broker, durable=f"idle-{uuid.uuid4().hex[:8]}",
                         subject=f"weft.evt.idle{uuid.uuid4().hex[:8]}.>", settings=settings, handle=handle)
    await broker.start()
    try:
        first = [list(s.tasks) for s in broker.subscribers]
        await asyncio.sleep(8)
        restarted = [i for i, s in enumerate(broker.subscribers) if list(s.tasks) != first[i]]
        assert restarted == [], "pull loops ended and were restarted by FastStream's supervisor"
    finally:
        await broker.stop()
    loud = [f"{r.levelname} {r.getMessage()}" for r in records.records if r.levelno >= logging.WARNING]
    restarts = [r.getMessage() for r in records.records if "raised an exception" in r.getMessage()]
    assert loud == [] and restarts == []
