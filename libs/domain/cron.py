"""Five-field cron expressions evaluated in an IANA time zone, with cron's rules for DST changes.

Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC), day of week (0-7 or
SUN-SAT, 0 and 7 are Sunday); items `*`, `n`, `a-b`, `*/s`, `a-b/s`, `a/s`, joined by commas.

As cron defines them:
- Day of month and day of week: when both fields are restricted (neither starts with `*`) a day matches if
  EITHER matches ("1 * 1" = the 1st and every Monday); when either starts with `*`, BOTH must match.
- Daylight saving (Vixie/Debian cron): a job at a particular time (neither minute nor hour starts with `*`)
  whose local time is skipped by a spring-forward change runs once, at the first valid instant after the
  gap (02:30 on the change day runs at 03:00); one whose local time repeats on a fall-back day runs once,
  at the first pass. Jobs with `*` in the minute or hour follow the wall clock: a skipped time does not
  run, a repeated time runs in both passes (an hourly job still runs every real hour).

Every instant returned is an aware UTC datetime; `next_after` is strictly after its argument.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_NAMES = {
    3: {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m},
    4: {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))},
}
# The longest a valid expression can go without an occurrence: 29 February skips at most 8 years (2096-2104).
HORIZON = timedelta(days=9 * 366)
_MINUTE = timedelta(minutes=1)


class CronError(ValueError):
    """An expression or time zone that cannot be used; the message names the field and the rule."""


class Cron(msgspec.Struct, frozen=True):
    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_star: bool  # the day-of-month field starts with `*`
    dow_star: bool
    wall_clock: bool  # `*` in the minute or hour: follows the wall clock through DST changes


def _value(text: str, index: int) -> int:
    name, low, high = FIELDS[index]
    upper = text.upper()
    if index in _NAMES and upper in _NAMES[index]:
        return _NAMES[index][upper]
    if not text.isdigit():
        raise CronError(f"{name} field: {text!r} is not a number" + (" or a name" if index in _NAMES else ""))
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{name} field: {value} is out of range {low}-{high}")
    return value


def _field(text: str, index: int) -> set[int]:
    name, low, high = FIELDS[index]
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"{name} field: empty list item in {text!r}")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"{name} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, index), _value(last, index)
            if start > end:
                raise CronError(f"{name} field: range {base!r} runs backwards")
        else:
            start = _value(base, index)
            end = high if slash else start  # `a/s` means a, a+s, ... up to the field's maximum
        values.update(range(start, end + 1, step))
    return values


@functools.lru_cache(maxsize=4096)
def parse(expression: str) -> Cron:
    """Parse and check an expression; raises CronError naming the field, or if it can never fire."""
    if not isinstance(expression, str) or not expression.strip():
        raise CronError("must be a 5-field cron expression, e.g. \"0 9 * * 1\"")
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(f"must have 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    sets = [_field(p, i) for i, p in enumerate(parts)]
    weekdays = frozenset(d % 7 for d in sets[4])
    cron = Cron(
        expression=" ".join(parts), minutes=tuple(sorted(sets[0])), hours=tuple(sorted(sets[1])),
        days=frozenset(sets[2]), months=frozenset(sets[3]), weekdays=weekdays,
        dom_star=parts[2].startswith("*"), dow_star=parts[4].startswith("*"),
        wall_clock=parts[0].startswith("*") or parts[1].startswith("*"),
    )
    if next(_walls(cron, datetime(2000, 1, 1)), None) is None:
        raise CronError("never matches a date (e.g. 30 February)")
    return cron


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA zone, or CronError (unknown names, and keys that are paths, are refused by zoneinfo)."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise CronError("must be an IANA time zone name, e.g. \"America/New_York\"")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"unknown IANA time zone {name!r}, e.g. \"America/New_York\"") from None


def _day_matches(cron: Cron, day: date) -> bool:
    dom = day.day in cron.days
    dow = day.isoweekday() % 7 in cron.weekdays
    # Vixie cron: restricted in both fields = either matches; a `*` in either = both must match.
    return (dom and dow) if (cron.dom_star or cron.dow_star) else (dom or dow)


def _walls(cron: Cron, start: datetime) -> Iterator[datetime]:
    """Matching local wall times (naive, whole minutes) from `start` on, in order, up to the horizon."""
    day, end = start.date(), start.date() + HORIZON
    first = True
    while day <= end:
        if day.month not in cron.months:
            day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
            first = False
            continue
        if _day_matches(cron, day):
            for hour in cron.hours:
                if first and hour < start.hour:
                    continue
                for minute in cron.minutes:
                    if first and hour == start.hour and minute < start.minute:
                        continue
                    yield datetime(day.year, day.month, day.day, hour, minute)
        day += timedelta(days=1)
        first = False


def _instants(wall: datetime, tz: ZoneInfo) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(first, second, gap_end) for a local wall time: a normal time has only `first`; a repeated one (fall
    back) `first` and `second`; a skipped one (spring forward) only `gap_end`, the instant the gap ends."""
    early = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    late = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if early.astimezone(tz).replace(tzinfo=None) == wall:
        return early, (late if late != early else None), None
    # Skipped: zoneinfo maps it with the offset before (fold=0, later instant) or after (fold=1, earlier
    # instant) the change; the change itself lies between. Find it (changes fall on whole minutes).
    lo, hi = late, early  # offset before the change at lo, after it at hi
    before = lo.astimezone(tz).utcoffset()
    while hi - lo > _MINUTE:
        mid = lo + ((hi - lo) // 2 // _MINUTE) * _MINUTE
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return None, None, hi


def next_after(cron: Cron, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after` (aware), or None if there is none within the horizon."""
    local = after.astimezone(tz)
    start = local.replace(tzinfo=None, second=0, microsecond=0)
    first, second, _ = _instants(start, tz)
    if second is not None and local.fold == 0:
        start -= second - first  # in the first pass of a repeated hour: its second pass is still ahead
    best: datetime | None = None
    for wall in _walls(cron, start):
        first, second, gap_end = _instants(wall, tz)
        # The earliest instant at or after this wall time; it never decreases as the wall time grows, so
        # once it reaches `best` no later wall time can do better.
        floor = first if first is not None else gap_end
        if best is not None and floor >= best:
            break
        if cron.wall_clock:
            candidates = (first, second)
        else:
            candidates = (first if first is not None else gap_end,)
        for instant in candidates:
            if instant is not None and instant > after and (best is None or instant < best):
                best = instant
    return best


def occurrences(cron: Cron, tz: ZoneInfo, after: datetime, through: datetime, limit: int = 1000) -> list[datetime]:
    """Occurrences in (after, through], in order, at most `limit`."""
    found: list[datetime] = []
    current = after
    while len(found) < limit:
        nxt = next_after(cron, tz, current)
        if nxt is None or nxt > through:
            break
        found.append(nxt)
        current = nxt
    return found


def latest(cron: Cron, tz: ZoneInfo, after: datetime, through: datetime, count: int = 1) -> list[datetime]:
    """The last `count` occurrences in (after, through], in order, without walking the whole window: look back
    from `through` over a window that doubles until it holds enough (or reaches `after`)."""
    window = timedelta(minutes=2)
    while True:
        start = max(after, through - window)
        found = occurrences(cron, tz, start, through, limit=10**9)
        if len(found) >= count or start == after:
            return found[-count:]
        window *= 2


__all__ = ["Cron", "CronError", "latest", "next_after", "occurrences", "parse", "zone"]
