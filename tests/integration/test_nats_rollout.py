"""A three-wave rollout through the NATS channel makes the same gate decisions, tick by tick, as
through Git (the in-memory stand-in for status refs every site reads), for a good version and for
a bad one the pilot wave fails: three in-process agents on fakes, their records over a real
nats-server. The audit trail in Git gets a commit only on state changes: counted against today's
one push per record."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.agent.nats_status import NatsStatusChannel
from reconciler.devtools.fakes import MemorySource, MemoryStatus, fake_site, fleet_files
from reconciler.devtools.githttp import init_bare_repo
from reconciler.devtools.natsserver import NatsServer
from reconciler.errors import Stalled
from reconciler.gitdoor.source import GitSource
from reconciler.settings import NatsSettings
from reconciler.status.gitref import StatusRefs
from reconciler.status.nats_channel import NatsChannel

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SITES = {"store-1": "pilot", "store-2": "early", "store-3": "late"}
ROLLOUT = {"rollout": {"waves": [{"name": ring, "selector": {"matchLabels": {"ring": ring}}} for ring in SITES.values()],
                       "gate": {"minHealthyRatio": 1.0, "bakeTime": "2m", "progressDeadline": "1h"},
                       "abort": {"failureThreshold": 0.3, "minExecuted": 1}}}
TICKS = 12


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def fleet(version: str) -> dict[str, str]:
    files = fleet_files(version, **ROLLOUT)
    for site, ring in SITES.items():
        files[f"sites/{site}.yaml"] = json.dumps({"apiVersion": "reconciler/v1", "kind": "Site", "metadata": {
            "name": site, "labels": {"tier": "store", "ring": ring}}})
    return files


def roll_out(tmp_path, channels: dict[str, object], settle) -> list[tuple]:
    """1.1.0 to every wave, then 1.2.0, which fails validation at the pilot: each tick, every site
    reconciles once, in wave order; the trace is what each site's record says after each tick."""
    clock, source = Clock(), MemorySource()
    sites = {name: fake_site(tmp_path / name, clock, name, source=source) for name in SITES}
    for name, site in sites.items():
        site.agent.status = channels[name]
        site.vetting.invalid["1.2.0"] = Stalled("ValidationFailed", "the test cases fail") if name == "store-1" else None
        site.vetting.invalid = {v: e for v, e in site.vetting.invalid.items() if e is not None}
        site.agent.start(clock.now)
    trace = []
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        source.commit(fleet(version))
        for tick in range(TICKS):
            for name, site in sites.items():
                result = site.agent.reconcile_once()
                if result.record is not None:
                    settle(result.record)
                deployment = site.agent.last_record.deployments["d"]
                trace.append((version, tick, name, deployment.state, deployment.activeVersion, deployment.reason))
            clock.now += timedelta(minutes=1)
    for site in sites.values():
        site.agent.stop()
    return trace


@pytest.fixture
def server(tmp_path):
    with NatsServer(tmp_path / "nats") as running:
        yield running


def test_the_nats_channel_makes_the_same_gate_decisions_as_git_and_audits_state_changes_only(tmp_path, server):
    shared = MemoryStatus()  # Git mode: every site reads every other site's newest record
    by_git = roll_out(tmp_path / "git", dict.fromkeys(SITES, shared), settle=lambda record: None)
    git_pushes = len(shared.published)

    init_bare_repo(tmp_path / "srv", "status")
    settings = NatsSettings(servers=[server.url], timeout=5)
    observer = NatsChannel(settings)
    audits = {name: StatusRefs(GitSource(str(tmp_path / "srv" / "status.git"), "main", tmp_path / "audit" / name))
              for name in SITES}
    channels = {name: NatsStatusChannel(NatsChannel(settings, name), audits[name]) for name in SITES}
    try:
        def settle(record):  # what a site said is in every site's watched view before the next site reconciles
            _eventually(lambda: all(record.same_as(_view(c).get(record.site)) for c in channels.values()))

        by_nats = roll_out(tmp_path / "nats", channels, settle)
        history = observer.records()
        audit_commits = sum(len(audits[name].history(name)) for name in SITES)
    finally:
        observer.close()
        for channel in channels.values():
            channel.close()

    assert by_nats == by_git
    final = by_git[-len(SITES):]
    assert [(row[3], row[4]) for row in final] == [("aborted", "1.1.0")] * 3  # 1.2.0 never replaced 1.1.0
    serving = [min(tick for v, tick, name, _, active, _ in by_git if v == "1.1.0" and name == site and active == "1.1.0")
               for site in SITES]
    assert serving == sorted(serving) and len(set(serving)) == 3  # wave after wave, each after the bake
    assert set(history) == set(SITES)
    assert 0 < audit_commits < git_pushes  # the audit trail skips records that changed only their message
    print(f"\nstatus records published: {git_pushes} (Git mode: one push each); audit commits in NATS mode: {audit_commits}")


def _view(channel: NatsStatusChannel):
    return channel.nats.records()


def _eventually(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the record did not reach every site in time"
        time.sleep(0.01)
