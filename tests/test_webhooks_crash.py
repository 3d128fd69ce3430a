"""kill -9 of the notifier mid-delivery: afterwards the loopback receiver, which honours webhook-id, has
applied every webhook the runs called for exactly once, and nothing is lost.

The notifier dies at a named point (libs/events/faults.py) or while attempts are in flight to a receiver
that applies a request at once and answers a second later (so "sent, not recorded" is wide open). The
restarted notifier recovers through the durable timers of the lost attempts (lease WEFT_WEBHOOK_LEASE_S=3 s),
fired by the real scheduler. The session stack's notifier is stopped meanwhile.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tests.conftest import Infra, Stack, poll
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.test_webhooks import (NOTIFIER_ENV, OwnNotifier, allowing_gateway, create_webhook, deliveries,  # noqa: F401 - allowing_gateway: autouse fixture
                                 replaced_notifier, settled,
                                 start_run)


@pytest.fixture(scope="module")
def notifier(stack: Stack, infra: Infra) -> Iterator[OwnNotifier]:
    with replaced_notifier(stack, infra, NOTIFIER_ENV, infra.root / "webhook-crash-logs") as own:
        yield own


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


async def wait_dead(own: OwnNotifier, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while own.proc.alive():
        if time.monotonic() > deadline:
            raise AssertionError(f"the notifier did not die within {timeout}s")
        await asyncio.sleep(0.05)
    return own.proc.proc.returncode


def assert_each_webhook_applied_once(receiver: WebhookReceiver, rows: list[Any], run_ids: list[str]) -> None:
    """Every delivery the runs called for reached the receiver, and each (run, event) under one id only."""
    for run_id in run_ids:
        requests = receiver.requests_for(run_id)
        ids_by_event: dict[str, set[str]] = {}
        for r in requests:
            ids_by_event.setdefault(r.headers["x-webhook-event"], set()).add(r.headers["webhook-id"])
        assert all(len(ids) == 1 for ids in ids_by_event.values()), (run_id, ids_by_event)
    expected = {str(r["id"]) for r in rows}
    assert all(r["status"] == "delivered" for r in rows), rows
    assert expected <= set(receiver.applied), expected - set(receiver.applied)


@pytest.mark.parametrize("point", ["webhook_deliveries_recorded", "webhook_after_send"])
async def test_killed_at_a_named_point_each_webhook_arrives_once(stack, notifier, receiver, pool: asyncpg.Pool,
                                                                tenant, tmp_path, point):
    once = tmp_path / f"fault-{point}"
    notifier.start({"WEFT_FAULT_POINT": point, "WEFT_FAULT_ONCE_FILE": str(once)})
    async with stack.client(tenant) as c:
        await create_webhook(c, receiver.url("/ok"), events=["execution.completed"])
        run_id = await start_run(c)
        code = await wait_dead(notifier)
        assert code == 137 and once.read_text() == point, f"the notifier died otherwise (code {code})"
        (row,) = await deliveries(pool, run_id)
        assert row["status"] == "pending" and row["attempts"] == 0  # committed, the attempt unrecorded
        notifier.start()  # no fault this time
        rows = await settled(pool, run_id, 1, timeout=30)
    assert_each_webhook_applied_once(receiver, rows, [run_id])
    seen = receiver.seen[str(rows[0]["id"])]
    if point == "webhook_after_send":  # it had arrived; the timer's attempt sent it again, under the same id
        assert seen == 2
    else:  # died before sending: the timer's attempt is the only one
        assert seen == 1
    attempts = await pool.fetch("SELECT attempt, status_code FROM webhook_attempts WHERE delivery_id = $1", rows[0]["id"])
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 200)]
    notifier.stop()


async def test_killed_while_attempts_are_in_flight_nothing_is_lost_or_applied_twice(stack, notifier, receiver,
                                                                                    pool: asyncpg.Pool, tenant):
    notifier.start()
    async with stack.client(tenant) as c:
        await create_webhook(c, receiver.url("/slow?s=1"), events=["execution.started", "execution.completed"])
        run_ids = await asyncio.gather(*(start_run(c) for _ in range(4)))

        async def arrived() -> int:
            return sum(len(receiver.requests_for(r)) for r in run_ids)

        # Every event taken in (its deliveries committed, so it is acked or about to be: a message left
        # unacked by the kill would only come back after the consumer's 30 s ack wait) and some attempts out.
        created = [uuid.UUID(r) for r in run_ids]
        await poll(lambda: pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE execution_id = ANY($1::uuid[])",
                                         created), lambda n: n == 2 * len(run_ids), timeout=20, every=0.02)
        await poll(arrived, lambda n: n >= 3, timeout=20, every=0.02)
        notifier.kill()  # some requests applied at the receiver, their answers not yet back
        in_flight = await pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE execution_id = ANY($1::uuid[]) AND status = 'pending'",
            created)
        notifier.start()
        rows = [row for r in run_ids for row in await settled(pool, r, 2, timeout=45)]
    assert in_flight > 0, "the kill met no attempt in flight; the test proved nothing"
    assert_each_webhook_applied_once(receiver, rows, run_ids)
    resent = sum(receiver.seen[str(r["id"])] - 1 for r in rows)
    print(f"{in_flight} deliveries unrecorded at the kill; {resent} resent under their webhook-id and dropped")
    assert resent > 0
    notifier.stop()
