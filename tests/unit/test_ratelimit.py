"""The token bucket on a controllable clock: properties over arbitrary request sequences, and the headers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.security.ratelimit import MICRO, Limit, MemoryBuckets, take

limits = st.builds(Limit, burst=st.integers(1, 20), per_minute=st.integers(1, 6000))
# Gaps between consecutive requests: often simultaneous, often tiny, sometimes long.
gaps = st.lists(st.one_of(st.just(0), st.integers(0, 2_000), st.integers(0, 3 * MICRO), st.integers(0, 90 * MICRO)),
                min_size=1, max_size=150)


class Clock:
    def __init__(self, start: int = 1_700_000_000 * MICRO):
        self.now = start

    def __call__(self) -> int:
        return self.now


def run(limit: Limit, request_gaps: list[int]) -> list[tuple[int, bool]]:
    """Send one request after each gap; (time, allowed) per request."""
    clock = Clock()
    buckets = MemoryBuckets(clock)
    out = []
    for gap in request_gaps:
        clock.now += gap
        out.append((clock.now, buckets.take("client", limit).allowed))
    return out


@settings(max_examples=300, deadline=None, database=None)
@given(limits, gaps)
def test_allowed_in_any_window_is_at_most_burst_plus_rate_times_length(limit, request_gaps):
    sent = run(limit, request_gaps)
    for i in range(len(sent)):
        allowed = 0
        for j in range(i, len(sent)):
            allowed += sent[j][1]
            window_us = sent[j][0] - sent[i][0]
            # allowed <= burst + per_minute/60 tokens per second * T, in exact integers.
            assert allowed * 60 * MICRO <= limit.burst * 60 * MICRO + limit.per_minute * window_us, (i, j)


@settings(max_examples=300, deadline=None, database=None)
@given(limits, gaps, st.data())
def test_a_request_one_rate_interval_after_the_previous_is_never_limited(limit, prefix, data):
    """Whatever came before (a burst, refusals), a request at least 1/rate after the client's previous one
    is allowed; so a client that never sends faster than the rate is never limited."""
    interval = -(-60 * MICRO // limit.per_minute)
    slack = data.draw(st.lists(st.integers(0, 5 * MICRO), min_size=1, max_size=60))
    sent = run(limit, [*prefix, *(interval + extra for extra in slack)])
    assert all(allowed for _, allowed in sent[len(prefix):])


@settings(max_examples=200, deadline=None, database=None)
@given(limits, st.lists(st.integers(0, 3 * MICRO), min_size=1, max_size=60))
def test_a_client_at_or_below_the_rate_from_a_fresh_start_is_never_limited(limit, extra):
    interval = -(-60 * MICRO // limit.per_minute)
    assert all(allowed for _, allowed in run(limit, [0, *(interval + e for e in extra)]))


def test_burst_of_ten_then_one_per_second_and_refusals_consume_nothing():
    limit = Limit(burst=10, per_minute=60)
    clock = Clock()
    buckets = MemoryBuckets(clock)
    assert [buckets.take("k", limit).allowed for _ in range(10)] == [True] * 10
    for _ in range(50):  # hammering an empty bucket takes nothing
        assert not buckets.take("k", limit).allowed
    clock.now += MICRO - 1
    assert not buckets.take("k", limit).allowed
    clock.now += 1  # exactly one second after the burst: exactly one token, despite the 51 refusals
    assert buckets.take("k", limit).allowed
    assert not buckets.take("k", limit).allowed
    clock.now += 3600 * MICRO  # an hour later: full again, never more than the burst
    assert sum(buckets.take("k", limit).allowed for _ in range(20)) == 10


def test_a_clock_that_goes_back_refills_nothing():
    limit = Limit(burst=2, per_minute=60)
    decision, bucket = take(limit, None, 10 * MICRO)
    decision, bucket = take(limit, bucket, 10 * MICRO)
    assert decision.allowed and bucket.tokens == 0
    decision, bucket = take(limit, bucket, 5 * MICRO)  # another process's earlier timestamp
    assert not decision.allowed and bucket.tokens == 0 and bucket.at_us == 10 * MICRO


def test_headers_report_limit_remaining_reset_and_retry_after():
    limit = Limit(burst=10, per_minute=60)
    now = 1_761_233_379_176_000
    first, bucket = take(limit, None, now)
    assert first.headers() == {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "9",
                               "X-RateLimit-Reset": str(now // 1000 + 1000)}  # full again in one second
    for _ in range(9):
        _, bucket = take(limit, bucket, now)
    refused, bucket = take(limit, bucket, now + 250_000)
    assert not refused.allowed
    headers = refused.headers()
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["Retry-After"] == "1" and refused.retry_after_s == 1  # 0.75 s to the next token, rounded up
    assert headers["X-RateLimit-Reset"] == str((now + 250_000) // 1000 + 9750)  # 9.75 tokens at 1/s


def test_retry_after_follows_a_slow_refill():
    limit = Limit(burst=1, per_minute=6)  # one token every 10 s
    _, bucket = take(limit, None, 0)
    refused, _ = take(limit, bucket, 0)
    assert refused.retry_after_s == 10
