"""The schedule decider, pure (no I/O): given schedule events and the workflow's facts, when a command or a
tick at a controlled `now`, then events or an error. Missed-execution and overlap policies, auto-pause, the
occurrence ledger, and properties over random tick sequences (never miss, never fire twice)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from functools import reduce

import pytest

from libs.domain import cron
from libs.events.errors import DomainError
from libs.domain.schedule_state import evolve, initial, next_run_at
from libs.events.schemas.schedule import (
    CreateSchedule,
    OccurrenceDeferred,
    OccurrenceFired,
    OccurrencesMissed,
    OccurrenceSkipped,
    OccurrencesSkipped,
    ScheduleCreated,
    ScheduledRunFinished,
    ScheduleDeleted,
    SchedulePaused,
    ScheduleUpdated,
    UpdateSchedule,
)
from services.scheduler.domain import WorkflowFacts, decide, run_id_for, tick

SID, WID = uuid.uuid4(), uuid.uuid4()
GRACE = timedelta(seconds=60)
IDLE = WorkflowFacts(exists=True, status="active")
UNLIMITED = WorkflowFacts(exists=True, status="active", unlimited=True)


def t(h: int, m: int = 0, s: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 6, day, h, m, s, tzinfo=UTC)


def created(at: datetime, expression: str = "0 * * * *", **settings) -> ScheduleCreated:
    return ScheduleCreated(schedule_id=SID, workflow_id=WID, cron_expression=expression, created_by="alice", at=at,
                           **settings)


def given(*events):
    return reduce(evolve, events, initial)


def fired(at: datetime, now: datetime, trigger: str = "on_time") -> OccurrenceFired:
    return OccurrenceFired(schedule_id=SID, occurrence_at=at, run_id=run_id_for(SID, at), trigger=trigger, at=now)


def kinds(events) -> list[tuple]:
    out = []
    for e in events:
        match e:
            case OccurrenceFired():
                out.append(("fired", e.occurrence_at.strftime("%H:%M"), e.trigger))
            case OccurrenceSkipped():
                out.append(("skipped", e.occurrence_at.strftime("%H:%M"), e.reason))
            case OccurrenceDeferred():
                out.append(("deferred", e.occurrence_at.strftime("%H:%M"), e.reason))
            case OccurrencesMissed():
                out.append(("missed", e.first_at.strftime("%H:%M"), e.last_at.strftime("%H:%M"), e.policy, e.queued))
            case _:
                out.append((type(e).__name__,))
    return out


def running(*occurrences: datetime, status: str = "running") -> WorkflowFacts:
    return WorkflowFacts(exists=True, status="active", run_statuses={run_id_for(SID, o): status for o in occurrences})


# --- on time ---------------------------------------------------------------------------------------------


def test_an_occurrence_due_now_fires_once_with_a_run_id_derived_from_it():
    state = given(created(t(8, 59, 30)))
    assert tick(state, t(8, 59, 59), IDLE, GRACE) == []
    events = tick(state, t(9, 0, 1), IDLE, GRACE)
    assert events == [fired(t(9), t(9, 0, 1))]
    after = given(created(t(8, 59, 30)), *events)
    assert tick(after, t(9, 0, 2), IDLE, GRACE) == []  # handled: the same moment never fires again
    assert next_run_at(after) == t(10)
    assert run_id_for(SID, t(9)) == run_id_for(SID, t(9)) != run_id_for(SID, t(10))
    assert run_id_for(SID, t(9)) != run_id_for(uuid.uuid4(), t(9))


def test_late_but_within_the_grace_window_is_on_time():
    state = given(created(t(8, 30)))
    assert kinds(tick(state, t(9, 0, 59), IDLE, GRACE)) == [("fired", "09:00", "on_time")]


# --- missed occurrences (the scheduler was down from 06:30 to 09:00:30) ----------------------------------


def test_run_immediately_fires_one_catch_up_run_for_the_whole_gap():
    state = given(created(t(6, 30), missed_execution_policy="run_immediately"))
    events = tick(state, t(9, 0, 30), IDLE, GRACE)
    assert kinds(events) == [("missed", "07:00", "08:00", "run_immediately", 0), ("fired", "08:00", "catch_up"),
                             ("skipped", "09:00", "overlap")]  # the catch-up run is still active at 09:00
    window = events[0]
    assert window.after == t(6, 30) and window.through == t(8, 59, 30)
    assert kinds(tick(state, t(9, 0, 30), UNLIMITED, GRACE))[-1] == ("skipped", "09:00", "overlap")
    allow = given(created(t(6, 30), overlap_policy="allow"))
    assert kinds(tick(allow, t(9, 0, 30), UNLIMITED, GRACE))[-1] == ("fired", "09:00", "on_time")


def test_skip_fires_nothing_for_the_gap():
    state = given(created(t(6, 30), missed_execution_policy="skip"))
    assert kinds(tick(state, t(9, 0, 30), IDLE, GRACE)) == [("missed", "07:00", "08:00", "skip", 0),
                                                             ("fired", "09:00", "on_time")]


def test_queue_fires_the_latest_missed_occurrences_in_order_one_after_another():
    state = given(created(t(1, 30), "0 * * * *", missed_execution_policy="queue", max_queued=3))
    events = tick(state, t(9, 0, 30), IDLE, GRACE)
    assert kinds(events) == [("missed", "02:00", "08:00", "queue", 3), ("fired", "06:00", "queued"),
                             ("deferred", "07:00", "queue"), ("deferred", "08:00", "queue"),
                             ("skipped", "09:00", "overlap")]
    state = reduce(evolve, events, state)
    assert tick(state, t(9, 5), running(t(6)), GRACE) == []  # 06:00's run is still going
    events = tick(state, t(9, 10), running(t(6), status="completed"), GRACE)
    assert kinds(events) == [("ScheduledRunFinished",), ("fired", "07:00", "queued")]
    state = reduce(evolve, events, state)
    events = tick(state, t(9, 20), running(t(7), status="failed"), GRACE)
    assert kinds(events) == [("ScheduledRunFinished",), ("fired", "08:00", "queued")]
    state = reduce(evolve, events, state)
    assert state.waiting == ()


def test_queue_with_overlapping_runs_allowed_fires_them_all_at_once_in_order():
    state = given(created(t(4, 30), missed_execution_policy="queue", max_queued=10, overlap_policy="allow"))
    assert kinds(tick(state, t(9, 0, 30), UNLIMITED, GRACE)) == [
        ("missed", "05:00", "08:00", "queue", 4), ("fired", "05:00", "queued"), ("fired", "06:00", "queued"),
        ("fired", "07:00", "queued"), ("fired", "08:00", "queued"), ("fired", "09:00", "on_time")]


# --- overlap ----------------------------------------------------------------------------------------------


def test_overlap_skip_records_why():
    state = given(created(t(8, 30)), fired(t(9), t(9)))
    events = tick(state, t(10, 0, 1), running(t(9)), GRACE)
    assert kinds(events) == [("skipped", "10:00", "overlap")]
    assert events[0].detail == "the previous run is still active"


def test_a_run_started_elsewhere_counts_as_overlap():
    state = given(created(t(8, 30)))
    manual = WorkflowFacts(exists=True, status="active", other_active=1)
    assert kinds(tick(state, t(9, 0, 1), manual, GRACE)) == [("skipped", "09:00", "overlap")]


def test_buffer_one_keeps_one_occurrence_and_fires_it_when_the_run_ends():
    state = given(created(t(8, 30), "*/10 * * * *", overlap_policy="buffer_one"), fired(t(8, 40), t(8, 40)))
    events = tick(state, t(8, 50, 1), running(t(8, 40)), GRACE)
    assert kinds(events) == [("deferred", "08:50", "overlap")]
    state = reduce(evolve, events, state)
    events = tick(state, t(9, 0, 1), running(t(8, 40)), GRACE)
    assert kinds(events) == [("skipped", "09:00", "overlap")]
    state = reduce(evolve, events, state)
    events = tick(state, t(9, 3), running(t(8, 40), status="completed"), GRACE)
    assert kinds(events) == [("ScheduledRunFinished",), ("fired", "08:50", "buffered")]


def test_allow_needs_a_workflow_that_allows_concurrent_runs():
    state = given(created(t(8, 30), overlap_policy="allow"), fired(t(9), t(9)))
    events = tick(state, t(10, 0, 1), running(t(9)), GRACE)
    assert kinds(events) == [("skipped", "10:00", "overlap")] and "concurrency" in events[0].detail
    unlimited = WorkflowFacts(exists=True, status="active", unlimited=True, run_statuses={run_id_for(SID, t(9)): "running"})
    assert kinds(tick(state, t(10, 0, 1), unlimited, GRACE)) == [("fired", "10:00", "on_time")]


def test_a_fired_run_that_never_appeared_stops_blocking_after_the_grace_window():
    state = given(created(t(8, 30)), fired(t(9), t(9)))
    refused = WorkflowFacts(exists=True, status="active")  # the runs table has no such run
    assert tick(state, t(9, 0, 30), refused, GRACE) == []
    events = tick(state, t(10, 0, 1), refused, GRACE)
    assert kinds(events) == [("ScheduledRunFinished",), ("fired", "10:00", "on_time")]
    assert events[0].status == "not_started"


# --- auto-pause, disabled, workflow state ------------------------------------------------------------------


def test_pauses_after_n_consecutive_failed_runs_and_a_success_resets_the_count():
    state = given(created(t(0, 30), pause_after_failures=2), fired(t(1), t(1)))
    state = reduce(evolve, tick(state, t(1, 30), running(t(1), status="failed"), GRACE), state)
    assert state.failures == 1 and state.enabled
    state = reduce(evolve, [fired(t(2), t(2))], state)
    state = reduce(evolve, tick(state, t(2, 30), running(t(2), status="completed"), GRACE), state)
    assert state.failures == 0
    for hour in (3, 4):
        state = reduce(evolve, [fired(t(hour), t(hour))], state)
        events = tick(state, t(hour, 30), running(t(hour), status="failed"), GRACE)
        state = reduce(evolve, events, state)
    assert isinstance(events[-1], SchedulePaused) and events[-1].reason == "paused after 2 consecutive failed runs"
    assert not state.enabled and next_run_at(state) is None
    assert tick(state, t(5, 0, 1), IDLE, GRACE) == []


def test_resuming_records_the_occurrences_skipped_while_off_and_does_not_count_them_as_missed():
    state = given(created(t(0, 30)), fired(t(1), t(1)),
                  ScheduledRunFinished(schedule_id=SID, run_id=run_id_for(SID, t(1)), status="completed", at=t(1, 5)),
                  ScheduleUpdated(schedule_id=SID, enabled=False, at=t(1, 30)))
    assert tick(state, t(4, 0, 1), IDLE, GRACE) == []
    events = decide(UpdateSchedule(schedule_id=SID, workflow_id=WID, enabled=True, at=t(4, 10)), state)
    assert [type(e) for e in events] == [OccurrencesSkipped, ScheduleUpdated]
    assert (events[0].first_at, events[0].last_at, events[0].reason) == (t(2), t(4), "disabled")
    state = reduce(evolve, events, state)
    assert kinds(tick(state, t(5, 0, 1), IDLE, GRACE)) == [("fired", "05:00", "on_time")]


def test_disabling_drops_waiting_occurrences_with_the_reason():
    state = given(created(t(8, 30), "*/10 * * * *", overlap_policy="buffer_one"), fired(t(8, 40), t(8, 40)),
                  OccurrenceDeferred(schedule_id=SID, occurrence_at=t(8, 50), reason="overlap", at=t(8, 50)))
    events = decide(UpdateSchedule(schedule_id=SID, workflow_id=WID, enabled=False, at=t(8, 55)), state)
    assert kinds(events) == [("skipped", "08:50", "disabled"), ("ScheduleUpdated",)]


def test_an_inactive_workflow_or_inputs_that_no_longer_fit_skip_with_the_reason():
    state = given(created(t(8, 30)))
    archived = WorkflowFacts(exists=True, status="archived")
    events = tick(state, t(9, 0, 1), archived, GRACE)
    assert kinds(events) == [("skipped", "09:00", "workflow_inactive")] and "archived" in events[0].detail
    bad = WorkflowFacts(exists=True, status="active", inputs_error="inputs.name is required")
    assert tick(state, t(9, 0, 1), bad, GRACE)[0].detail == "inputs.name is required"
    assert [type(e) for e in tick(state, t(9, 0, 1), WorkflowFacts(exists=False), GRACE)] == [ScheduleDeleted]


# --- commands ---------------------------------------------------------------------------------------------


def _create(**overrides) -> CreateSchedule:
    values = {"schedule_id": SID, "workflow_id": WID, "cron_expression": "0 9 * * 1", "created_by": "alice",
              "at": t(8)} | overrides
    return CreateSchedule(**values)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"cron_expression": "0 9 * *"}, "cron_expression"), ({"cron_expression": "0 25 * * *"}, "cron_expression"),
    ({"timezone": "Moon/Base"}, "timezone"), ({"missed_execution_policy": "sometimes"}, "missed_execution_policy"),
    ({"overlap_policy": "queue"}, "overlap_policy"), ({"max_queued": 0}, "max_queued"),
    ({"pause_after_failures": -1}, "pause_after_failures"),
])
def test_bad_settings_are_refused_naming_the_field(overrides, field):
    with pytest.raises(DomainError) as refused:
        decide(_create(**overrides), initial)
    assert refused.value.status == 400 and refused.value.field == field


def test_create_twice_is_a_conflict_and_another_workflows_schedule_is_not_found():
    state = given(*decide(_create(), initial))
    with pytest.raises(DomainError) as dup:
        decide(_create(), state)
    assert dup.value.status == 409
    with pytest.raises(DomainError) as other:
        decide(UpdateSchedule(schedule_id=SID, workflow_id=uuid.uuid4(), enabled=False, at=t(9)), state)
    assert other.value.status == 404


# --- properties -------------------------------------------------------------------------------------------


def _ledger(events) -> tuple[list[datetime], list[datetime], list[tuple[datetime, datetime]]]:
    """(fired occurrences, skipped/deferred occurrences, missed/skipped windows) of an event history."""
    fired_at, other, windows = [], [], []
    for e in events:
        match e:
            case OccurrenceFired():
                fired_at.append(e.occurrence_at)
            case OccurrenceSkipped() | OccurrenceDeferred():
                other.append(e.occurrence_at)
            case OccurrencesMissed() | OccurrencesSkipped():
                windows.append((e.after, e.through))
    return fired_at, other, windows


@pytest.mark.parametrize("seed", range(8))
def test_random_tick_sequences_never_miss_and_never_fire_an_occurrence_twice(seed):
    rng = random.Random(seed)
    expression = rng.choice(["*/5 * * * *", "0 * * * *", "30 2 * * *", "*/7 1-3 * * *", "15 1 * * 0"])
    zone_name = rng.choice(["UTC", "America/New_York", "Europe/London"])
    policy = rng.choice(["run_immediately", "skip", "queue"])
    start = datetime(2024, 11, 1, tzinfo=UTC) if seed % 2 else datetime(2024, 3, 8, tzinfo=UTC)  # DST changes ahead
    history = [created(start, expression, timezone=zone_name, missed_execution_policy=policy, overlap_policy="allow")]
    state, now = given(*history), start
    for _ in range(300):
        now += timedelta(seconds=rng.choice([20, 45, 70, 300, 3600, 3 * 3600]))  # some gaps longer than grace
        events = tick(state, now, UNLIMITED, GRACE)
        history += events
        state = reduce(evolve, events, state)
        nxt = next_run_at(state)
        assert nxt is None or nxt > now, "a tick must leave nothing due behind it"
    fired_at, other, windows = _ledger(history)
    assert len(fired_at) == len(set(fired_at)), "an occurrence fired twice"
    c, tz = cron.parse(expression), cron.zone(zone_name)
    singles = set(fired_at) | set(other)
    for occurrence in cron.occurrences(c, tz, start, now, limit=10**6):
        accounted = occurrence in singles or any(a < occurrence <= b for a, b in windows)
        assert accounted, f"{occurrence} vanished without an event"


def test_a_2_30_job_in_new_york_fires_once_on_each_dst_change_day_ticked_every_ten_minutes():
    for start in (datetime(2024, 3, 9, 12, tzinfo=UTC), datetime(2024, 11, 2, 12, tzinfo=UTC)):
        expression = "30 2 * * *" if start.month == 3 else "30 1 * * *"
        state = given(created(start, expression, timezone="America/New_York"))
        fired_at = []
        now = start
        while now < start + timedelta(days=2):
            now += timedelta(minutes=10)
            events = tick(state, now, IDLE, GRACE)
            state = reduce(evolve, events, state)
            state = reduce(evolve, [ScheduledRunFinished(schedule_id=SID, run_id=e.run_id, status="completed", at=now)
                                    for e in events if isinstance(e, OccurrenceFired)], state)
            fired_at += [e.occurrence_at for e in events if isinstance(e, OccurrenceFired)]
        ny = cron.zone("America/New_York")
        assert [f.astimezone(ny).strftime("%m-%d %H:%M") for f in fired_at] == (
            ["03-10 03:00", "03-11 02:30"] if start.month == 3 else ["11-03 01:30", "11-04 01:30"])
