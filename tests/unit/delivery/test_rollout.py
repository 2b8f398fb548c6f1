"""Wave membership and maintenance windows: pure, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.delivery.rollout import in_maintenance_window, site_bucket, wave_of
from reconciler.manifests.models import MaintenanceWindow, Rollout


def rollout(*percents: int) -> Rollout:
    return Rollout.model_validate({"waves": [{"name": f"w{i}", "percent": p} for i, p in enumerate(percents)]})


def test_waves_are_nested_when_percentages_rise():
    sites = [f"store-{i:04d}" for i in range(2000)]
    before = {s: wave_of(rollout(10, 50, 100), "forecast", s, {}).name for s in sites}
    after = {s: wave_of(rollout(20, 60, 100), "forecast", s, {}).name for s in sites}
    order = {"w0": 0, "w1": 1, "w2": 2}
    assert all(order[after[s]] <= order[before[s]] for s in sites)  # nobody moves backwards
    share = sum(1 for s in sites if before[s] == "w0") / len(sites)
    assert 0.07 < share < 0.13  # roughly the 10 % asked for


def test_membership_does_not_depend_on_other_sites():
    assert wave_of(rollout(10, 100), "d", "site-a", {}) == wave_of(rollout(10, 100), "d", "site-a", {"x": "y"})
    assert site_bucket("d", "site-a") == site_bucket("d", "site-a")
    assert 0 <= site_bucket("d", "site-a") < 100


def test_selector_wave_takes_precedence_in_order():
    plan = Rollout.model_validate({"waves": [
        {"name": "pilot", "selector": {"matchLabels": {"pilot": "true"}}},
        {"name": "rest", "percent": 100},
    ]})
    assert wave_of(plan, "d", "s", {"pilot": "true"}).name == "pilot"
    assert wave_of(plan, "d", "s", {}).name == "rest"


def test_site_outside_every_wave():
    plan = Rollout.model_validate({"waves": [{"name": "pilot", "selector": {"matchLabels": {"pilot": "true"}}}]})
    assert wave_of(plan, "d", "s", {}) is None


WINDOW = {"days": ["sat"], "start": "22:00", "end": "02:00", "timezone": "America/New_York"}


@pytest.mark.parametrize("windows,now,inside", [
    ([], datetime(2026, 1, 1, tzinfo=UTC), True),
    ([WINDOW], datetime(2026, 11, 22, 3, 30, tzinfo=UTC), True),  # Sat 22:30 in New York
    ([WINDOW], datetime(2026, 11, 22, 6, 30, tzinfo=UTC), True),  # Sun 01:30, window began Saturday
    ([WINDOW], datetime(2026, 11, 22, 7, 30, tzinfo=UTC), False),  # Sun 02:30
    ([WINDOW], datetime(2026, 11, 23, 3, 30, tzinfo=UTC), False),  # Sun 22:30: not a window day
    ([WINDOW], datetime(2026, 11, 21, 6, 30, tzinfo=UTC), False),  # Sat 01:30 belongs to Friday's window
    ([{"days": ["mon"], "start": "09:00", "end": "10:00"}], datetime(2026, 11, 23, 9, 0, tzinfo=UTC), True),
    ([{"days": ["mon"], "start": "09:00", "end": "10:00"}], datetime(2026, 11, 23, 10, 0, tzinfo=UTC), False),
])
def test_maintenance_windows(windows, now, inside):
    parsed = [MaintenanceWindow.model_validate(w) for w in windows]
    assert in_maintenance_window(parsed, now) is inside
