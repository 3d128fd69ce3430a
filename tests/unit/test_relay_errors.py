"""The relay tells a NATS failure from a database failure in its log: NATS timeouts are TimeoutErrors, and in
Python a TimeoutError is an OSError, which is how a lost database connection looks too."""

from __future__ import annotations

import asyncio

import asyncpg
import nats.errors
import pytest
import structlog

from services.relay.app import PublishNotConfirmed, Relay


async def _logged_after(failure: BaseException) -> list[str]:
    relay = Relay("postgresql://unused", js=None)
    calls = 0

    async def lead() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise failure
        raise asyncio.CancelledError  # the second lead ends the test

    relay._lead = lead
    with structlog.testing.capture_logs() as logged, pytest.raises(asyncio.CancelledError):
        await relay.run()
    return [entry["event"] for entry in logged]


@pytest.mark.parametrize("failure", [nats.errors.TimeoutError(), nats.errors.NoRespondersError(),
                                     PublishNotConfirmed("no PubAck")])
async def test_nats_failures_are_publish_errors(failure):
    assert await _logged_after(failure) == ["relay_publish_error"]


@pytest.mark.parametrize("failure", [ConnectionResetError("reset"), TimeoutError(),
                                     asyncpg.CannotConnectNowError("starting up")])
async def test_database_failures_are_database_errors(failure):
    assert await _logged_after(failure) == ["relay_db_error"]
