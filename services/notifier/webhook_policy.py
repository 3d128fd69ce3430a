"""The delivery decider: what one finished attempt means for its delivery (delivered, retry at when, or
dead-lettered) and when an endpoint's run of dead letters disables it. Pure: now and randomness come in."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

RESPONSE_SNIPPET = 1000  # characters of a receiver's answer kept with the attempt


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    number: int  # counts across rounds: a replay continues the numbering
    started_at: datetime
    status_code: int | None  # None: no response (refused, timed out, blocked)
    latency_ms: float
    error: str | None = None  # why no response came
    response_body: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300

    @property
    def failure(self) -> str | None:
        """What went wrong, as the delivery log shows it; None when delivered."""
        if self.ok:
            return None
        if self.error is not None:
            return self.error
        if self.status_code is not None and 300 <= self.status_code < 400:
            return f"HTTP {self.status_code}: redirects are not followed"
        return f"HTTP {self.status_code}"


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # pending | delivered | dead | cancelled
    attempts: int  # attempts recorded so far
    round_start: int = 0  # attempts made before the current round (a replay starts a round)


class Next(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # delivered | pending (a retry is due at retry_at) | dead
    retry_at: datetime | None = None
    error: str | None = None


def parse_delays(raw: str) -> tuple[float, ...]:
    """"1,5,15" -> (1.0, 5.0, 15.0): one delay per retry, each after the failure of the attempt before it."""
    try:
        delays = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"webhook_retry_delays_s must be comma-separated seconds, got {raw!r}") from None
    if any(d < 0 for d in delays):
        raise ValueError(f"webhook_retry_delays_s must not be negative, got {raw!r}")
    return delays


def retry_delay(base_s: float, jitter: float, unit: float) -> float:
    """base_s stretched by up to +-jitter of itself; unit in [0, 1) picks where (0.5: exactly base_s).
    Jitter spreads the retries of many deliveries that failed together (a receiver's outage)."""
    return max(0.0, base_s * (1.0 + jitter * (2.0 * unit - 1.0)))


def is_next_attempt(delivery: Delivery, number: int) -> bool:
    """Attempt `number` is due: the delivery is pending and that attempt is not recorded yet. Anything else
    is a late or repeated order (a timer that fired after the in-process attempt recorded it) and a no-op."""
    return delivery.status == "pending" and number == delivery.attempts + 1


def after_attempt(delivery: Delivery, attempt: Attempt, *, now: datetime, delays: tuple[float, ...],
                  jitter: float, unit: float) -> Next:
    """A round is one attempt plus len(delays) retries (spec D: 1 s, 5 s, 15 s); after the last failure the
    delivery is dead-lettered."""
    if attempt.ok:
        return Next(status="delivered")
    in_round = attempt.number - delivery.round_start  # 1-based within the round
    if in_round <= len(delays):
        wait = retry_delay(delays[in_round - 1], jitter, unit)
        return Next(status="pending", retry_at=now + timedelta(seconds=wait), error=attempt.failure)
    return Next(status="dead", error=attempt.failure)


def disables_endpoint(consecutive_dead: int, threshold: int) -> bool:
    """After `threshold` dead-lettered deliveries in a row the endpoint is disabled (0 never disables)."""
    return threshold > 0 and consecutive_dead >= threshold
