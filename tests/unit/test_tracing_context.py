"""Trace context helpers (libs/telemetry/tracing.py), without an SDK installed (the default deployment)."""

from __future__ import annotations

from libs.telemetry.tracing import context_from, current_traceparent, inject, traced

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def test_nothing_is_carried_when_nothing_is_traced():
    with traced("step noop"):
        assert inject({}) == {} and current_traceparent() is None
    assert context_from({"Nats-Msg-Id": "x"}) is None and context_from(None) is None


def test_a_carried_unsampled_context_travels_on_but_is_not_stored_in_events():
    with traced("command StartRun", context=context_from({"traceparent": UNSAMPLED})):
        assert inject({})["traceparent"] == UNSAMPLED  # the next hop keeps the caller's decision
        with traced("step noop"):
            assert inject({})["traceparent"] == UNSAMPLED
        assert current_traceparent() is None  # events of an unsampled run carry no traceparent
    assert inject({}) == {}  # the carried context is detached afterwards


def test_a_carried_sampled_context_is_stored_in_events():
    with traced("command StartRun", context=context_from({"traceparent": SAMPLED})):
        assert current_traceparent().split("-")[1] == SAMPLED.split("-")[1]
