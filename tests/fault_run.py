"""One fault test's load (executes through every gateway, minute schedules, webhooks to a real receiver)
and its reckoning: counts printed, then asserted (nothing accepted lost or done twice, every occurrence of
each schedule's window fired once, every webhook the run events call for delivered)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import nats

from libs.events.bus import EVENTS_STREAM
from tests.fault_load import (SCHEDULED_NODES, SCHEDULED_STEPS, api_schedule, backdated_through_owner,
                              create_endpoint, now, occurrences, settle, webhooks)
from tests.test_faults import (DATABASE, TENANT, Submitted, assert_completed_once, create_workflow, db_fetch,
                               execute, http_node, run_events, shape_node, until)

STEPS = ("a", "d", "b", "shape")
TERMINAL = ("RunCompleted", "RunFailed")


@dataclass
class Load:
    c: Any  # tests.test_cluster_faults.ClusterStack (it imports this module)
    workflow_id: str
    scheduled_id: str
    backdated: list[uuid.UUID]
    api: list[uuid.UUID]
    results: list[Submitted] = field(default_factory=list)

    @classmethod
    async def prepare(cls, c: Any, *, backdated: int, api: int) -> Load:
        """The workflows, the stack's webhook endpoint (one per stack) and the schedules: `backdated` created
        2.5 minutes ago (two or three occurrences due at once) and `api` created now."""
        async with c.client() as client:
            workflow_id = await create_workflow(client, "cluster", [
                http_node("a", c, delay=0.2), {"id": "d", "type": "delay", "depends_on": ["a"], "config": {"seconds": 1}},
                http_node("b", c, depends_on=["d"]), shape_node("b")])
            scheduled_id = await create_workflow(client, "scheduled", SCHEDULED_NODES)
            if c.endpoint is None:
                c.endpoint = await create_endpoint(client, c.webhooks)
            old = await backdated_through_owner(c.dsn, TENANT, uuid.UUID(scheduled_id), backdated,
                                                now() - timedelta(minutes=2, seconds=30))
            new = [await api_schedule(client, scheduled_id) for _ in range(api)]
        return cls(c, workflow_id, scheduled_id, old, new)

    async def executes(self, client: httpx.AsyncClient, w: int, stop: asyncio.Event) -> None:
        """One client's executes, each under its own Idempotency-Key, until `stop`."""
        async with client:
            i = 0
            while not stop.is_set():
                marker = f"cl-{w}-{i}-{uuid.uuid4().hex[:6]}"
                try:
                    self.results.append(await execute(client, self.workflow_id, marker, key=marker))
                except httpx.TransportError as exc:
                    self.results.append(Submitted(-1, marker, None, None, repr(exc)))
                i += 1
                await asyncio.sleep(0.1)

    async def check(self, label: str, takeovers: dict[str, float], *, minute_boundary: bool = False) -> None:
        c, through = self.c, now()  # the schedules' windows end when the load does
        async with c.client() as client:  # 503 = not acknowledged: a client retries with its key
            retried = [await execute(client, self.workflow_id, r.marker, key=r.marker)
                       for r in self.results if r.status not in (201, 202)]
        accepted = [r for r in self.results if r.status in (201, 202)] + [r for r in retried if r.status in (201, 202)]
        events = await until(lambda: run_events(c, [r.run_id for r in accepted]),
                             lambda evs: all(any(t in TERMINAL for t, _, _ in e) for e in evs.values()),
                             90, what="every accepted run finished")
        completed = sum(1 for e in events.values() if any(t == "RunCompleted" for t, _, _ in e))
        duplicates = sum(max(0, c.receiver.effects_for(r.marker) - 2) for r in accepted)
        duplicates += sum(max(0, sum(1 for t, s, _ in e if t == "StepCompleted" and s == sid) - 1)
                          for e in events.values() for sid in STEPS)
        sids = self.backdated + self.api
        occ = await settle(lambda: occurrences(c.dsn, sids, through, frozenset(self.api)), lambda o: not o.missed, 40)
        scheduled = await until(lambda: run_events(c, occ.runs),
                                lambda evs: all(any(t in TERMINAL for t, _, _ in e) for e in evs.values()),
                                60, what="every fired occurrence's run finished")
        runs = [r.run_id for r in accepted] + occ.runs
        hooks = await settle(lambda: webhooks(c.dsn, c.webhooks, c.endpoint, runs), lambda w: not w.lost, 30)
        # Both re-read each poll: a schedule's tick may append while we look.
        stored, published = await settle(lambda: _stored_and_published(c), lambda sp: sp[0] == sp[1], 30)
        logins = await db_fetch(c, "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = $1", DATABASE)
        takeover = ", ".join(f"{k} {v:.2f} s" for k, v in takeovers.items()) or "none"
        print(f"\ncluster faults ({label}):\n"
              f"  executes: accepted {len(accepted)}, completed {completed}, duplicates {duplicates}, "
              f"lost {len(accepted) - completed}, refused then retried {len(retried)}\n"
              f"  occurrences: expected {occ.expected} (of them at real minute boundaries {occ.real_boundaries}), "
              f"fired {occ.fired}, fired twice {len(occ.twice)}, missed {len(occ.missed)}\n"
              f"  webhooks: expected {hooks.expected}, received {hooks.received}, lost {len(hooks.lost)}, "
              f"duplicates {hooks.duplicates} (allowed: at least once, one webhook-id), "
              f"bad signatures {hooks.bad_signatures}\n"
              f"  events stored {stored}, published {published}; max takeover "
              f"{max(takeovers.values(), default=0):.2f} s ({takeover})")
        assert {r["usename"] for r in logins} >= {"weft_system_login", "weft_app_login"}, logins
        assert len(accepted) == len(self.results), [r for r in retried if r.status not in (201, 202)][:3]
        assert_completed_once(events, STEPS)
        assert duplicates == 0 and completed == len(accepted)
        assert not occ.twice and not occ.missed and not occ.wrong_run, (occ.twice, occ.missed, occ.wrong_run)
        assert occ.expected >= 2 * len(self.backdated)
        assert not minute_boundary or occ.real_boundaries >= len(self.api), "no real minute boundary under the load"
        assert_completed_once(scheduled, SCHEDULED_STEPS)
        assert not hooks.lost and hooks.bad_signatures == 0, hooks.lost[:5]
        assert hooks.expected == 2 * len(runs)
        assert published == stored, "an event published twice or one never published"
        await self.stop_schedules()

    async def stop_schedules(self) -> None:
        """Delete this test's schedules, so they do not load the next test on the same stack."""
        async with self.c.client() as client:
            for sid in self.backdated + self.api:
                resp = await client.delete(f"/api/v2/workflows/{self.scheduled_id}/schedules/{sid}")
                assert resp.status_code in (200, 202), resp.text


async def stream_info(c: Any):
    """The EVENTS stream's info, asked of any node of the cluster."""
    nc = await nats.connect(c.nats.url.split(","), connect_timeout=2, max_reconnect_attempts=2)
    try:
        return await nc.jetstream().stream_info(EVENTS_STREAM)
    finally:
        await nc.close()


async def _stored_and_published(c: Any) -> tuple[int, int]:
    stored = (await db_fetch(c, "SELECT count(*) AS n FROM events"))[0]["n"]
    try:
        return stored, (await stream_info(c)).state.messages
    except Exception:  # noqa: BLE001 - nats' errors while the cluster settles: polled again
        return stored, -1
