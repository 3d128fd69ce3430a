"""The fault tests' load besides executes: minute schedules and signed webhook deliveries, and the ledgers
that count them against what the cron and the run events call for (never against what fired or arrived).

Schedules come two ways: "backdated" (ScheduleCreated appended straight to the store with a creation time
minutes ago, what a scheduler outage leaves, so occurrences are due at once and a short test sees several)
and through the v2 API (created now: they fire only when a real minute boundary passes)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx
from standardwebhooks import Webhook

from libs.adapters.webhooks import delivery_id, standard_secret
from libs.domain import cron
from libs.events.schemas import Metadata
from libs.events.schemas.schedule import ScheduleCreated
from libs.events.store import EventStore
from libs.readmodels import project
from services.gateway.commands import entity_id
from services.scheduler.domain import run_id_for
from tests.fakes.webhook_receiver import WebhookReceiver

EVERY_MINUTE = "* * * * *"
WEBHOOK_SECRET = "cluster-faults-webhook-secret"
WEBHOOK_EVENTS = {"RunStarted": "execution.started", "RunCompleted": "execution.completed"}
SCHEDULED_NODES = [{"id": "shape", "type": "transform", "config": {"template": {"scheduled": True}}},
                   {"id": "done", "type": "echo", "input_from": "shape"}]
SCHEDULED_STEPS = ("shape", "done")


async def backdated_schedules(store: EventStore, tenant: str, workflow_id: uuid.UUID, count: int,
                              at: datetime) -> list[uuid.UUID]:
    """`count` minute schedules created at `at` (queue every missed occurrence, overlaps allowed)."""
    sids = [uuid.uuid4() for _ in range(count)]
    for sid in sids:
        await store.append(f"schedule-{sid}", 0, [ScheduleCreated(
            schedule_id=sid, workflow_id=workflow_id, cron_expression=EVERY_MINUTE, missed_execution_policy="queue",
            max_queued=10, overlap_policy="allow", created_by="alice", at=at)], metadata=Metadata(tenant_id=tenant))
    return sids


async def backdated_through_owner(dsn: str, tenant: str, workflow_id: uuid.UUID, count: int,
                                  at: datetime) -> list[uuid.UUID]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        return await backdated_schedules(EventStore(pool, projector=project), tenant, workflow_id, count, at)
    finally:
        await pool.close()


async def api_schedule(client: httpx.AsyncClient, workflow_id: str) -> uuid.UUID:
    """A minute schedule through the v2 API, created now (its first occurrence is the next minute)."""
    resp = await client.post(f"/api/v2/workflows/{workflow_id}/schedules", json={
        "cron_expression": EVERY_MINUTE, "missed_execution_policy": "queue", "overlap_policy": "allow"})
    assert resp.status_code in (201, 202), resp.text
    if resp.status_code == 201:
        return uuid.UUID(resp.json()["schedule"]["id"])
    return entity_id(uuid.UUID(resp.json()["command_id"]))


async def create_endpoint(client: httpx.AsyncClient, receiver: WebhookReceiver) -> uuid.UUID:
    """A tenant-wide endpoint at the receiver for execution.started and .completed, signed with WEBHOOK_SECRET."""
    resp = await client.post("/api/v2/webhooks", json={"url": receiver.url("/ok"), "secret": WEBHOOK_SECRET,
                                                       "events": list(WEBHOOK_EVENTS.values())})
    assert resp.status_code == 201, resp.text
    return uuid.UUID(resp.json()["webhook"]["id"])


async def settle(fn, ok, timeout: float, every: float = 0.5):
    """Poll fn() until ok(result) or `timeout` seconds; returns the last result either way (the caller
    prints the counts before asserting, so a failure shows what was missing)."""
    deadline = time.monotonic() + timeout
    while True:
        last = await fn()
        if ok(last) or time.monotonic() > deadline:
            return last
        await asyncio.sleep(every)


# --- occurrences ------------------------------------------------------------------------------------------


@dataclass
class Occurrences:
    expected: int  # from the cron and each schedule's window (created, through]
    fired: int  # fired occurrences inside the windows, each counted once
    twice: list[tuple[uuid.UUID, datetime]]  # fired more than once (anywhere, not only in the windows)
    missed: list[tuple[uuid.UUID, datetime]]  # expected and not fired
    wrong_run: list[tuple[uuid.UUID, datetime, str]]  # a run id that is not the occurrence's own
    runs: list[uuid.UUID]  # the runs of the windows' occurrences
    real_boundaries: int  # expected occurrences of schedules created through the API (a real minute passed)


async def occurrences(dsn: str, sids: list[uuid.UUID], through: datetime,
                      api_sids: frozenset[uuid.UUID] = frozenset()) -> Occurrences:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        async with conn.transaction(isolation="repeatable_read"):
            created = await conn.fetch("SELECT stream_id, data->>'at' AS at FROM events WHERE type = 'ScheduleCreated'"
                                       " AND stream_id = ANY($1::text[])", [f"schedule-{s}" for s in sids])
            fired = await conn.fetch("SELECT stream_id, data->>'occurrence_at' AS at, data->>'run_id' AS run_id"
                                     " FROM events WHERE type = 'OccurrenceFired' AND stream_id = ANY($1::text[])",
                                     [f"schedule-{s}" for s in sids])
    finally:
        await conn.close(timeout=2)
    every = cron.parse(EVERY_MINUTE)
    windows = {uuid.UUID(r["stream_id"].split("-", 1)[1]): _ts(r["at"]) for r in created}
    assert set(windows) == set(sids), f"schedules not created: {set(sids) - set(windows)}"
    expected = {(sid, at) for sid, start in windows.items() for at in cron.occurrences(every, UTC_ZONE, start, through)}
    counts = Counter((uuid.UUID(r["stream_id"].split("-", 1)[1]), _ts(r["at"])) for r in fired)
    run_of = {(uuid.UUID(r["stream_id"].split("-", 1)[1]), _ts(r["at"])): r["run_id"] for r in fired}
    return Occurrences(
        expected=len(expected), fired=len(expected & set(counts)),
        twice=sorted(k for k, n in counts.items() if n > 1), missed=sorted(expected - set(counts)),
        wrong_run=[(s, at, run) for (s, at), run in run_of.items() if run != str(run_id_for(s, at))],
        runs=[uuid.UUID(run_of[k]) for k in sorted(expected & set(counts))],
        real_boundaries=sum(1 for sid, _ in expected if sid in api_sids))


UTC_ZONE = cron.zone("UTC")


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# --- webhooks ---------------------------------------------------------------------------------------------


@dataclass
class Webhooks:
    expected: int  # one per RunStarted / RunCompleted event of the counted runs
    received: int  # of those, how many arrived (and were applied) at least once
    lost: list[str]  # webhook-ids expected and never applied
    duplicates: int  # requests beyond the first per webhook-id: allowed (at least once), deduped by the receiver
    bad_signatures: int  # requests of this endpoint whose signatures do not verify


async def webhooks(dsn: str, receiver: WebhookReceiver, endpoint: uuid.UUID, run_ids: list[uuid.UUID]) -> Webhooks:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch("SELECT event_id FROM events WHERE type = ANY($1::text[]) AND stream_id = ANY($2::text[])",
                                list(WEBHOOK_EVENTS), [f"run-{r}" for r in run_ids])
        ours = {str(r["id"]) for r in await conn.fetch("SELECT id FROM webhook_deliveries WHERE endpoint_id = $1",
                                                       endpoint)}
    finally:
        await conn.close(timeout=2)
    expected = {str(delivery_id(r["event_id"], endpoint)) for r in rows}
    with receiver.lock:
        requests = [r for r in receiver.requests if r.headers.get("webhook-id") in ours | expected]
        seen, applied = Counter(receiver.seen), set(receiver.applied)
    return Webhooks(expected=len(expected), received=len(expected & applied), lost=sorted(expected - applied),
                    duplicates=sum(max(0, seen[i] - 1) for i in expected),
                    bad_signatures=sum(1 for r in requests if not _signed(r.headers, r.body)))


def _signed(headers: dict[str, str], body: bytes) -> bool:
    """Spec D's X-Webhook-Signature and the Standard Webhooks signature, both over the exact body."""
    d_sig = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(headers.get("x-webhook-signature", ""), d_sig):
        return False
    try:
        Webhook(standard_secret(WEBHOOK_SECRET)).verify(body, headers)
    except Exception:  # noqa: BLE001 - the library raises its own WebhookVerificationError (and ValueError)
        return False
    return True


def now() -> datetime:
    return datetime.now(UTC)
