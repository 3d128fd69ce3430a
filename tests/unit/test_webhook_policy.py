"""The webhook delivery decider, given/when/then: given a delivery's state, when an attempt finishes, then
delivered, a retry at a time (spec D: 1 s, 5 s, 15 s with jitter), or dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from libs.events.settings import Settings
from services.notifier.webhook_policy import (
    Attempt,
    Delivery,
    after_attempt,
    disables_endpoint,
    is_next_attempt,
    parse_delays,
    retry_delay,
)

NOW = datetime(2025, 10, 23, 14, 30, tzinfo=UTC)
DELAYS = parse_delays(Settings().webhook_retry_delays_s)


def failed(number: int, status: int | None = 500, error: str | None = None) -> Attempt:
    return Attempt(number=number, started_at=NOW, status_code=status, latency_ms=3.0, error=error)


def decide(delivery: Delivery, attempt: Attempt, unit: float = 0.5, jitter: float = 0.2):
    return after_attempt(delivery, attempt, now=NOW, delays=DELAYS, jitter=jitter, unit=unit)


def test_the_default_schedule_is_the_spec_one():
    assert DELAYS == (1.0, 5.0, 15.0)
    assert Settings().webhook_timeout_s == 10.0


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_delivers(status):
    result = decide(Delivery(status="pending", attempts=0), failed(1, status))
    assert result.status == "delivered" and result.retry_at is None and result.error is None


@pytest.mark.parametrize("number, wait", [(1, 1.0), (2, 5.0), (3, 15.0)])
def test_a_failed_attempt_is_retried_after_its_delay(number, wait):
    result = decide(Delivery(status="pending", attempts=number - 1), failed(number, 503))
    assert result.status == "pending" and result.error == "HTTP 503"
    assert result.retry_at == NOW + timedelta(seconds=wait)  # unit 0.5: no stretch either way


def test_the_fourth_failure_is_dead_lettered():
    result = decide(Delivery(status="pending", attempts=3), failed(4, None, "POST http://x:1 timed out after 10s"))
    assert result.status == "dead" and result.retry_at is None
    assert result.error == "POST http://x:1 timed out after 10s"


def test_a_replay_starts_a_new_round_of_one_attempt_and_three_retries():
    replayed = Delivery(status="pending", attempts=4, round_start=4)
    assert decide(replayed, failed(5)).retry_at == NOW + timedelta(seconds=1)
    assert decide(Delivery(status="pending", attempts=6, round_start=4), failed(7)).retry_at == NOW + timedelta(seconds=15)
    assert decide(Delivery(status="pending", attempts=7, round_start=4), failed(8)).status == "dead"


@pytest.mark.parametrize("unit, expected", [(0.0, 4.0), (0.5, 5.0), (0.999999, 6.0)])
def test_jitter_stretches_a_delay_by_up_to_its_fraction(unit, expected):
    assert retry_delay(5.0, 0.2, unit) == pytest.approx(expected, abs=1e-4)


def test_jitter_spreads_retries_that_failed_together():
    times = {decide(Delivery(status="pending", attempts=1), failed(2), unit=u / 10).retry_at for u in range(10)}
    assert len(times) == 10
    assert all(NOW + timedelta(seconds=4) <= t <= NOW + timedelta(seconds=6) for t in times)


def test_a_redirect_is_a_failure_that_says_it_was_not_followed():
    result = decide(Delivery(status="pending", attempts=0), failed(1, 302))
    assert result.status == "pending" and "redirects are not followed" in (result.error or "")


def test_a_2xx_with_a_transport_error_is_no_delivery():
    attempt = Attempt(number=1, started_at=NOW, status_code=200, latency_ms=1.0, error="response too large")
    assert not attempt.ok and decide(Delivery(status="pending", attempts=0), attempt).status == "pending"


@pytest.mark.parametrize("delivery, number, due", [
    (Delivery(status="pending", attempts=0), 1, True),
    (Delivery(status="pending", attempts=1), 1, False),  # recorded already: a late timer is a no-op
    (Delivery(status="pending", attempts=1), 3, False),
    (Delivery(status="delivered", attempts=1), 2, False),
    (Delivery(status="dead", attempts=4), 5, False),  # only a replay (pending again) makes attempt 5 due
    (Delivery(status="cancelled", attempts=0), 1, False),
])
def test_only_the_next_attempt_of_a_pending_delivery_is_due(delivery, number, due):
    assert is_next_attempt(delivery, number) is due


def test_n_dead_letters_in_a_row_disable_the_endpoint():
    assert not disables_endpoint(4, 5) and disables_endpoint(5, 5) and disables_endpoint(6, 5)
    assert not disables_endpoint(1000, 0)  # 0: never


@pytest.mark.parametrize("raw, expected", [("1,5,15", (1.0, 5.0, 15.0)), ("0.2, 0.4", (0.2, 0.4)), ("", ())])
def test_parse_delays(raw, expected):
    assert parse_delays(raw) == expected


@pytest.mark.parametrize("raw", ["1,x", "-1"])
def test_parse_delays_refuses_nonsense(raw):
    with pytest.raises(ValueError, match="webhook_retry_delays_s"):
        parse_delays(raw)


def test_no_retries_configured_dead_letters_at_once():
    result = after_attempt(Delivery(status="pending", attempts=0), failed(1), now=NOW, delays=(), jitter=0.2, unit=0.5)
    assert result.status == "dead"
