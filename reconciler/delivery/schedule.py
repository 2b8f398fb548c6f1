"""When a batch deployment runs: its cron schedule read in its IANA zone, ``now`` passed in.

cronsim (written for healthchecks.io) evaluates the expression because it follows Debian's cron,
that is Vixie cron, across DST changes, which is what a site's operators expect of a nightly job:
a time in the hour the clocks repeat runs once, a time in the hour they skip runs right after the
change, and jobs with a wildcard hour or minute (hourly, every 15 minutes) follow the wall clock.
croniter runs a 02:30 job twice in a repeated hour. Times go in and out as aware datetimes; the
zone only decides which instants the expression names."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim


def runs_after(schedule: str, time_zone: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` instants (UTC) the schedule names, strictly after ``after``."""
    if after.tzinfo is None:
        raise ValueError("runs_after needs an aware datetime: a naive one has no instant")
    slots = CronSim(schedule, after.astimezone(ZoneInfo(time_zone)).replace(microsecond=0))
    runs = []
    while len(runs) < count:
        slot = next(slots).astimezone(UTC)
        if slot > after:  # cronsim starts at the whole second at or before ``after``
            runs.append(slot)
    return runs


def next_run(schedule: str, time_zone: str, after: datetime) -> datetime:
    return runs_after(schedule, time_zone, after, 1)[0]


def due_run(schedule: str, time_zone: str, last: datetime, now: datetime) -> datetime | None:
    """The run to start now, if any: the first instant after ``last`` (the newest run already
    started or skipped) that is not in the future. After downtime that missed several runs this
    is the first of them, once: the next call passes the run's start as ``last``, so missed runs
    are caught up with one run, never replayed one by one."""
    slot = next_run(schedule, time_zone, last)
    return slot if slot <= now else None
