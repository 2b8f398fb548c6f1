"""PURE: where a site stands in a deployment's rollout. Wave membership is computed by every site
for itself from names alone (no controller), and maintenance windows from ``now``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from reconciler.flags.murmur import bucket
from reconciler.manifests.models import MaintenanceWindow, Rollout, Wave
from reconciler.manifests.selectors import matches

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def site_bucket(deployment: str, site: str) -> int:
    """0..99, stable for a (deployment, site) pair: flagd's fractional bucketing over 100."""
    return bucket(deployment + site, 100)


def wave_of(rollout: Rollout, deployment: str, site: str, labels: Mapping[str, str]) -> Wave | None:
    """The first wave that holds the site. Percentages are cumulative, so raising one or adding
    sites never moves a site to a later wave."""
    index = wave_index(rollout, deployment, site, labels)
    return None if index is None else rollout.waves[index]


def wave_index(rollout: Rollout, deployment: str, site: str, labels: Mapping[str, str]) -> int | None:
    """The position of the site's wave in ``rollout.waves``: earlier waves go first."""
    position = site_bucket(deployment, site)
    for index, wave in enumerate(rollout.waves):
        if wave.selector is not None and matches(wave.selector, labels):
            return index
        if wave.percent is not None and position < wave.percent:
            return index
    return None


def wave_groups(rollout: Rollout, deployment: str, sites: Mapping[str, Mapping[str, str]]) -> list[list[str]]:
    """The ``sites`` of each of the rollout's waves, in wave order, then those of no wave."""
    groups: list[list[str]] = [[] for _ in range(len(rollout.waves) + 1)]
    for site, labels in sites.items():
        index = wave_index(rollout, deployment, site, labels)
        groups[len(rollout.waves) if index is None else index].append(site)
    return groups


def in_maintenance_window(windows: Sequence[MaintenanceWindow], now: datetime) -> bool:
    """No windows means activation may happen at any time."""
    return not windows or any(_inside(window, now) for window in windows)


def _inside(window: MaintenanceWindow, now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(window.timezone))
    # A window that crosses midnight belongs to the day it starts, so look at yesterday's too.
    for day_offset in (0, -1):
        day = local.date() + timedelta(days=day_offset)
        if WEEKDAYS[day.weekday()] not in window.days:
            continue
        start = datetime.combine(day, window.start, local.tzinfo)
        end = datetime.combine(day, window.end, local.tzinfo)
        if end <= start:
            end += timedelta(days=1)
        if start <= local < end:
            return True
    return False
