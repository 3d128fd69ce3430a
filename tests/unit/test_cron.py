"""Cron expressions in IANA time zones (libs/domain/cron.py), against explicit instants: DST changes in both
directions, 29 February, day-of-month/day-of-week combinations, and a brute-force reference that walks
every UTC minute around real DST transitions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from libs.domain.cron import CronError, latest, next_after, occurrences, parse, zone

NY = zone("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold).astimezone(UTC)


def day_of(expression: str, tz, start: datetime, end: datetime) -> list[datetime]:
    return occurrences(parse(expression), tz, start, end)


# --- parsing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "message"), [
    ("", "5-field"),
    ("* * * *", "5 fields"),
    ("* * * * * *", "5 fields"),
    ("60 * * * *", "minute field: 60 is out of range 0-59"),
    ("* 24 * * *", "hour field: 24 is out of range 0-23"),
    ("* * 0 * *", "day of month field: 0 is out of range 1-31"),
    ("* * * 13 *", "month field: 13 is out of range 1-12"),
    ("* * * * 8", "day of week field: 8 is out of range 0-7"),
    ("*/0 * * * *", "step '0' must be a positive number"),
    ("5-1 * * * *", "range '5-1' runs backwards"),
    ("1,,2 * * * *", "empty list item"),
    ("* * L * *", "day of month field: 'L' is not a number"),
    ("* * * FOO *", "month field: 'FOO' is not a number or a name"),
    ("0 0 30 2 *", "never matches"),
    ("0 0 31 4,6,9,11 *", "never matches"),
])
def test_bad_expressions_name_the_field_and_rule(expression, message):
    with pytest.raises(CronError, match=message):
        parse(expression)


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "x" * 100, "America/"])
def test_unknown_or_path_like_time_zones_are_refused(name):
    with pytest.raises(CronError):
        zone(name)


def test_names_lists_ranges_steps_and_sunday_as_seven():
    c = parse("0,30 9-17/4 * jan,Jul sun-tue")
    assert c.minutes == (0, 30) and c.hours == (9, 13, 17)
    assert c.months == {1, 7} and c.weekdays == {0, 1, 2}
    assert parse("0 0 * * 7").weekdays == parse("0 0 * * 0").weekdays == {0}
    assert parse("5/20 * * * *").minutes == (5, 25, 45)


# --- plain sequences ----------------------------------------------------------------------------------------


def test_next_after_is_strictly_after():
    c = parse("0 9 * * *")
    assert next_after(c, zone("UTC"), utc(2024, 5, 1, 9)) == utc(2024, 5, 2, 9)
    assert next_after(c, zone("UTC"), utc(2024, 5, 1, 8, 59, 59, 999999)) == utc(2024, 5, 1, 9)


def test_monday_nine_in_new_york_is_utc_thirteen_or_fourteen():
    c = parse("0 9 * * 1")  # the contract's example: "every Monday at 9am"
    assert next_after(c, NY, utc(2026, 3, 19, 18, 15)) == utc(2026, 3, 23, 13)  # EDT
    assert next_after(c, NY, utc(2026, 1, 1)) == utc(2026, 1, 5, 14)  # EST


def test_29_february_runs_only_in_leap_years_even_across_2100():
    c = parse("0 12 29 2 *")
    assert next_after(c, zone("UTC"), utc(2024, 3, 1)) == utc(2028, 2, 29, 12)
    assert next_after(c, zone("UTC"), utc(2096, 3, 1)) == utc(2104, 2, 29, 12)  # 2100 is not a leap year
    assert next_after(parse("0 0 * 2 *"), zone("UTC"), utc(2023, 2, 28, 1)) == utc(2024, 2, 1)


def test_day_of_month_or_day_of_week_when_both_are_restricted():
    # "At 00:00 on the 13th and on every Friday" (cron's OR rule), in May 2024 (the 13th is a Monday).
    got = day_of("0 0 13 * 5", zone("UTC"), utc(2024, 5, 1), utc(2024, 5, 31, 23))
    assert [d.day for d in got] == [3, 10, 13, 17, 24, 31]


def test_a_star_in_either_day_field_means_both_must_match():
    # `*/2` starts with `*`: odd days AND Mondays (Vixie's DOM_STAR rule), May 2024.
    got = day_of("0 0 */2 * 1", zone("UTC"), utc(2024, 5, 1), utc(2024, 5, 31, 23))
    assert [d.day for d in got] == [13, 27]
    got = day_of("0 0 * * 1", zone("UTC"), utc(2024, 5, 1), utc(2024, 5, 31, 23))
    assert [d.day for d in got] == [6, 13, 20, 27]
    got = day_of("0 0 1,15 * *", zone("UTC"), utc(2024, 5, 1), utc(2024, 5, 31, 23))
    assert [d.day for d in got] == [15]  # (the 1st at 00:00 is not after the start)


# --- daylight saving in New York: 10 March 2024 (02:00 -> 03:00), 3 November 2024 (02:00 -> 01:00) ------------


def test_spring_forward_a_skipped_fixed_time_runs_once_at_the_end_of_the_gap():
    got = day_of("30 2 * * *", NY, utc(2024, 3, 9, 12), utc(2024, 3, 12, 12))
    assert got == [local(NY, 2024, 3, 10, 3, 0), local(NY, 2024, 3, 11, 2, 30), local(NY, 2024, 3, 12, 2, 30)]
    assert got[0] == utc(2024, 3, 10, 7)


def test_spring_forward_several_skipped_fixed_times_still_run_once():
    got = day_of("0,30 2 * * *", NY, utc(2024, 3, 10, 5), utc(2024, 3, 10, 12))
    assert got == [utc(2024, 3, 10, 7)]


def test_fall_back_a_repeated_fixed_time_runs_once_at_its_first_pass():
    got = day_of("30 1 * * *", NY, utc(2024, 11, 2, 12), utc(2024, 11, 4, 12))
    assert got == [local(NY, 2024, 11, 3, 1, 30, fold=0), local(NY, 2024, 11, 4, 1, 30)]
    assert got[0] == utc(2024, 11, 3, 5, 30)  # EDT; the second 01:30 (06:30Z) does not run


def test_hourly_jobs_follow_the_wall_clock_through_both_changes():
    spring = day_of("30 * * * *", NY, utc(2024, 3, 10, 5), utc(2024, 3, 10, 9))
    assert [d.astimezone(NY).hour for d in spring] == [0, 1, 3, 4]  # there is no 02:30 that day
    fall = day_of("30 * * * *", NY, utc(2024, 11, 3, 3), utc(2024, 11, 3, 8))
    assert [(d.astimezone(NY).hour, d.astimezone(NY).fold) for d in fall] == [
        (23, 0), (0, 0), (1, 0), (1, 1), (2, 0)]  # both real hours of 01:30 run
    assert [d - fall[0] for d in fall] == [timedelta(hours=h) for h in range(5)]  # one per real hour


def test_a_thirty_minute_dst_change_lord_howe():
    lh = zone("Australia/Lord_Howe")  # 6 October 2024: 02:00 -> 02:30
    got = day_of("15 2 * * *", lh, utc(2024, 10, 4, 12), utc(2024, 10, 6, 12))
    assert [d.astimezone(lh).strftime("%d %H:%M") for d in got] == ["05 02:15", "06 02:30"]


def test_next_after_from_inside_the_repeated_hour():
    c = parse("20 * * * *")
    first_pass_0110 = local(NY, 2024, 11, 3, 1, 10, fold=0)
    assert next_after(c, NY, first_pass_0110) == local(NY, 2024, 11, 3, 1, 20, fold=0)
    second_pass_0125 = local(NY, 2024, 11, 3, 1, 25, fold=1)
    assert next_after(c, NY, second_pass_0125) == local(NY, 2024, 11, 3, 2, 20)
    fixed = parse("20 1 * * *")
    assert next_after(fixed, NY, local(NY, 2024, 11, 3, 1, 25, fold=0)) == local(NY, 2024, 11, 4, 1, 20)


# --- latest: the last N occurrences of a window without walking all of it ----------------------------------


@pytest.mark.parametrize("expression", ["* * * * *", "*/7 * * * *", "0 9 * * 1", "30 2 * * *", "0 0 29 2 *"])
def test_latest_matches_walking_the_whole_window(expression):
    c = parse(expression)
    start, end = utc(2024, 1, 1), utc(2024, 3, 12)
    every = occurrences(c, NY, start, end, limit=10**6) if expression not in ("* * * * *", "*/7 * * * *") else \
        occurrences(c, NY, end - timedelta(hours=5), end, limit=10**6)
    lo = start if expression not in ("* * * * *", "*/7 * * * *") else end - timedelta(hours=5)
    for n in (1, 3, 10):
        assert latest(c, NY, lo, end, n) == every[-n:]


# --- the reference: every UTC minute around real transitions, judged by the rules stated in the module -------


def _fields_match(c, wall: datetime) -> bool:
    dom = wall.day in c.days
    dow = wall.isoweekday() % 7 in c.weekdays
    day = (dom and dow) if (c.dom_star or c.dow_star) else (dom or dow)
    return wall.minute in c.minutes and wall.hour in c.hours and wall.month in c.months and day


def reference(c, tz, start: datetime, end: datetime) -> list[datetime]:
    """Occurrences in (start, end] by brute force over UTC minutes (walked from 3 hours earlier, so a wall time
    repeated after `start` is known to have passed before it)."""
    found: set[datetime] = set()
    seen_walls: set[datetime] = set()
    t = start.replace(second=0, microsecond=0) - timedelta(hours=3)
    prev = (t - timedelta(minutes=1)).astimezone(tz)
    while t <= end:
        wall = t.astimezone(tz)
        naive = wall.replace(tzinfo=None)
        # A jump forward: wall times between prev+1min and this one were skipped.
        skipped = []
        expected = prev.replace(tzinfo=None) + timedelta(minutes=1)
        while expected < naive:
            skipped.append(expected)
            expected += timedelta(minutes=1)
        if not c.wall_clock and any(_fields_match(c, w) for w in skipped):
            found.add(t)  # a fixed job whose time was skipped runs once when the gap ends
        if _fields_match(c, naive):
            if c.wall_clock or naive not in seen_walls:
                found.add(t)
        seen_walls.add(naive)
        prev = wall
        t += timedelta(minutes=1)
    return sorted(f for f in found if f > start)


TRANSITIONS = [
    ("America/New_York", utc(2024, 3, 10, 4)), ("America/New_York", utc(2024, 11, 3, 3)),
    ("Europe/London", utc(2024, 3, 30, 22)), ("Europe/London", utc(2024, 10, 26, 22)),
    ("Australia/Lord_Howe", utc(2024, 10, 5, 12)), ("Australia/Lord_Howe", utc(2024, 4, 6, 12)),
    ("America/Santiago", utc(2024, 4, 6, 0)), ("Asia/Kolkata", utc(2024, 3, 10, 0)),
]
EXPRESSIONS = ["30 2 * * *", "0,30 1-3 * * *", "*/15 * * * *", "15 1 * * *", "0 * * * *", "* 2 * * *",
               "45 23,0,1 * * 0", "0 3 * * *", "5 2 3,10 * *", "*/20 1,2 * * *", "10 2 * * *"]


@pytest.mark.parametrize(("name", "around"), TRANSITIONS)
def test_matches_a_brute_force_walk_of_every_utc_minute(name, around):
    tz = zone(name)
    start, end = around - timedelta(hours=20), around + timedelta(hours=20)
    rng = random.Random(name)
    for expression in EXPRESSIONS:
        c = parse(expression)
        expected = reference(c, tz, start, end)
        assert occurrences(c, tz, start, end, limit=10**6) == expected, expression
        # From arbitrary instants too (inside gaps and repeated hours), one step at a time.
        for _ in range(20):
            t = start + timedelta(seconds=rng.randrange(int((end - start).total_seconds()) - 7200))
            following = [x for x in expected if x > t]
            if following:
                assert next_after(c, tz, t) == following[0], (expression, t)
