"""Batch schedules across DST changes, Vixie cron semantics: a fixed time in a repeated hour runs
once, a fixed time in a skipped hour runs right after the change, wildcard hours and minutes follow
the wall clock. Every case passes ``now``; nothing reads the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from reconciler.delivery.schedule import due_run, runs_after

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


def local(zone: str, *parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


def shown(zone: str, instants: list[datetime]) -> list[str]:
    """Local wall time with its UTC offset: a repeated hour's two halves read apart."""
    return [t.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M%z") for t in instants]


CASES = [
    # (zone, schedule, from local (y, m, d, h, min), how many, expected local runs)
    # spring forward, Berlin 2026-03-29 02:00 -> 03:00: the 02:30 run happens right after the change
    (BERLIN, "30 2 * * *", (2026, 3, 28, 12, 0), 3, ["03-29 03:00+0200", "03-30 02:30+0200", "03-31 02:30+0200"]),
    (BERLIN, "0 * * * *", (2026, 3, 29, 0, 30), 3, ["03-29 01:00+0100", "03-29 03:00+0200", "03-29 04:00+0200"]),
    (BERLIN, "*/15 * * * *", (2026, 3, 29, 1, 40), 4,
     ["03-29 01:45+0100", "03-29 03:00+0200", "03-29 03:15+0200", "03-29 03:30+0200"]),
    # fall back, Berlin 2026-10-25 03:00 -> 02:00: 02:30 once, in the first pass of the hour
    (BERLIN, "30 2 * * *", (2026, 10, 24, 12, 0), 3, ["10-25 02:30+0200", "10-26 02:30+0100", "10-27 02:30+0100"]),
    (BERLIN, "0 * * * *", (2026, 10, 25, 0, 30), 4,
     ["10-25 01:00+0200", "10-25 02:00+0200", "10-25 02:00+0100", "10-25 03:00+0100"]),
    (BERLIN, "*/15 * * * *", (2026, 10, 25, 2, 40), 3, ["10-25 02:45+0200", "10-25 02:00+0100", "10-25 02:15+0100"]),
    # spring forward, New York 2026-03-08 02:00 -> 03:00
    (NEW_YORK, "30 2 * * *", (2026, 3, 7, 12, 0), 2, ["03-08 03:00-0400", "03-09 02:30-0400"]),
    (NEW_YORK, "0 * * * *", (2026, 3, 8, 0, 30), 3, ["03-08 01:00-0500", "03-08 03:00-0400", "03-08 04:00-0400"]),
    (NEW_YORK, "*/15 * * * *", (2026, 3, 8, 1, 40), 2, ["03-08 01:45-0500", "03-08 03:00-0400"]),
    # fall back, New York 2026-11-01 02:00 -> 01:00: 01:30 once, 02:30 once, hourly in both halves
    (NEW_YORK, "30 1 * * *", (2026, 10, 31, 12, 0), 3, ["11-01 01:30-0400", "11-02 01:30-0500", "11-03 01:30-0500"]),
    (NEW_YORK, "30 2 * * *", (2026, 10, 31, 12, 0), 2, ["11-01 02:30-0500", "11-02 02:30-0500"]),
    (NEW_YORK, "0 * * * *", (2026, 11, 1, 0, 30), 4,
     ["11-01 01:00-0400", "11-01 01:00-0500", "11-01 02:00-0500", "11-01 03:00-0500"]),
    (NEW_YORK, "*/15 * * * *", (2026, 11, 1, 1, 40), 3, ["11-01 01:45-0400", "11-01 01:00-0500", "11-01 01:15-0500"]),
]


@pytest.mark.parametrize(("zone", "schedule", "start", "count", "expected"), CASES)
def test_runs_across_dst_changes(zone, schedule, start, count, expected):
    assert shown(zone, runs_after(schedule, zone, local(zone, *start), count)) == expected


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_a_repeated_hour_does_not_run_a_fixed_time_twice(zone):
    day = (2026, 10, 25) if zone == BERLIN else (2026, 11, 1)
    hour = 2 if zone == BERLIN else 1
    first_pass = local(zone, *day, hour, 45)
    second_pass = local(zone, *day, hour, 45, fold=1)
    assert second_pass - first_pass == timedelta(hours=1)
    ran = local(zone, *day, hour, 30)
    assert due_run(f"30 {hour} * * *", zone, ran, second_pass) is None


CATCH_UP = [
    # (last run or first seen, now, due)
    (datetime(2026, 6, 1, 0, 30, tzinfo=UTC), datetime(2026, 6, 1, 0, 59, tzinfo=UTC), None),
    (datetime(2026, 6, 1, 0, 30, tzinfo=UTC), datetime(2026, 6, 1, 1, 0, tzinfo=UTC),
     datetime(2026, 6, 1, 1, 0, tzinfo=UTC)),
    # down for three hours: one run, for the first missed time; the next call starts after ``now``
    (datetime(2026, 6, 1, 0, 30, tzinfo=UTC), datetime(2026, 6, 1, 3, 10, tzinfo=UTC),
     datetime(2026, 6, 1, 1, 0, tzinfo=UTC)),
    (datetime(2026, 6, 1, 3, 10, tzinfo=UTC), datetime(2026, 6, 1, 3, 20, tzinfo=UTC), None),
]


@pytest.mark.parametrize(("last", "now", "due"), CATCH_UP)
def test_due_runs_catch_up_once(last, now, due):
    assert due_run("0 * * * *", "UTC", last, now) == due


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="aware"):
        runs_after("* * * * *", BERLIN, datetime(2026, 1, 1), 1)
