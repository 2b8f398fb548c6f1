"""The agent's reconcile steps (observe, verify history, load, plan, apply) and its one
summarise-and-publish, against in-memory collaborators (devtools/fakes.py): no git, no HTTP,
no onnxruntime. The integration tests run the same agent against the real doors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from reconciler.agent.apply import Outcome
from reconciler.agent.summary import outcome_status
from reconciler.delivery.plan import Action
from reconciler.devtools.fakes import FakeSite, fake_site, fleet_files
from reconciler.errors import Cancelled, Stalled, Transient

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
FAILING_CANARY = [{"setWeight": 50}, {"analysis": {"window": "1m", "minRequests": 10, "maxErrorRate": 0.1,
                                                   "maxWait": "3m", "onMaxWait": "fail"}}]
ONE_WAVE = {"rollout": {"waves": [{"name": "all", "percent": 100}]}}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def site(tmp_path, clock):
    site = fake_site(tmp_path / "state", clock)
    site.source.commit(fleet_files("1.0.0"))
    site.agent.start()
    yield site
    site.agent.stop()


def test_a_new_commit_is_applied_and_reported_once(site: FakeSite):
    result = site.agent.reconcile_once()
    assert result.error is None and not result.noop
    assert (result.record.state, result.record.reason) == ("success", "Converged")
    assert result.record.observedCommit == result.record.appliedCommit == site.source.head
    assert result.record.deployments["d"].activeVersion == "1.0.0" and site.runtime.active == {"d": "1.0.0"}
    assert [record for record, _ in site.status.published] == [result.record]
    assert site.runtime.flags is not None  # the runtime evaluates the flags the plan evaluated


def test_an_unchanged_head_is_a_noop_that_writes_nothing(site: FakeSite, clock: Clock):
    site.agent.reconcile_once()
    clock.now += timedelta(minutes=1)
    again = site.agent.reconcile_once()
    assert again.noop and again.record is None and len(site.status.published) == 1


def test_an_unreachable_remote_reports_error_and_keeps_the_deployments_picture(site: FakeSite, clock: Clock):
    first = site.agent.reconcile_once()
    site.source.failing = Transient("SourceUnreachable", "connection refused")
    clock.now += timedelta(minutes=11)  # past staleAfter (10m) since the last contact
    result = site.agent.reconcile_once()
    assert result.retry_soon and (result.record.state, result.record.reason) == ("error", "SourceUnreachable")
    assert result.record.stale and "no contact with the fleet repo since 2026-03-02 10:00:00Z" in result.record.message
    assert result.record.deployments == first.record.deployments
    assert site.runtime.active == {"d": "1.0.0"}  # keeps serving


def test_a_rewritten_history_stalls_until_an_operator_accepts_it(tmp_path, clock: Clock):
    site = fake_site(tmp_path / "state", clock)
    site.source.commit(fleet_files("1.0.0"))
    site.agent.start()
    site.agent.reconcile_once()
    forced = site.source.commit(fleet_files("1.1.0"), parent=None)
    refused = site.agent.reconcile_once()
    assert isinstance(refused.error, Stalled) and refused.error.reason == "HistoryRewritten"
    assert f"--accept-history {forced}" in refused.error.message
    assert site.agent.reconciled_head == forced and site.agent.reconcile_once().noop  # waits for a new commit
    assert site.runtime.active == {"d": "1.0.0"}
    site.agent.stop()

    accepting = fake_site(tmp_path / "state", clock, source=site.source, acceptHistory=forced)
    accepting.agent.start()
    assert accepting.agent.reconcile_once().record.state == "success" and accepting.runtime.active == {"d": "1.1.0"}
    accepting.agent.stop()


def test_invalid_manifests_are_refused_with_their_findings(site: FakeSite):
    site.agent.reconcile_once()
    files = fleet_files("1.1.0")
    files["deployments/d.yaml"] = files["deployments/d.yaml"].replace('"model": "m"', '"model": "m", "colour": 1')
    site.source.commit(files)
    result = site.agent.reconcile_once()
    assert (result.record.state, result.error.reason) == ("error", "InvalidManifests")
    assert "deployments/d.yaml" in result.error.message and "colour" in result.error.message
    assert site.runtime.active == {"d": "1.0.0"}


def test_what_the_plan_cannot_resolve_is_the_deployments_error(site: FakeSite):
    site.agent.reconcile_once()
    site.source.commit(fleet_files("9.9.9"))
    result = site.agent.reconcile_once()
    status = result.record.deployments["d"]
    assert result.error is None and (status.state, status.reason, status.failureKind) == ("error", "VersionNotFound", "site")
    assert result.record.appliedCommit != site.source.head


def test_a_failed_canary_fails_the_version_and_leaves_the_commit_unapplied(site: FakeSite, clock: Clock):
    site.agent.reconcile_once()
    site.source.commit(fleet_files("1.1.0", canary=FAILING_CANARY))
    assert site.agent.reconcile_once().record.state == "progressing"
    clock.now += timedelta(minutes=4)
    site.source.commit(fleet_files("1.1.0", canary=FAILING_CANARY, rollbackWindow="1h"))  # a new commit: plan again
    result = site.agent.reconcile_once()
    status = result.record.deployments["d"]
    assert (result.record.state, result.record.reason) == ("failure", "InsufficientTraffic")
    assert (status.state, status.failureKind, status.activeVersion) == ("failure", "version", "1.0.0")
    assert status.message.startswith("m 1.1.0: step 2/2:")
    assert result.record.appliedCommit != site.source.head and site.runtime.active == {"d": "1.0.0"}


def test_a_canary_without_a_rollout_is_judged_as_time_passes_with_no_new_commit(site: FakeSite, clock: Clock):
    site.agent.reconcile_once()
    site.source.commit(fleet_files("1.1.0", canary=FAILING_CANARY))
    assert site.agent.reconcile_once().record.state == "progressing"
    clock.now += timedelta(minutes=4)
    result = site.agent.reconcile_once()
    assert not result.noop and result.record.reason == "InsufficientTraffic"
    assert site.runtime.active == {"d": "1.0.0"}


@pytest.mark.parametrize("reason", ["ErrorRateTooHigh", "LatencyTooHigh", "DisagreesWithStable", "InsufficientTraffic"])
def test_a_failed_canary_returned_as_an_outcome_reads_as_it_did_when_raised(reason):
    action = Action("canary", "d", "m", "1.0.0", None, "CanaryInProgress", "")
    message = "m 1.1.0: step 2/2: the stable version takes all traffic"
    raised = outcome_status(Outcome(action, error=Stalled(reason, message)))
    returned = outcome_status(Outcome(action, state="failure", reason=reason, message=message))
    assert returned == raised == ("failure", reason, message, "version")


def test_a_status_channel_that_refuses_the_record_fails_the_reconcile_and_it_is_tried_again(site: FakeSite):
    site.status.failing = Transient("StatusPushFailed", "the remote said no")
    result = site.agent.reconcile_once()
    assert result.retry_soon and result.error.reason == "StatusPushFailed" and result.record.state == "error"
    assert len(site.status.refused) == 1 and site.status.published == []
    site.status.failing = None
    retried = site.agent.reconcile_once()  # the head is not settled: the same commit is reconciled again
    assert retried.record.state == "success" and len(site.status.published) == 1


def test_a_stop_reports_nothing(site: FakeSite):
    site.applier.stop.set(reason="SIGTERM")
    result = site.agent.reconcile_once()
    assert isinstance(result.error, Cancelled) and result.record is None and site.status.published == []


def test_wave_statuses_are_posted_on_success_and_on_errors_after_the_fleet_was_read(tmp_path, clock: Clock):
    site = fake_site(tmp_path / "state", clock)
    site.status.mirrors_waves = True
    site.source.commit(fleet_files("1.0.0", **ONE_WAVE))
    site.agent.start()
    ok = site.agent.reconcile_once()
    assert ok.record.deployments["d"].wave == "all"
    assert [w.context for w in site.status.published[-1][1]] == ["reconciler/d/wave-all"]
    site.runtime.failing["expect"] = Transient("RuntimeNotServing", "the server is gone")
    site.source.commit(fleet_files("1.1.0", **ONE_WAVE))
    failed = site.agent.reconcile_once()
    assert failed.record.state == "error"
    record, waves = site.status.published[-1]
    assert record == failed.record and [w.context for w in waves] == ["reconciler/d/wave-all"]
    site.agent.stop()


# Every path through a reconcile and how many records it publishes: one, or none when the
# reconcile found nothing new or was stopped.
PATHS = {
    "applied": (lambda s: None, 1),
    "unchanged": (lambda s: s.agent.reconcile_once(), 0),
    "remote unreachable": (lambda s: setattr(s.source, "failing", Transient("SourceUnreachable", "down")), 1),
    "history rewritten": (lambda s: (s.agent.reconcile_once(), s.source.commit(fleet_files("1.1.0"), parent=None)), 1),
    "invalid manifests": (lambda s: s.source.commit({**fleet_files(), "fleet.yaml": "kind: [unclosed"}), 1),
    "unplannable": (lambda s: s.source.commit(fleet_files("9.9.9")), 1),
    "vetting refused": (lambda s: s.vetting.invalid.update({"1.0.0": Stalled("ValidationFailed", "no")}), 1),
    "runtime gone": (lambda s: s.runtime.failing.update({"expect": Transient("RuntimeNotServing", "gone")}), 1),
    "stopped": (lambda s: s.applier.stop.set(), 0),
}


@pytest.mark.parametrize("path", PATHS)
def test_every_path_publishes_at_most_one_record(site: FakeSite, path):
    prepare, expected = PATHS[path]
    prepare(site)
    before = len(site.status.published)
    site.agent.reconcile_once()
    assert len(site.status.published) - before == expected


def test_a_site_the_fleet_does_not_name_reports_its_error_but_writes_no_status(tmp_path, clock: Clock):
    site = fake_site(tmp_path / "state", clock)
    site.source.commit(fleet_files("1.0.0", site="store-2"))  # the fleet names store-2; this agent is store-1
    site.agent.start()
    try:
        result = site.agent.reconcile_once()
    finally:
        site.agent.stop()
    assert result.record.reason == "SiteNotInFleet" and "did you mean 'store-2'" in result.record.message
    assert site.status.published == [] and site.runtime.active == {}


def test_a_canary_step_is_logged_with_its_traffic_split(site: FakeSite, caplog):
    site.agent.reconcile_once()
    site.source.commit(fleet_files("1.1.0", canary=FAILING_CANARY))
    with caplog.at_level("INFO", logger="reconciler"):
        site.agent.reconcile_once()
    line = next(r.getMessage() for r in caplog.records if " canary d " in r.getMessage() or " deploy d " in r.getMessage())
    assert "(traffic 1.0.0 50%, 1.1.0 50%)" in line, line


@pytest.mark.parametrize("error", [
    Stalled("ArtifactNotFound", "404: pushed to the registry after the merge"),
    Stalled("ArtifactAuthMissing", "MODELS_TOKEN is not set"),
    Stalled("NoTrustedKeys", "no key in trustKeys"),
])
def test_a_site_condition_is_tried_again_without_a_new_commit_backing_off(tmp_path, clock: Clock, error):
    """A model pushed to its registry after the merge, a token set after the start: the site must not
    wait for the next commit to notice. Version evidence (below) waits: the same bytes fail the same way."""
    site = fake_site(tmp_path / "state", clock, interval=timedelta(seconds=30))
    site.vetting.refused["1.0.0"] = error
    site.source.commit(fleet_files("1.0.0"))
    site.agent.start()
    failed = site.agent.reconcile_once()
    assert failed.record.deployments["d"].failureKind == "site"

    tried_at = []
    for _ in range(40):  # 20 minutes of 30 s ticks, the same head throughout
        clock.now += timedelta(seconds=30)
        if not site.agent.reconcile_once().noop:
            tried_at.append(clock.now - T0)
    gaps = [later - earlier for earlier, later in pairwise([timedelta(0), *tried_at])]
    assert len(tried_at) >= 4 and gaps == sorted(gaps) and gaps[0] <= timedelta(minutes=1) and gaps[-1] <= timedelta(minutes=10)

    del site.vetting.refused["1.0.0"]  # the artifact arrived
    while (result := site.agent.reconcile_once()).noop:
        clock.now += timedelta(seconds=30)
    assert result.record.deployments["d"].activeVersion == "1.0.0"
    site.agent.stop()


def test_version_evidence_waits_for_a_change(tmp_path, clock: Clock):
    site = fake_site(tmp_path / "state", clock, interval=timedelta(seconds=30))
    site.vetting.invalid["1.0.0"] = Stalled("ValidationFailed", "case 1: got 3, expected 4")
    site.source.commit(fleet_files("1.0.0"))
    site.agent.start()
    assert site.agent.reconcile_once().record.deployments["d"].failureKind == "version"
    for _ in range(40):
        clock.now += timedelta(seconds=30)
        assert site.agent.reconcile_once().noop
    site.agent.stop()
