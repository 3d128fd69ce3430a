"""Schedules through the v2 contract (spec E) and the console contract (B), against the real gateway,
planner, executor, relay and scheduler processes: CRUD in the documented shapes, 400s naming the field,
occurrences that fire runs and explain themselves, delays on durable timers, and console schedules that
start once the plan is approved."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest

from libs.domain.cron import next_after, parse, zone
from libs.events.schemas import Metadata
from libs.events.schemas.plan import PlanApproved
from libs.events.schemas.schedule import ScheduleCreated
from tests.conftest import poll

ECHO = {"nodes": [{"id": "s", "type": "echo", "config": {"message": "tick"}}]}
WITH_INPUTS = {"nodes": [{"id": "s", "type": "echo", "config": {"message": "${inputs.date_range}"}}],
               "inputs": {"type": "object", "properties": {"date_range": {"type": "string"},
                                                           "limit": {"type": "integer", "default": 5}},
                          "required": ["date_range"]}}


async def _workflow(client: httpx.AsyncClient, definition=ECHO) -> str:
    r = await client.post("/api/v2/workflows", json={"name": f"sched-{uuid.uuid4().hex[:8]}", "definition": definition})
    assert r.status_code == 201, r.text
    return r.json()["workflow"]["id"]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def test_schedule_crud_in_the_documented_shapes(stack, tenant):
    async with stack.client(tenant) as c:
        wid = await _workflow(c, WITH_INPUTS)
        body = {"cron_expression": "0 9 * * 1", "timezone": "America/New_York", "inputs": {"date_range": "LAST_WEEK"},
                "missed_execution_policy": "run_immediately"}
        before = datetime.now(UTC)
        r = await c.post(f"/api/v2/workflows/{wid}/schedules", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["success"] is True
        s = created["schedule"]
        expected_next = next_after(parse("0 9 * * 1"), zone("America/New_York"), before)
        assert s["workflow_id"] == wid and s["cron_expression"] == "0 9 * * 1"
        assert s["timezone"] == "America/New_York" and s["inputs"] == {"date_range": "LAST_WEEK"}
        assert s["missed_execution_policy"] == "run_immediately" and s["enabled"] is True
        assert s["next_run_at"] == _iso(expected_next) and s["created_at"].endswith("Z")
        assert s["last_run_at"] is None and s["overlap_policy"] == "skip"
        sid = s["id"]

        listed = (await c.get(f"/api/v2/workflows/{wid}/schedules")).json()
        assert listed["success"] is True and listed["count"] == 1
        assert [x["id"] for x in listed["schedules"]] == [sid]
        assert set(listed["schedules"][0]) >= {"id", "workflow_id", "cron_expression", "timezone", "enabled",
                                               "next_run_at", "last_run_at", "created_at"}

        r = await c.patch(f"/api/v2/workflows/{wid}/schedules/{sid}", json={"cron_expression": "0 9 * * 1,4",
                                                                            "enabled": True})
        assert r.status_code == 200, r.text
        patched = r.json()["schedule"]
        assert patched["cron_expression"] == "0 9 * * 1,4" and patched["updated_at"].endswith("Z")
        assert patched["next_run_at"] == _iso(next_after(parse("0 9 * * 1,4"), zone("America/New_York"), before))

        r = await c.patch(f"/api/v2/workflows/{wid}/schedules/{sid}", json={"enabled": False})
        assert r.json()["schedule"]["enabled"] is False and r.json()["schedule"]["next_run_at"] is None
        assert (await c.get(f"/api/v2/workflows/{wid}/schedules/{sid}")).json()["schedule"]["enabled"] is False

        r = await c.delete(f"/api/v2/workflows/{wid}/schedules/{sid}")
        assert r.status_code == 200 and r.json() == {"success": True, "message": "Schedule deleted successfully"}
        assert (await c.get(f"/api/v2/workflows/{wid}/schedules/{sid}")).status_code == 404
        assert (await c.get(f"/api/v2/workflows/{wid}/schedules")).json()["count"] == 0
        assert (await c.delete(f"/api/v2/workflows/{wid}/schedules/{sid}")).status_code == 404


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"cron_expression": "0 9 * *"}, "cron_expression", "5 fields"),
    ({"cron_expression": "0 24 * * *"}, "cron_expression", "hour field: 24 is out of range 0-23"),
    ({"cron_expression": "0 0 30 2 *"}, "cron_expression", "never matches"),
    ({"cron_expression": 9}, "cron_expression", "Expected `str`"),
    ({"cron_expression": "0 9 * * 1", "timezone": "Mars/Olympus"}, "timezone", "unknown IANA time zone"),
    ({"cron_expression": "0 9 * * 1", "timezone": "../../etc/passwd"}, "timezone", "IANA"),
    ({"cron_expression": "0 9 * * 1", "timezone": None}, "timezone", "Expected `str`"),
    ({"cron_expression": "0 9 * * 1", "missed_execution_policy": "whenever"}, "missed_execution_policy", "one of"),
    ({"cron_expression": "0 9 * * 1", "overlap_policy": "maybe"}, "overlap_policy", "one of"),
    ({"cron_expression": "0 9 * * 1", "max_queued": 0}, "max_queued", "between 1 and 100"),
    ({"cron_expression": "0 9 * * 1", "max_queued": True}, "max_queued", "Expected `int`"),
    ({"cron_expression": "0 9 * * 1", "inputs": {"date_range": 3}}, "inputs.date_range", "is not of type"),
    ({"cron_expression": "0 9 * * 1", "inputs": {}}, "inputs.date_range", "required"),
    ({"cron_expression": "0 9 * * 1", "when": "always"}, "when", "unknown field"),
    ({}, "cron_expression", "missing required field"),
])
async def test_bad_input_is_a_400_naming_the_field(stack, tenant, body, field, words):
    async with stack.client(tenant) as c:
        wid = await _workflow(c, WITH_INPUTS)
        r = await c.post(f"/api/v2/workflows/{wid}/schedules", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["success"] is False and r.json()["field"] == field and words in r.json()["error"], r.json()


async def test_patch_checks_the_same_rules_and_unknown_ids_are_404(stack, tenant):
    async with stack.client(tenant) as c, stack.client(f"{tenant}x") as other:
        wid = await _workflow(c)
        sid = (await c.post(f"/api/v2/workflows/{wid}/schedules", json={"cron_expression": "0 9 * * *"})).json()[
            "schedule"]["id"]
        url = f"/api/v2/workflows/{wid}/schedules/{sid}"
        for body, field in [({"cron_expression": "* * *"}, "cron_expression"), ({"timezone": "Nope/Nope"}, "timezone"),
                            ({"missed_execution_policy": "x"}, "missed_execution_policy"), ({"enabled": "yes"}, "enabled"),
                            ({"id": sid}, "id")]:
            r = await c.patch(url, json=body)
            assert r.status_code == 400 and r.json()["field"] == field, (body, r.text)
        unchanged = await c.patch(url, json={})
        assert unchanged.status_code == 200 and unchanged.json()["schedule"]["id"] == sid
        r = await c.post(f"/api/v2/workflows/{wid}/schedules", content=b"{not json",
                         headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        other_wid = await _workflow(c)
        assert (await c.get(f"/api/v2/workflows/{other_wid}/schedules/{sid}")).status_code == 404
        assert (await c.patch(f"/api/v2/workflows/{other_wid}/schedules/{sid}", json={"enabled": False})).status_code == 404
        assert (await c.get(f"/api/v2/workflows/{wid}/schedules/not-a-uuid")).status_code == 404
        assert (await c.post(f"/api/v2/workflows/{uuid.uuid4()}/schedules", json={"cron_expression": "0 9 * * *"})
                ).status_code == 404
        # Another tenant sees nothing, not even that the schedule exists.
        assert (await other.get(url)).status_code == 404
        assert (await other.get(f"/api/v2/workflows/{wid}/schedules")).status_code == 404


async def _occurrences(c: httpx.AsyncClient, wid: str, sid: str, **params) -> dict:
    r = await c.get(f"/api/v2/workflows/{wid}/schedules/{sid}/occurrences", params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_missed_occurrences_are_queued_and_run_one_after_another_with_their_history(stack, store, tenant):
    """A schedule whose last 4 minutes passed unhandled (created in the past, as a scheduler outage would
    leave it): the queue policy runs the latest 2 missed occurrences in order, each after the run before it
    ended, and the occurrences endpoint says what happened to every minute."""
    async with stack.client(tenant) as c:
        wid = await _workflow(c)
        sid = uuid.uuid4()
        now = datetime.now(UTC)
        await store.append(f"schedule-{sid}", 0, [ScheduleCreated(
            schedule_id=sid, workflow_id=uuid.UUID(wid), cron_expression="* * * * *", missed_execution_policy="queue",
            max_queued=2, created_by="alice", at=now - timedelta(minutes=4, seconds=30))],
            metadata=Metadata(tenant_id=tenant, actor="test"))

        async def fired():
            return [o for o in (await _occurrences(c, wid, str(sid)))["occurrences"] if o["status"] == "fired"]

        runs = await poll(fired, lambda f: len(f) >= 2 and all(o["run_status"] == "completed" for o in f), timeout=30)
        history = await _occurrences(c, wid, str(sid))
        missed = [o for o in history["occurrences"] if o["status"] == "missed"]
        assert len(missed) == 1 and missed[0]["policy"] == "queue" and missed[0]["detail"] == "2 queued"
        window = missed[0]["window"]
        assert window["count"] >= 3 and not window["more"]
        queued = sorted((o for o in runs if o["trigger"] == "queued"), key=lambda o: o["scheduled_for"])
        assert len(queued) == 2 and queued[1]["scheduled_for"] == window["last"]
        # In order, one after the other: the second started after the first finished.
        r1 = (await c.get(f"/api/v2/workflows/{wid}/runs/{queued[0]['run_id']}")).json()["run"]
        r2 = (await c.get(f"/api/v2/workflows/{wid}/runs/{queued[1]['run_id']}")).json()["run"]
        assert r1["finished_at"] <= r2["started_at"]
        # "Why didn't it run at <a missed minute>?" -- the window that covers it answers.
        first_missed = datetime.fromisoformat(window["first"].replace("Z", "+00:00"))
        why = await _occurrences(c, wid, str(sid), at=window["first"])
        assert [o["status"] for o in why["occurrences"]] == ["missed"]
        if first_missed < datetime.fromisoformat(queued[0]["scheduled_for"].replace("Z", "+00:00")):
            assert why["occurrences"][0]["policy"] == "queue"
        run_list = (await c.get(f"/api/v2/workflows/{wid}/runs")).json()
        assert {r["id"] for r in run_list["runs"]} >= {o["run_id"] for o in runs}
        schedule = (await c.get(f"/api/v2/workflows/{wid}/schedules/{sid}")).json()["schedule"]
        assert schedule["last_run_at"] is not None and schedule["next_run_at"] > _iso(now)
        for bad in ({"status": "lost"}, {"at": "yesterday"}, {"limit": "0"}):
            r = await c.get(f"/api/v2/workflows/{wid}/schedules/{sid}/occurrences", params=bad)
            assert r.status_code == 400 and r.json()["field"] == next(iter(bad))
        await c.delete(f"/api/v2/workflows/{wid}/schedules/{sid}")  # no runs every minute from here on


async def test_a_schedule_pauses_itself_after_consecutive_failed_runs(stack, store, tenant):
    failing = {"nodes": [{"id": "s", "type": "transform", "config": {"template": {"x": "${inputs.missing}"}}}]}
    async with stack.client(tenant) as c:
        wid = await _workflow(c, failing)
        sid = uuid.uuid4()
        await store.append(f"schedule-{sid}", 0, [ScheduleCreated(
            schedule_id=sid, workflow_id=uuid.UUID(wid), cron_expression="* * * * *", missed_execution_policy="queue",
            max_queued=3, pause_after_failures=2, created_by="alice", at=datetime.now(UTC) - timedelta(minutes=4))],
            metadata=Metadata(tenant_id=tenant, actor="test"))
        paused = await poll(lambda: c.get(f"/api/v2/workflows/{wid}/schedules/{sid}"),
                            lambda r: r.json()["schedule"]["enabled"] is False, timeout=30)
        schedule = paused.json()["schedule"]
        assert schedule["paused_reason"] == "paused after 2 consecutive failed runs"
        assert schedule["next_run_at"] is None and schedule["consecutive_failures"] == 2
        history = (await _occurrences(c, wid, str(sid)))["occurrences"]
        fired = [o for o in history if o["status"] == "fired"]
        assert [o["run_status"] for o in fired] == ["failed", "failed"]
        # The third queued occurrence did not run: it was dropped when the schedule paused, and says so.
        assert [(o["status"], o["reason"]) for o in history if o["status"] in ("skipped", "queued")][-1] == (
            "skipped", "disabled")
        resumed = await c.patch(f"/api/v2/workflows/{wid}/schedules/{sid}", json={"enabled": True})
        assert resumed.json()["schedule"]["enabled"] is True and resumed.json()["schedule"]["paused_reason"] is None
        await c.delete(f"/api/v2/workflows/{wid}/schedules/{sid}")  # no failing runs every minute from here on


async def test_run_immediately_after_a_gap_starts_one_catch_up_run(stack, store, pool, tenant):
    async with stack.client(tenant) as c:
        wid = await _workflow(c)
        sid = uuid.uuid4()
        await store.append(f"schedule-{sid}", 0, [ScheduleCreated(
            schedule_id=sid, workflow_id=uuid.UUID(wid), cron_expression="* * * * *", created_by="alice",
            at=datetime.now(UTC) - timedelta(minutes=6))], metadata=Metadata(tenant_id=tenant, actor="test"))
        history = await poll(lambda: _occurrences(c, wid, str(sid)),
                             lambda h: any(o["status"] == "fired" and o["run_status"] for o in h["occurrences"]),
                             timeout=30)
        await c.delete(f"/api/v2/workflows/{wid}/schedules/{sid}")
        missed = [o for o in history["occurrences"] if o["status"] == "missed"]
        assert [(o["policy"], o["window"]["count"] >= 4) for o in missed] == [("run_immediately", True)]
        through = missed[0]["window"]["through"]
        # One run for the whole window: the catch-up, for its last occurrence. (A later minute may fire on time.)
        in_window = [o for o in history["occurrences"] if o["status"] == "fired" and o["scheduled_for"] <= through]
        assert [(o["trigger"], o["scheduled_for"]) for o in in_window] == [("catch_up", missed[0]["window"]["last"])]
        runs = await pool.fetch("SELECT id FROM runs WHERE workflow_id = $1", uuid.UUID(wid))
        fired = {o["run_id"] for o in history["occurrences"] if o["status"] == "fired"}
        assert {str(r["id"]) for r in runs} >= fired and in_window[0]["run_id"] in {str(r["id"]) for r in runs}


async def test_a_delay_step_waits_on_a_durable_timer_fired_by_the_scheduler(stack, pool, tenant):
    definition = {"nodes": [{"id": "wait", "type": "delay", "config": {"seconds": 1.0}},
                            {"id": "after", "type": "echo", "input_from": "wait"}]}
    async with stack.client(tenant) as c:
        wid = await _workflow(c, definition)
        run = (await c.post(f"/api/v2/workflows/{wid}/execute", json={})).json()["run"]

        async def fetch():
            return (await c.get(f"/api/v2/workflows/{wid}/runs/{run['id']}")).json()["run"]

        done = await poll(fetch, lambda r: r["status"] in ("completed", "failed"), timeout=20)
    assert done["status"] == "completed"
    timers = await pool.fetch("SELECT status, command_type, due_at, fired_at FROM timers WHERE tenant_id = $1", tenant)
    assert [(t["status"], t["command_type"]) for t in timers] == [("fired", "EndDelay")]
    assert timers[0]["fired_at"] >= timers[0]["due_at"]
    rows = await pool.fetch("SELECT type, data::text AS data FROM events WHERE stream_id = $1 ORDER BY version",
                            f"run-{run['id']}")
    waited = [msgspec.json.decode(r["data"]) for r in rows if r["type"] == "StepCompleted"]
    assert waited[0]["step_id"] == "wait" and "waited_until" in waited[0]["output"]


async def test_a_console_schedule_starts_once_the_plan_is_approved(stack, store, tenant):
    async with stack.client(tenant) as c:
        r = await c.post("/api/workflows", json={"goal": "Summarise sales and email team@example.com",
                                                 "schedule": "0 9 * * 1"})
        assert r.status_code == 201, r.text
        wid = r.json()["workflowId"]
        assert r.json()["status"] == "draft"
        bad = await c.post("/api/workflows", json={"goal": "Summarise sales daily", "schedule": "0 99 * * *"})
        assert bad.status_code == 400 and bad.json()["field"] == "schedule"
        assert (await c.get(f"/api/v2/workflows/{wid}/schedules")).json()["count"] == 0  # a draft does not fire
        recorded = await store.read_stream(tenant, f"workflow-{wid}")
        plan = msgspec.json.decode(recorded[-1].data) if recorded else {}
        # What the planner appends when the emailed link is used (the approval flow is tests/test_approvals*).
        await store.append(f"workflow-{wid}", len(recorded), [PlanApproved(
            workflow_id=uuid.UUID(wid), plan_version=plan.get("plan_version", 1), plan_hash=plan.get("plan_hash", ""),
            approved_by="alice", at=datetime.now(UTC))], metadata=Metadata(tenant_id=tenant, actor="alice"))
        listed = await poll(lambda: c.get(f"/api/v2/workflows/{wid}/schedules"),
                            lambda resp: resp.json().get("count") == 1, timeout=15)
        schedule = listed.json()["schedules"][0]
        assert schedule["cron_expression"] == "0 9 * * 1" and schedule["timezone"] == "UTC"
        assert schedule["source"] == "console" and schedule["enabled"] is True
        # Deleting the workflow deletes its schedules.
        assert (await c.delete(f"/api/v2/workflows/{wid}")).status_code == 200
        await poll(lambda: store.read_stream(tenant, f"schedule-{schedule['id']}"),
                   lambda events: events[-1].type == "ScheduleDeleted", timeout=15)


async def test_an_assistant_workflow_active_at_once_gets_its_schedule(stack, tenant):
    async with stack.client(tenant) as c:
        r = await c.post("/api/workflow/execute", json={"command": "Every Monday at 9am record that the build passed"})
        assert r.status_code in (200, 201, 202), r.text
        body = r.json()
        wid = body.get("workflowId") or body.get("workflow_id") or body.get("workflow", {}).get("id")
        assert wid, body
        listed = await poll(lambda: c.get(f"/api/v2/workflows/{wid}/schedules"),
                            lambda resp: resp.json().get("count") == 1, timeout=15)
        assert listed.json()["schedules"][0]["cron_expression"] == "0 9 * * 1"
