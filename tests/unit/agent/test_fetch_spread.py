"""A commit's fetch wave spread by jitter: a site that learns of a new commit waits a random share
of the fetch spread before fetching it (injected random and pause, no sleeping); the default
spread grows with the fleet and stays within half the interval."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from reconciler.agent.loop import fetch_spread
from reconciler.devtools.fakes import fake_site, fleet_files
from reconciler.settings import SiteConfig

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class Pauses:
    def __init__(self, stopped: bool = False) -> None:
        self.taken: list[float] = []
        self.stopped = stopped

    def __call__(self, seconds: float) -> bool:
        self.taken.append(seconds)
        return self.stopped


def spread_site(tmp_path, pauses: Pauses, **settings):
    site = fake_site(tmp_path / "state", lambda: T0, **settings)
    site.agent.rng, site.agent.pause = random.Random(7), pauses
    site.source.commit(fleet_files("1.0.0"))
    site.agent.start()
    return site


def test_a_new_commit_is_fetched_after_a_random_share_of_the_spread(tmp_path):
    pauses = Pauses()
    site = spread_site(tmp_path, pauses, fetch_spread="40s")
    site.agent.reconcile_once()
    assert pauses.taken == []  # the head found at start: nothing to spread against
    site.source.commit(fleet_files("1.1.0"))
    moved = site.agent.reconcile_once()
    assert pauses.taken == [random.Random(7).uniform(0, 40)]
    assert moved.record.deployments["d"].activeVersion == "1.1.0"
    site.agent.reconcile_once()  # the same head again: no second pause
    assert len(pauses.taken) == 1
    site.agent.stop()


def test_a_stop_during_the_pause_fetches_nothing_and_says_nothing(tmp_path):
    pauses = Pauses(stopped=True)
    site = spread_site(tmp_path, pauses, fetch_spread="40s")
    site.agent.reconcile_once()
    published = len(site.status.published)
    site.source.commit(fleet_files("1.1.0"))
    result = site.agent.reconcile_once()
    assert result.noop and len(site.status.published) == published
    assert site.runtime.active == {"d": "1.0.0"}
    site.agent.stop()


def test_no_spread_no_pause(tmp_path):
    pauses = Pauses()
    site = spread_site(tmp_path, pauses, fetch_spread="0s")
    site.agent.reconcile_once()
    site.source.commit(fleet_files("1.1.0"))
    assert site.agent.reconcile_once().record.deployments["d"].activeVersion == "1.1.0"
    assert pauses.taken == []
    site.agent.stop()


@pytest.mark.parametrize("settings,fleet_size,seconds", [
    ({}, 0, 0.0),  # nothing loaded yet
    ({}, 100, 2.0),  # 100 sites at 50 fetches/s
    ({"interval": "30s"}, 1000, 15.0),  # at most half the interval
    ({"interval": "10m"}, 10_000, 200.0),
    ({"fetch_spread": "5s"}, 10_000, 5.0),  # site.yaml's own
])
def test_the_default_spread_grows_with_the_fleet_within_half_the_interval(settings, fleet_size, seconds):
    config = SiteConfig(site="s1", repo="memory", state="/tmp/unused", **settings)
    assert fetch_spread(config, fleet_size) == pytest.approx(seconds)
