"""A three-wave rollout through the NATS channel makes the same gate decisions, tick by tick, as
through Git (the in-memory stand-in for status refs every site reads), for a good version and for
a bad one the pilot wave fails: three in-process agents on fakes, their records over a real
nats-server, the gates reading the shard summaries in the summaries bucket. The audit trail in Git
gets a commit only on state changes, counted against Git mode's one push per record, and they wait
in each site's cache until one push at shutdown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.agent.nats_status import NatsStatusChannel
from reconciler.devtools.fakes import MemorySource, MemoryStatus, fake_site, fleet_files
from reconciler.devtools.githttp import init_bare_repo, run_git
from reconciler.devtools.natsserver import NatsServer
from reconciler.errors import Stalled
from reconciler.gitdoor.source import GitSource
from reconciler.settings import NatsSettings
from reconciler.status.gitref import StatusRefs
from reconciler.status.nats_channel import NatsChannel
from reconciler.status.nats_summaries import NatsSummaries

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
    status_repo = str(tmp_path / "srv" / "status.git")
    channels = {}
    for name in SITES:
        nats = NatsChannel(settings, name)
        audit = StatusRefs(GitSource(status_repo, "main", tmp_path / "audit" / name))
        # no agent loop here: the audit commits wait for the push at shutdown (close)
        channels[name] = NatsStatusChannel(nats, NatsSummaries(nats), audit, audit_spread=3600)
    try:
        # A summary is written (compare-and-swap) before publish returns and read by direct get:
        # nothing to wait for. What is pushed to Git meanwhile: nothing, until the sites stop.
        pushed_during = []
        by_nats = roll_out(tmp_path / "nats", channels,
                           settle=lambda record: pushed_during.append(run_git(status_repo, "for-each-ref").strip()))
        history = observer.records()
    finally:
        observer.close()
        for channel in channels.values():
            channel.close()
    audits = {name: StatusRefs(GitSource(status_repo, "main", tmp_path / "auditor" / name)) for name in SITES}
    audit_commits = sum(len(audit.history(name)) for name, audit in audits.items())
    for audit in audits.values():
        audit.close()

    assert by_nats == by_git
    final = by_git[-len(SITES):]
    assert [(row[3], row[4]) for row in final] == [("aborted", "1.1.0")] * 3  # 1.2.0 never replaced 1.1.0
    serving = [min(tick for v, tick, name, _, active, _ in by_git if v == "1.1.0" and name == site and active == "1.1.0")
               for site in SITES]
    assert serving == sorted(serving) and len(set(serving)) == 3  # wave after wave, each after the bake
    assert set(history) == set(SITES)
    assert 0 < audit_commits < git_pushes  # the audit trail skips records that changed only their message
    assert pushed_during and set(pushed_during) == {""}  # the audit commits waited for the push at shutdown
    print(f"\nstatus records published: {git_pushes} (Git mode: one push each); audit commits in NATS mode: {audit_commits}")
